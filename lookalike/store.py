"""The index folder: one Parquet table of image metadata and vectors, a JSON header, checkpoint parts.

Layout of an index folder (``PHOTOS_DIR/.lookalike`` by default)::

    meta.json        format version, photo root, model, pooling, resolution, vector size, label mode
    images.parquet   one row per indexed image: path (relative to the root), size, mtime_ns, hash, width, height,
                     label, exif_time, gps_lat, gps_lon, path_bytes (the exact bytes of a name that is not
                     UTF-8), vector (fixed-size list of float32, or float16 when meta "vectors" is "float16")
    ann.faiss        approximate-nearest-neighbour index for large indexes (meta "ann" says which, its recall and
                     which vectors it was built from); absent while exact search is used
    skipped.json     files that could not be used, with why (kept so unchanged bad files are not retried)
    parts/           checkpoints of a run in progress; merged into images.parquet when the run ends, and picked up
                     by the next run if this one was killed
    lock             held by the process updating the index
    features/        local features (SIFT keypoints) per image content hash, for geometric verification

Every file is written to a temporary name and renamed into place, so a reader (or a crash) sees the old state or
the new one, never half of either.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lookalike.aggregate import PCA_FILE, VOCAB_FILE
from lookalike.config import VECTOR_TYPES as _VECTOR_TYPE_NAMES
from lookalike.config import IndexConfig, folder_label
from lookalike.errors import IndexMissingError, LookalikeError
from lookalike.io import (
    INDEX_SIGNATURE,
    atomic_write,
    atomic_write_json,
    fsync_dir,
    name_bytes,
    name_from,
    now_iso,
    remove_stale_temps,
    shown,
)
from lookalike.models.quantize import INT8_FILE

FORMAT_VERSION = 1
INDEX_DIRNAME = ".lookalike"

# Every file an index folder may hold, in one table: its name, the module that writes it, and what it is. Writers
# take their names from here (the two that lower layers own are defined there and listed here), so a reader of
# this table knows the whole folder.
META_FILE, TABLE_FILE = INDEX_SIGNATURE  # "meta.json", "images.parquet": how discovery knows an index folder
SKIPPED_FILE = "skipped.json"
PARTS_DIR = "parts"
LOCK_FILE = "lock"
ANN_FILE = "ann.faiss"
HEAD_FILE = "head.json"
HEAD_WEIGHTS_FILE = "head.npz"
CLUSTERS_FILE = "clusters.json"
MAP_FILE = "map.npz"
THUMBNAILS_DIR = "thumbnails"
DECISIONS_FILE = "decisions.json"
JOURNALS_DIR = "journals"
REFERENCES_FILE = "references.json"
FEATURES_DIR = "features"
ORIENTATIONS_FILE = "orientations.npz"
UNIQUENESS_FILE = "uniqueness.npz"
INDEX_FILES: dict[str, tuple[str, str]] = {
    META_FILE: ("lookalike.store", "format, photo root, model, pooling, resolution, vector size, label rule"),
    TABLE_FILE: ("lookalike.store", "one row per image: path, size, mtime, hash, label, EXIF, vector"),
    SKIPPED_FILE: ("lookalike.store", "files that could not be used, with why"),
    PARTS_DIR: ("lookalike.store", "checkpoints of an unfinished run, merged when it ends"),
    LOCK_FILE: ("lookalike.store", "held by the process updating the index"),
    VOCAB_FILE: ("lookalike.aggregate", "the VLAD vocabulary"),
    PCA_FILE: ("lookalike.aggregate", "the PCA-whitening"),
    INT8_FILE: ("lookalike.models.quantize", "the int8 backbone the vectors came from (precision int8 only)"),
    ANN_FILE: ("lookalike.search", "the approximate search index, when one is used"),
    HEAD_FILE: ("lookalike.classify", "the fitted classifier: method, classes, metrics, fingerprint"),
    HEAD_WEIGHTS_FILE: ("lookalike.classify", "the fitted classifier's weights as plain arrays"),
    CLUSTERS_FILE: ("lookalike.cluster", "the last clustering"),
    MAP_FILE: ("lookalike.explore", "the 2-D map of all images (layout, method, vectors fingerprint, suspects)"),
    THUMBNAILS_DIR: ("lookalike.server", "the web page's thumbnail cache"),
    DECISIONS_FILE: ("lookalike.cluster", "duplicate decisions (not duplicates, keep all) by content hash"),
    JOURNALS_DIR: ("lookalike.cluster", "one journal per applied dedupe plan: each step, for resume and undo"),
    REFERENCES_FILE: ("lookalike.dedupe", "reference folders: dedupe never removes a file under them"),
    ORIENTATIONS_FILE: (
        "lookalike.cluster",
        "vectors of each image turned 90/180/270° and mirrored (dedupe --orientations)",
    ),
    UNIQUENESS_FILE: ("lookalike.uniqueness", "per-image uniqueness from kNN distances, with a vectors fingerprint"),
    FEATURES_DIR: (
        "lookalike.verify",
        "local features (RootSIFT) per image content hash, and the settings that made them",
    ),
}

META_FIELDS: list[tuple[str, pa.DataType]] = [
    ("path", pa.string()),
    ("size", pa.int64()),
    ("mtime_ns", pa.int64()),
    ("hash", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("label", pa.string()),
    ("exif_time", pa.string()),
    ("gps_lat", pa.float64()),
    ("gps_lon", pa.float64()),
    ("path_bytes", pa.binary()),
]
"""``path`` is the name relative to the root as text; a name that is not valid UTF-8 (old camera cards, archives)
has its exact bytes in ``path_bytes`` and its readable form, undecodable bytes as U+FFFD, in ``path`` (null
otherwise). Tables written before ``path_bytes`` existed read as if it were all null."""


VECTOR_TYPES = {name: getattr(pa, name)() for name in _VECTOR_TYPE_NAMES}


def schema(dim: int, vectors: str = "float32") -> pa.Schema:
    """The table schema; ``vectors="float16"`` halves the size of the vector column (meta ``"vectors"``)."""
    if vectors not in VECTOR_TYPES:
        raise LookalikeError(f"vectors must be float32 or float16, got {vectors!r}")
    return pa.schema([*META_FIELDS, ("vector", pa.list_(VECTOR_TYPES[vectors], dim))])


THREADED_READ_BYTES = 256 << 20
"""Tables smaller than this are decoded on the calling thread: starting Arrow's thread pool cost more than it saved
(a 2 MB table: 16 ms of CPU against 31-51 ms threaded; 14.5 MB: 0.10-0.20 s against 0.19-0.38 s, on two cores)."""


def read_parquet(path: str | os.PathLike[str]) -> pa.Table:
    """One Parquet file as a table. ``pq.read_table`` would import ``pyarrow.dataset`` and with it pandas (about
    0.9 s on two cores), which a ``lookalike search`` or ``info`` has no use for."""
    with pq.ParquetFile(path) as f:
        return f.read(use_threads=os.path.getsize(path) >= THREADED_READ_BYTES)


def atomic_write_table(path: Path, table: pa.Table) -> Path:
    """A Parquet table through the one :func:`lookalike.io.atomic_write` (zstd: vectors compress little, metadata a lot)."""
    return atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def vectors_to_arrow(vectors: np.ndarray) -> pa.FixedSizeListArray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


def _float_values(values: pa.Array) -> np.ndarray:
    """A primitive float array's values as numpy, read straight from its buffer: pyarrow's own ``to_numpy`` (and
    ``np.asarray``) import pandas, most of a second that opening an index for one search should not pay."""
    if values.null_count == 0 and pa.types.is_floating(values.type):
        dtype = np.dtype(values.type.to_pandas_dtype())
        return np.frombuffer(values.buffers()[1], dtype=dtype, count=len(values), offset=values.offset * dtype.itemsize)
    return values.to_numpy(zero_copy_only=False)


def arrow_to_vectors(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    # .values ignores a sliced chunk's offset, so slice it here (``flatten`` would, but imports pyarrow.compute)
    flats = [_float_values(c.values.slice(c.offset * dim, len(c) * dim)) for c in chunks if len(c)]
    if not flats:
        return np.zeros((0, dim), np.float32)
    return np.concatenate([np.asarray(f, dtype=np.float32) for f in flats]).reshape(-1, dim)


def make_table(rows: list[dict[str, Any]], vectors: np.ndarray, dim: int) -> pa.Table:
    """Rows of metadata (keys of META_FIELDS; ``path`` the exact name, whatever its bytes) plus their vectors -> a
    table in the index schema."""
    rows = [{**r, "path": shown(r["path"]), "path_bytes": name_bytes(r["path"])} for r in rows]
    columns = {name: pa.array([r.get(name) for r in rows], type=typ) for name, typ in META_FIELDS}
    if len(rows) == 0:
        vectors = np.zeros((0, dim), dtype=np.float32)
    columns["vector"] = vectors_to_arrow(vectors)
    return pa.table(columns, schema=schema(dim))


# --- what an update has to do ---------------------------------------------------------------------------------


@dataclass
class UpdatePlan:
    """What an indexing run does with each file it found, decided before any image is read.

    Names are paths relative to the photo root. ``known_hashes`` gives, for changed files that were indexed, the
    content hash on record: a file merely touched (same bytes) keeps its vector instead of being re-embedded.
    """

    keep: list[str] = field(default_factory=list)  # indexed, size and mtime unchanged
    resume: list[str] = field(default_factory=list)  # embedded by an interrupted run, unchanged since
    embed: list[str] = field(default_factory=list)  # new, changed, or a bad file that changed
    skip_again: list[str] = field(default_factory=list)  # failed before and unchanged: not retried
    removed: list[str] = field(default_factory=list)  # indexed but gone from disk
    known_hashes: dict[str, str] = field(default_factory=dict)


def plan_update(
    on_disk: Mapping[str, tuple[int, int]],
    indexed: Mapping[str, tuple[int, int, str]],
    resumable: Mapping[str, tuple[int, int]] | None = None,
    skipped: Mapping[str, tuple[int, int]] | None = None,
) -> UpdatePlan:
    """Which files to keep, resume, embed, skip again, and which index rows to drop.

    ``on_disk``: name -> (size, mtime_ns) of every image file found; ``indexed``: name -> (size, mtime_ns, hash) of
    the index's rows; ``resumable``: name -> (size, mtime_ns) of rows in checkpoint parts; ``skipped``: the same for
    files that could not be used last time. Size and mtime decide (cheap: no file is read); a pure function so the
    rules are tested without images.
    """
    resumable = resumable or {}
    skipped = skipped or {}
    plan = UpdatePlan()
    for name, stat in on_disk.items():
        if resumable.get(name) == stat:
            plan.resume.append(name)
            continue
        row = indexed.get(name)
        if row is not None:
            if row[:2] == stat:
                plan.keep.append(name)
                continue
            plan.known_hashes[name] = row[2]
        if skipped.get(name) == stat:
            plan.skip_again.append(name)
            continue
        plan.embed.append(name)
    plan.removed = [name for name in indexed if name not in on_disk]
    return plan


def names_of(table: pa.Table) -> list[str]:
    """The exact names (relative paths) of a table's rows: what is on disk, byte for byte."""
    text = table.column("path").to_pylist()
    if "path_bytes" not in table.column_names:
        return text
    return [name_from(t, r) for t, r in zip(text, table.column("path_bytes").to_pylist(), strict=True)]


def upgrade(table: pa.Table) -> pa.Table:
    """A table of an older index (no ``path_bytes`` column) in the current column order; others unchanged."""
    order = [name for name, _ in META_FIELDS] + ["vector"]
    if "path_bytes" in table.column_names or set(table.column_names) != set(order) - {"path_bytes"}:
        return table  # current, or not an index table at all (schema checks downstream refuse it)
    table = table.append_column(pa.field("path_bytes", pa.binary()), pa.nulls(table.num_rows, pa.binary()))
    return table.select(order)


def with_labels(table: pa.Table, rule: str) -> pa.Table:
    """``table`` with its label column derived from each path by the label rule (labels follow moves and a change
    of rule without re-embedding anything); a folder name that is not valid UTF-8 gives its readable form."""
    labels = [folder_label(p, rule) for p in names_of(table)]
    labels = pa.array([None if lab is None else shown(lab) for lab in labels], pa.string())
    return table.set_column(table.schema.get_field_index("label"), "label", labels)


MIXED_WAIT = 5.0
"""Seconds a reader waits for a header to match its table: a writer writes the two a few milliseconds apart; a
mismatch that lasts was left by a writer killed between them."""
COMMIT_KEY = b"lookalike.commit"


def stamped(table: pa.Table, commit: int) -> pa.Table:
    """``table`` carrying commit id ``commit`` in its schema metadata (written into the Parquet file)."""
    return table.replace_schema_metadata({**(table.schema.metadata or {}), COMMIT_KEY: str(commit).encode()})


def table_commit(table: pa.Table) -> int | None:
    """The commit id a table was written with (None: written before commit ids existed)."""
    value = (table.schema.metadata or {}).get(COMMIT_KEY)
    return None if value is None else int(value)


def read_meta(path: Path) -> dict[str, Any]:
    """The header of the index folder ``path``, checked for its format version."""
    meta_path = path / META_FILE
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise LookalikeError(f"{meta_path}: unreadable index header ({exc})") from None
    if meta.get("format") != FORMAT_VERSION:
        raise LookalikeError(
            f"{path}: index format {meta.get('format')} is not {FORMAT_VERSION}; rebuild with `lookalike index --rebuild`"
        )
    return meta


def _read_table(path: Path, meta: dict[str, Any]) -> pa.Table:
    table_path = path / TABLE_FILE
    if not table_path.is_file():
        dim = int(meta["dim"])
        return make_table([], np.zeros((0, dim), np.float32), dim)
    try:
        return read_parquet(table_path)
    except (OSError, pa.ArrowException) as exc:
        raise LookalikeError(f"{table_path}: unreadable ({exc}); rebuild with `lookalike index --rebuild`") from None


def commit_of(path: str | os.PathLike[str]) -> int:
    """The commit id the header of index folder ``path`` records now (cheap: the header only; 0 if none)."""
    return int(read_meta(Path(path)).get("commit", 0))


class Store:
    """An index folder on disk. Readers use :meth:`open`; one writer at a time holds :meth:`lock`."""

    def __init__(self, path: Path, meta: dict[str, Any], table: pa.Table, skipped: list[dict[str, Any]]) -> None:
        self.path = path
        self.meta = meta
        self.table = table
        self.skipped = skipped
        self._vectors: np.ndarray | None = None

    # --- opening -------------------------------------------------------------------------------------------

    @staticmethod
    def exists(path: str | os.PathLike[str]) -> bool:
        return (Path(path) / META_FILE).is_file()

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Store:
        """One committed state of the index: the header and the table of the same commit (a commit that lands
        while they are read is noticed by the table's stamp, and both are read again)."""
        path = Path(path)
        meta_path = path / META_FILE
        if not meta_path.is_file():
            hint = f" (found {path / INDEX_DIRNAME})" if (path / INDEX_DIRNAME / META_FILE).is_file() else ""
            raise IndexMissingError(f"no lookalike index at {path}{hint}; build one with `lookalike index PHOTOS_DIR`")
        deadline = time.monotonic() + MIXED_WAIT
        while True:
            meta = read_meta(path)
            table = _read_table(path, meta)
            stamp = table_commit(table)
            if stamp is None or stamp == meta.get("commit") or time.monotonic() > deadline:
                break  # one commit (or, past the deadline, a writer killed between its table and its header:
                # the next commit makes them one again; until then the table is read with the header there is)
            time.sleep(0.02)  # a writer is between its table and its header: read both again
        table = upgrade(table)
        dim = int(meta["dim"])
        width = getattr(table.schema.field("vector").type, "list_size", dim)
        if width != dim:  # never read vectors of one recipe under another's header (they would reshape silently)
            raise LookalikeError(
                f"{path / TABLE_FILE}: vectors of {width} numbers where the header says {dim}; the index was being "
                "rebuilt when it stopped: run the command again, or `lookalike index --rebuild`"
            )
        skipped: list[dict[str, Any]] = []
        if (path / SKIPPED_FILE).is_file():
            with contextlib.suppress(OSError, ValueError):
                skipped = json.loads((path / SKIPPED_FILE).read_text())
        return cls(path, meta, table, skipped)

    @classmethod
    def create(cls, path: str | os.PathLike[str], meta: dict[str, Any]) -> Store:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT_VERSION, "created": now_iso(), **meta}
        dim = int(meta["dim"])
        return cls(path, meta, make_table([], np.zeros((0, dim), np.float32), dim), [])

    # --- contents ------------------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def root(self) -> Path:
        """The photo folder; stored relative to the index so the two can move together."""
        root = Path(self.meta["root"])
        return root if root.is_absolute() else (self.path / root).resolve()

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def vector_type(self) -> str:
        """How vectors are stored: "float32" (default) or "float16" (half the disk and memory)."""
        return str(self.meta.get("vectors", "float32"))

    @property
    def vectors(self) -> np.ndarray:
        """All vectors as float32 (what search and the classifiers compute with), whatever the stored type."""
        if self._vectors is None:
            self._vectors = arrow_to_vectors(self.table.column("vector"), self.dim)
        return self._vectors

    def stored_vectors(self) -> np.ndarray:
        """The vectors in their stored type (float16 stays float16), for large indexes that must not double up."""
        column = self.table.column("vector")
        if self.vector_type == "float32":
            return self.vectors
        column = (
            column.combine_chunks() if column.num_chunks else pa.array([], type=schema(self.dim, "float16")[-1].type)
        )
        return column.values.to_numpy(zero_copy_only=False).reshape(-1, self.dim)

    def conform(self, table: pa.Table) -> pa.Table:
        """``table`` with its vector column in this index's stored type (checkpoints and old rows alike)."""
        target = schema(self.dim, self.vector_type)
        table = upgrade(table)
        return table if table.schema.equals(target) else table.cast(target)

    def names(self) -> list[str]:
        """The exact relative path of each row (see :func:`names_of`); ``column("path")`` is the readable form."""
        return names_of(self.table)

    def column(self, name: str) -> list[Any]:
        return self.table.column(name).to_pylist()

    def metadata(self) -> pa.Table:
        return self.table.drop_columns(["vector"])

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    # --- writing -------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive update lock; a second indexer on the same folder fails fast instead of corrupting it."""
        self.path.mkdir(parents=True, exist_ok=True)
        fh = open(self.path / LOCK_FILE, "a+")  # noqa: SIM115 - held for the whole update
        try:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LookalikeError(f"{self.path} is being updated by another lookalike process") from None
            for folder in (self.path, self.path / PARTS_DIR):  # what a killed writer left half-written
                remove_stale_temps(folder)
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()

    def write_part(self, table: pa.Table) -> Path:
        parts = self.path / PARTS_DIR
        parts.mkdir(parents=True, exist_ok=True)
        n = len(list(parts.glob("part-*.parquet")))
        target = parts / f"part-{n:06d}.parquet"
        while target.exists():
            n += 1
            target = parts / f"part-{n:06d}.parquet"
        atomic_write_table(target, self.conform(table))
        return target

    def read_parts(self) -> pa.Table | None:
        """Rows embedded by a run that did not finish (None if there are none or they do not fit this index)."""
        files = sorted((self.path / PARTS_DIR).glob("part-*.parquet"))
        tables = []
        for f in files:
            try:
                t = read_parquet(f)
            except (OSError, pa.ArrowException):
                continue  # a part is renamed into place only when complete; an unreadable one is garbage
            t = upgrade(t)
            if t.schema.equals(schema(self.dim)) or t.schema.equals(schema(self.dim, "float16")):
                tables.append(self.conform(t))
        return pa.concat_tables(tables) if tables else None

    def pending_parts(self) -> int:
        return len(list((self.path / PARTS_DIR).glob("part-*.parquet")))

    def discard_table(self) -> None:
        """Remove the stored table and skip list before a rebuild: their vectors are of the old recipe, and a rebuild
        killed after the new ``meta.json`` is written must open as an empty index of the new one, not as old vectors
        under a new header (found by bench/crashpoints.py on ``vocab fit``)."""
        for name in (TABLE_FILE, SKIPPED_FILE):
            (self.path / name).unlink(missing_ok=True)
        fsync_dir(self.path)

    def clear_parts(self) -> None:
        for f in (self.path / PARTS_DIR).glob("part-*.parquet"):
            f.unlink(missing_ok=True)

    @property
    def commit_id(self) -> int:
        """The generation of this state: 0 before the first commit, one more on every commit (readers compare it)."""
        return int(self.meta.get("commit", 0))

    def commit(self, table: pa.Table, skipped: list[dict[str, Any]] | None = None) -> None:
        """Replace the index contents atomically: table first, then header, then drop checkpoints.

        Both carry the new commit id (the table in its Parquet metadata), so a reader that read the header of one
        commit and the table of another knows it and reads again (:meth:`open`)."""
        commit = self.commit_id + 1
        table = stamped(self.conform(table).sort_by("path"), commit)
        atomic_write_table(self.path / TABLE_FILE, table)
        if skipped is not None:
            self.skipped = sorted(skipped, key=lambda s: s["path"])
            atomic_write_json(self.path / SKIPPED_FILE, self.skipped)
        self.meta["commit"] = commit
        self.meta["count"] = table.num_rows
        self.meta["updated"] = now_iso()
        atomic_write_json(self.path / META_FILE, self.meta)
        self.table = table
        self._vectors = None
        self.clear_parts()

    def write_meta(self) -> None:
        atomic_write_json(self.path / META_FILE, self.meta)

    # --- what the header holds, by name (only the store and the write pipeline write the header) ----------------

    @property
    def config(self) -> IndexConfig:
        """The recipe of the vectors, as the header records it."""
        return IndexConfig.from_meta(self.meta)

    @property
    def created(self) -> str | None:
        """When the index was created (``--rebuild`` re-creates it): identifies one build of an index folder."""
        return self.meta.get("created")

    @property
    def model_name(self) -> str:
        return str(self.meta["model"]["name"])

    @property
    def precision(self) -> str:
        """The backbone's arithmetic: "fp32", or "int8" (indexes from before precision existed are fp32)."""
        return str(self.meta.get("precision", "fp32"))

    @property
    def calibration(self) -> str | None:
        """What an int8 backbone was calibrated on ("samples" or "photos"), if this index recorded it."""
        return self.meta.get("calibration")

    @property
    def vocabulary(self) -> dict[str, Any] | None:
        """The VLAD vocabulary's file, hash and source, when the index has one."""
        return self.meta.get("vocab")

    @property
    def pca(self) -> int | None:
        """The PCA-whitening size asked for (None: no PCA)."""
        return self.meta.get("pca")

    @property
    def post(self) -> dict[str, Any] | None:
        """The fitted PCA-whitening's settings, once fitted."""
        return self.meta.get("post")

    @property
    def ann(self) -> dict[str, Any] | None:
        """Which ANN index the folder holds (kind, parameters, recall, fingerprint); None: never refreshed."""
        return self.meta.get("ann")

    @property
    def discovery(self) -> dict[str, Any]:
        """What the last run's discovery ignored (by extension) and left out (folders lookalike wrote)."""
        return self.meta.get("discovery", {})

    @property
    def label_rule(self) -> str:
        return str(self.meta.get("labels", "folders"))

    def recipe(self, keys: Sequence[str]) -> dict[str, Any]:
        """The header's values of ``keys`` (None when absent): what fingerprints of the vectors are made of."""
        return {k: self.meta.get(k) for k in keys}

    def set_rules(self, *, labels: str, vectors: str) -> None:
        """Label rule and storage type of the next commit (neither changes a vector)."""
        self.meta["labels"] = labels
        self.meta["vectors"] = vectors

    def set_calibration(self, source: str) -> None:
        """Saved with the table when this run commits."""
        self.meta["calibration"] = source

    def set_discovery(self, ignored: dict[str, int], left_out: list[list[str]]) -> None:
        """Saved with the table when this run commits."""
        self.meta["discovery"] = {"ignored": ignored, "left_out": left_out}

    def record_vocabulary(self, info: dict[str, Any]) -> None:
        self.meta["vocab"] = info
        self.write_meta()

    def record_ann(self, info: dict[str, Any]) -> None:
        if self.meta.get("ann") != info:
            self.meta["ann"] = info
            self.write_meta()

    def commit_post(self, table: pa.Table, post: dict[str, Any]) -> None:
        """Commit vectors transformed by a newly fitted PCA-whitening (``post``), and their new size."""
        self.meta["dim"] = int(table.schema.field("vector").type.list_size)
        self.meta["post"] = post
        self.commit(table)

    # --- side files other parts of lookalike keep in the index folder -------------------------------------------

    def file(self, name: str) -> Path:
        return self.path / name
