"""Finding image files: discovery under a root (pipes, link loops and lookalike's own exports left out), labels
from folders, reading bytes once and hashing them for change detection."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lookalike.config import folder_label
from lookalike.errors import ImageError, LookalikeError
from lookalike.io import written_by_lookalike

HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".hif"})


"""What iPhones (since iOS 11) and many Android phones save: HEVC stills in a HEIF container, through pillow-heif."""


AVIF_EXTENSIONS = frozenset({".avif"})


"""AV1 stills in a HEIF container, through Pillow's own AVIF plugin (or pillow-avif-plugin on an older Pillow)."""


RAW_EXTENSIONS = frozenset(
    {".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf", ".orf", ".rw2", ".rwl", ".pef"}
    | {".srw", ".x3f", ".3fr", ".fff", ".iiq", ".erf", ".kdc", ".dcr", ".mrw", ".mos", ".mef"}
)


"""Camera RAW files LibRaw decodes (through rawpy); many are TIFF inside, so the extension decides, not Pillow."""


IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"} | HEIF_EXTENSIONS | AVIF_EXTENSIONS | RAW_EXTENSIONS
)


"""The one set of extensions discovery takes as images (any case); every other file is counted as ignored."""


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


_KINDS = {
    stat.S_IFIFO: "named pipe",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFDIR: "folder",
}


def _not_regular(mode: int) -> str | None:
    """Why a file of this mode must not be opened (a pipe's read blocks until a writer comes, a device's never
    ends), or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return f"not a regular file ({_KINDS.get(stat.S_IFMT(mode), 'special file')})"


def _stat_error(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    if exc.errno == errno.ENOENT:
        return "dangling symbolic link (its target is missing)" if path.is_symlink() else "cannot read (no such file)"
    return f"cannot read ({exc.strerror or exc})"


def usable(path: str | os.PathLike[str]) -> tuple[os.stat_result | None, str | None]:
    """``(stat, None)`` for a regular file (through symbolic links), else ``(None, why)``; never opens the file."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        return None, _stat_error(path, exc)
    reason = _not_regular(st.st_mode)
    return (None, reason) if reason else (st, None)


@dataclass
class Discovery:
    """Everything a walk of a photo folder saw, so a run can account for each entry.

    ``files`` are regular image files (with ``stats``: size, mtime_ns), ``skipped`` image-named entries that are
    not (dangling links, pipes, loops: never opened), ``ignored`` the other files counted by extension, and
    ``left_out`` folders lookalike wrote itself (exports, reports, index folders), which hold copies, not photos.
    """

    root: Path
    files: list[Path] = field(default_factory=list)
    stats: dict[Path, tuple[int, int]] = field(default_factory=dict)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    ignored: Counter[str] = field(default_factory=Counter)
    left_out: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def seen(self) -> int:
        """Image-named entries found: usable files plus skipped ones."""
        return len(self.files) + len(self.skipped)


def discover(root: str | os.PathLike[str], *, exclude: Sequence[str | os.PathLike[str]] = ()) -> Discovery:
    """Walk ``root`` the one way every command does (index, evaluate, train, the Ray engine).

    Hidden folders are not entered (the index lives in ``.lookalike``), nor symbolic links to folders (no loops),
    nor folders in ``exclude`` or written by lookalike (:func:`lookalike.io.written_by_lookalike`). Every image-named
    entry is ``stat``-ed, never opened: only regular files are returned. Sorted by path.
    """
    root = Path(root)
    found = Discovery(root)
    if not root.exists() and not root.is_symlink():
        raise LookalikeError(f"folder not found: {root}")
    if not root.is_dir():
        st, reason = usable(root)
        if not is_image_path(root):
            found.ignored[root.suffix.lower() or "(no extension)"] += 1
        elif st is None:
            found.skipped.append((root, reason or "unusable"))
        else:
            found.files.append(root)
            found.stats[root] = (st.st_size, st.st_mtime_ns)
        return found
    skip = {Path(p).resolve() for p in exclude}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        keep = []
        for d in sorted(dirnames):
            if d.startswith("."):
                continue
            sub = here / d
            why = "this index's folder" if skip and sub.resolve() in skip else written_by_lookalike(sub)
            if why:
                found.left_out.append((sub, why))
            else:
                keep.append(d)
        dirnames[:] = keep
        for name in filenames:
            if name.startswith("."):
                continue
            p = here / name
            if not is_image_path(p):
                found.ignored[p.suffix.lower() or "(no extension)"] += 1
                continue
            st, reason = usable(p)
            if st is None:
                found.skipped.append((p, reason or "unusable"))
            else:
                found.files.append(p)
                found.stats[p] = (st.st_size, st.st_mtime_ns)
    found.files.sort()
    found.skipped.sort()
    found.left_out.sort()
    return found


def find_images(root: str | os.PathLike[str], *, exclude: Sequence[str | os.PathLike[str]] = ()) -> list[Path]:
    """The regular image files below ``root``, sorted (:func:`discover` without the accounting)."""
    return discover(root, exclude=exclude).files


def labelled_files(root: str | os.PathLike[str], *, what: str = "images") -> list[tuple[Path, str]]:
    """(file, class) for every image in ``root/<class>/...``, by the one label rule (:func:`lookalike.config.
    folder_label`: the first folder under the root, nested folders included); files directly in ``root`` have no
    class and are left out. ``what`` names the folder's role in the error when there is nothing labelled."""
    root = Path(root)
    if not root.is_dir():
        raise LookalikeError(f"not a folder: {root}")
    out = []
    found = discover(root)
    # entries that are no usable files go along so the caller's reader reports them (read_file refuses them unopened)
    for p in sorted([*found.files, *(q for q, _ in found.skipped)]):
        label = folder_label(p.relative_to(root).as_posix())
        if label is not None:
            out.append((p, label))
    if not out:
        raise LookalikeError(
            f"no labelled {what} in {root}: put them in one sub-folder per class (e.g. {root}/Kitchen/a.jpg)"
        )
    return out


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def read_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a regular file; anything else (a pipe, a device, a dangling link) is refused without being
    opened, so reading cannot block forever. The open is non-blocking and re-checked, in case the file was swapped
    for a pipe after the check."""
    _, reason = usable(path)
    if reason:
        raise ImageError(f"{path}: {reason}")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ImageError(f"{path}: {_stat_error(Path(path), exc)}") from None
    with os.fdopen(fd, "rb") as fh:
        reason = _not_regular(os.fstat(fd).st_mode)
        if reason:
            raise ImageError(f"{path}: {reason}")
        try:
            return fh.read()
        except OSError as exc:
            raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None


def bundled_photos() -> dict[str, Path]:
    """Real photos that lookalike's dependencies ship (scikit-learn: a temple, a flower; matplotlib: a portrait, a
    product shot): the sample data of the demo and tests, and the calibration set of last resort for int8."""
    import matplotlib
    import sklearn

    sk = Path(sklearn.__file__).parent / "datasets" / "images"
    mpl = Path(matplotlib.get_data_path()) / "sample_data"
    found = {
        "temple": sk / "china.jpg",
        "flower": sk / "flower.jpg",
        "portrait": mpl / "grace_hopper.jpg",
        "package": mpl / "Minduka_Present_Blue_Pack.png",
    }
    return {k: v for k, v in found.items() if v.is_file()}


def iter_chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
