"""Duplicates as photographers have them: which file format is the camera original, RAW+JPEG siblings, edited
copies, reference folders and the part of a collection dedupe may act on, carried by one settings object.

- **Formats**: a camera original (RAW, HEIC/HEIF, AVIF) beats a JPEG/PNG/WebP conversion of it before pixels and
  file size are compared (a phone's JPEG export is typically twice the size of its HEIC: on size alone the export
  won). The order is ``DedupeSettings.prefer_formats``; formats it does not name rank after all it names.
- **Siblings**: one RAW and one developed file (JPEG, HEIC, PNG, TIFF...) of one shot: same folder and same stem
  (``IMG_0001.CR2`` + ``IMG_0001.JPG``), or the same frame counter in the name and the same capture time to the second.
  Kept on purpose: by default (``raw_jpeg="pairs"``) never a duplicate pair, and a plan never removes one of a
  sibling pair while keeping the other.
- **Edited copies**: the EXIF ``Software`` tag names an editor (Lightroom, Photoshop, GIMP, ...); the rule ``keep``
  says which wins (``original``/``best``: the unedited copy; ``edited``: the edit).
- **Reference folders** (czkawka's): files under them are never removed; a group made only of them is reported,
  not acted on. ``prefer``: folders whose copies win the keeper choice, in order. ``path``: a glob (the search
  filters' rules) limiting which photos dedupe looks at.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image

from lookalike.errors import ConfigError
from lookalike.images import AVIF_EXTENSIONS, HEIF_EXTENSIONS, RAW_EXTENSIONS

FORMATS = ("raw", "heic", "avif", "png", "jpeg", "webp", "tiff")
DEFAULT_PREFER_FORMATS = ("raw", "heic", "avif", "png", "jpeg", "webp")
CAMERA_ORIGINALS = frozenset({"raw", "heic", "avif"})
RAW_JPEG_MODES = ("pairs", "duplicates")
_SUFFIX = {".jpg": "jpeg", ".jpeg": "jpeg", ".jpe": "jpeg", ".png": "png", ".webp": "webp", ".tif": "tiff",
           ".tiff": "tiff"}  # fmt: skip
_SOFTWARE = 0x0131
EDITORS = (
    "lightroom", "photoshop", "gimp", "snapseed", "affinity", "capture one", "darktable", "rawtherapee", "luminar",
    "pixelmator", "acdsee", "dxo", "on1", "paint.net", "photoscape", "picasa", "photos", "vsco", "polarr",
)  # fmt: skip
_COUNTER = re.compile(r"(\d{3,})")


def format_of(name: str) -> str:
    """The format family of a file from its name: raw, heic, avif, png, jpeg, webp, tiff, or other."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in RAW_EXTENSIONS:
        return "raw"
    if suffix in HEIF_EXTENSIONS:
        return "heic"
    if suffix in AVIF_EXTENSIONS:
        return "avif"
    return _SUFFIX.get(suffix, "other")


def editor_of(software: str | None) -> str | None:
    """The editor an EXIF ``Software`` value names (None for a camera's firmware or nothing)."""
    if not software:
        return None
    low = software.lower()
    return software.strip() if any(e in low for e in EDITORS) else None


def header_tags(data: bytes) -> tuple[str | None, str | None]:
    """(camera make + model, Software) from a file's EXIF header (TIFF-based RAWs included); (None, None) when
    unreadable. Reads the header only."""
    try:
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            exif = Image.Exif()
            exif.load(data[: 1 << 20])
        else:
            exif = Image.open(io.BytesIO(data)).getexif()
        camera = " ".join(str(exif.get(t) or "").strip("\x00 ") for t in (0x010F, 0x0110)).strip() or None
        software = str(exif.get(_SOFTWARE) or "").strip("\x00 ") or None
        return camera, software
    except Exception:  # malformed EXIF: nothing known, never an error
        return None, None


def sibling_key(name: str) -> tuple[str, str]:
    """(folder, stem) in lower case: RAW+JPEG siblings share it."""
    p = PurePosixPath(name)
    return str(p.parent).lower(), p.stem.lower()


def frame_counter(name: str) -> str | None:
    """The last run of ≥ 3 digits in a file's stem (IMG_0001 → "0001"), a camera's frame counter."""
    found = _COUNTER.findall(PurePosixPath(name).stem)
    return found[-1].lstrip("0") or "0" if found else None


def are_siblings(
    a: str,
    b: str,
    *,
    time_a: str | None = None,
    time_b: str | None = None,
    camera_a: str | None = None,
    camera_b: str | None = None,
) -> bool:
    """Whether two files are one shot in two formats: exactly one is a RAW; same folder and stem, or the same frame
    counter and capture time to the second (and, when both are known, the same camera)."""
    fa, fb = format_of(a), format_of(b)
    if (fa == "raw") == (fb == "raw") or "other" in (fa, fb):
        return False
    if sibling_key(a) == sibling_key(b):
        return True
    if not time_a or time_a[:19] != (time_b or "")[:19]:
        return False
    if camera_a and camera_b and camera_a != camera_b:
        return False
    counter = frame_counter(a)
    return counter is not None and counter == frame_counter(b)


def siblings_by_name(names: Sequence[str]) -> dict[int, int]:
    """Row → its sibling's row, for RAWs and developed files that share a folder and stem (one pair per key; a stem
    with several developed files pairs the RAW with the first by ``prefer`` order of formats)."""
    by_key: dict[tuple[str, str], list[int]] = {}
    for i, n in enumerate(names):
        if format_of(n) != "other":
            by_key.setdefault(sibling_key(n), []).append(i)
    out: dict[int, int] = {}
    for rows in by_key.values():
        if len(rows) < 2:
            continue
        raws = [i for i in rows if format_of(names[i]) == "raw"]
        developed = sorted((i for i in rows if format_of(names[i]) != "raw"), key=lambda i: names[i])
        if len(raws) == 1 and developed:
            out[raws[0]], out[developed[0]] = developed[0], raws[0]
    return out


@dataclass(frozen=True)
class DedupeSettings:
    """Where dedupe may act and how it chooses, from the CLI to the library in one piece; checks itself when made.

    ``prefer_formats``: format families best first (``FORMATS``); ``raw_jpeg``: ``pairs`` (a RAW and its developed
    sibling are one shot, never copies) or ``duplicates`` (treated as copies like any other); ``reference``: folders
    (absolute, or relative to the photo folder) whose files are never removed; ``prefer``: folders whose copies win
    the keeper choice, first given first; ``path``: a glob over names relative to the photo folder (``**`` crosses
    folders), the photos dedupe looks at (with those under a reference folder)."""

    prefer_formats: tuple[str, ...] = DEFAULT_PREFER_FORMATS
    raw_jpeg: str = "pairs"
    reference: tuple[str, ...] = ()
    prefer: tuple[str, ...] = ()
    path: str | None = None
    _rank: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fmts = tuple(f.strip().lower().replace("jpg", "jpeg").replace("heif", "heic") for f in self.prefer_formats)
        bad = [f for f in fmts if f not in FORMATS]
        if bad or len(set(fmts)) != len(fmts):
            raise ConfigError(
                f"prefer_formats: a comma list of {', '.join(FORMATS)}, each once; got {','.join(self.prefer_formats)}",
                setting="prefer_formats",
            )
        object.__setattr__(self, "prefer_formats", fmts)
        object.__setattr__(self, "_rank", {f: i for i, f in enumerate(fmts)})
        if self.raw_jpeg not in RAW_JPEG_MODES:
            raise ConfigError(f"raw_jpeg must be pairs or duplicates, got {self.raw_jpeg!r}", setting="raw_jpeg")
        if self.path is not None:
            from lookalike.filters import glob_regex

            glob_regex(self.path)

    @classmethod
    def parse(
        cls,
        *,
        prefer_formats: str | Sequence[str] | None = None,
        raw_jpeg: str = "pairs",
        reference: Sequence[str | Path] = (),
        prefer: Sequence[str | Path] = (),
        path: str | None = None,
    ) -> DedupeSettings:
        """From user input: ``prefer_formats`` a comma list or a sequence; empty strings mean unset."""
        fmts = prefer_formats.split(",") if isinstance(prefer_formats, str) else prefer_formats
        return cls(
            prefer_formats=tuple(fmts) if fmts else DEFAULT_PREFER_FORMATS, raw_jpeg=raw_jpeg,
            reference=tuple(str(r) for r in reference), prefer=tuple(str(p) for p in prefer),
            path=path.strip() if path and path.strip() else None,
        )  # fmt: skip

    def format_rank(self, name: str) -> int:
        """0 for the most preferred format; formats not listed share the rank after the last listed one."""
        return self._rank.get(format_of(name), len(self._rank))

    def folders(self, root: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(reference, prefer) as folder names relative to ``root`` ("" = the root itself), checked: each must be
        a folder inside the photo folder, and a reference folder cannot also be where ``path`` acts."""
        out = []
        for setting, given in (("reference", self.reference), ("prefer", self.prefer)):
            rel = []
            for d in given:
                p = Path(d).expanduser()
                p = (p if p.is_absolute() else root / p).resolve()
                try:
                    r = p.relative_to(root.resolve()).as_posix()
                except ValueError:
                    raise ConfigError(f"{setting} {d} is outside the photo folder {root}", setting=setting) from None
                if not p.is_dir():
                    raise ConfigError(f"{setting} {d} is not a folder", setting=setting)
                rel.append("" if r == "." else r)
            out.append(tuple(rel))
        reference, prefer = out
        if self.path is not None:
            from lookalike.filters import glob_regex

            regex = glob_regex(self.path)
            for r in reference:  # the glob acts on the reference folder only: it names it, or matches nothing else
                target = self.path.rstrip("/").removesuffix("/**").removesuffix("/*")
                inside = bool(regex.fullmatch(f"{r}/x.jpg") or regex.fullmatch(f"{r}/x/y.jpg"))
                if target == r or (inside and not regex.fullmatch("lookalike-elsewhere/x.jpg")):
                    raise ConfigError(
                        f"reference {r or '.'} is also the --path target {self.path}: a reference folder is never "
                        "acted on; give another folder as --path",
                        setting="reference",
                    )
        return reference, prefer

    def to_dict(self) -> dict[str, Any]:
        """The settings a plan records (only those that differ from the defaults)."""
        d: dict[str, Any] = {}
        if self.prefer_formats != DEFAULT_PREFER_FORMATS:
            d["prefer_formats"] = list(self.prefer_formats)
        if self.raw_jpeg != "pairs":
            d["raw_jpeg"] = self.raw_jpeg
        for k in ("reference", "prefer"):
            if getattr(self, k):
                d[k] = list(getattr(self, k))
        if self.path is not None:
            d["path"] = self.path
        return d


def under(name: str, folders: Sequence[str]) -> str | None:
    """The first of ``folders`` (relative, "" = root) that holds ``name``, else None."""
    for f in folders:
        if f == "" or name.startswith(f + "/"):
            return f
    return None
