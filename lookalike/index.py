"""The :class:`Index`: build or update an index of a photo folder, and search it.

This is the library API the CLI and the server call. Building is incremental (only new or changed files are
embedded, deleted ones dropped) and resumable (checkpoints every few hundred images; a killed run's work is picked
up by the next run).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from lookalike.aggregate import make_pooling, make_post
from lookalike.distributed import ENGINES, ray_describe_files, require_ray
from lookalike.embed import Describer
from lookalike.errors import ImageError, IndexMismatchError, LookalikeError
from lookalike.images import IMAGE_EXTENSIONS, content_hash, decode, find_images, read_file
from lookalike.models import create_model
from lookalike.models.registry import DEFAULT_MODEL
from lookalike.progress import bar
from lookalike.search import ANN_KINDS, VectorSearch, open_searcher, refresh_ann
from lookalike.store import INDEX_DIRNAME, VECTOR_TYPES, Store, make_table
from lookalike.vocab import (
    check_same_vocabulary,
    ensure_vocabulary,
    fit_pending_post,
    model_kwargs,
    stored_model_kwargs,
    use_vocabulary,
)

DEFAULT_BATCH = (
    8  # ONNX Runtime on 2 cores: 118-126 images/s at batch 4-8 vs 101 at 32 (320 px) (cache-friendlier activations)
)
DEFAULT_POOLING = "gem"  # best room kNN accuracy and flowers mAP@R at 224 and 320 px (BENCHMARKS.md "descriptors")
MODES = ("all", "same-class", "other-classes")

Query = str | os.PathLike[str] | Image.Image | np.ndarray


@dataclass
class Match:
    """One search hit. ``path`` is absolute; ``name`` is the path relative to the indexed folder."""

    path: str
    score: float
    label: str | None
    rank: int
    id: int
    name: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchResult:
    query: str
    matches: list[Match]
    mode: str = "all"
    query_class: str | None = None
    class_source: str | None = None  # "given", "label", "folder" or "predicted"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["matches"] = [m.to_dict() for m in self.matches]
        return d


@dataclass
class BuildReport:
    """What an index run did; ``skipped`` lists (relative path, reason) for files that could not be used."""

    total: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    resumed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def embedded(self) -> int:
        return self.added + self.updated


def _label_for(rel: str, mode: str) -> str | None:
    if mode != "folders":
        return None
    parent = Path(rel).parent
    return parent.name if parent.name else None


def _same_config(stored: dict[str, Any], asked: dict[str, Any]) -> bool:
    return all(stored.get(k) == v for k, v in asked.items())


class Index:
    """An opened index: metadata, vectors, and the describer that made them (loaded on first query)."""

    def __init__(self, store: Store, *, runtime: str = "auto") -> None:
        self.store = store
        self.runtime = runtime
        self.report: BuildReport | None = None
        self._describer: Describer | None = None
        self._search: VectorSearch | None = None
        self._by_name: dict[str, int] | None = None
        self._by_hash: dict[str, list[int]] | None = None
        self._names: list[str] | None = None
        self._labels: list[str | None] | None = None

    # --- construction ----------------------------------------------------------------------------------------

    @classmethod
    def open(cls, index_dir: str | os.PathLike[str] = INDEX_DIRNAME, *, runtime: str = "auto") -> Index:
        path = Path(index_dir)
        if not Store.exists(path) and Store.exists(path / INDEX_DIRNAME):
            path = path / INDEX_DIRNAME  # accept the photo folder as well as its index folder
        return cls(Store.open(path), runtime=runtime)

    @classmethod
    def build(
        cls,
        photos: str | os.PathLike[str],
        index_dir: str | os.PathLike[str] | None = None,
        *,
        labels: str = "folders",
        model: str | None = None,
        pooling: str | dict[str, Any] | None = None,
        resolution: int | None = None,
        batch_size: int = DEFAULT_BATCH,
        workers: int | None = None,
        progress: bool = False,
        rebuild: bool = False,
        checkpoint_every: int = 256,
        runtime: str = "auto",
        vocab: str | os.PathLike[str] | None = None,
        pca: int | None = None,
        weights: str | os.PathLike[str] | None = None,
        engine: str = "local",
        address: str | None = None,
        num_workers: int | None = None,
        ann: str | None = None,
        vectors: str | None = None,
    ) -> Index:
        """Index (or bring up to date) every image below ``photos``; see the module docstring.

        ``vocab``: a saved VLAD vocabulary to use instead of fitting one; ``pca``: PCA-whiten to this many
        dimensions (fitted on the indexed vectors, kept on updates until ``rebuild``); ``weights``: a checkpoint
        file for hub backbones (see :mod:`lookalike.vocab` and :mod:`lookalike.models.hub`).

        ``engine="ray"``: decode + embed on Ray (``address`` to join a cluster, else a local Ray with
        ``num_workers`` CPUs; see :mod:`lookalike.distributed`). ``ann``: auto|flat|ivf|hnsw search index, kept in
        the index folder (see :func:`lookalike.search.refresh_ann`). ``vectors``: float32|float16 storage.
        """

        if engine not in ENGINES:
            raise LookalikeError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        if engine == "ray":
            require_ray()
        if ann is not None and ann not in ANN_KINDS:
            raise LookalikeError(f"--ann must be one of {', '.join(ANN_KINDS)}, got {ann!r}")
        if vectors is not None and vectors not in VECTOR_TYPES:
            raise LookalikeError(f"--vectors must be float32 or float16, got {vectors!r}")
        if labels not in ("folders", "none"):
            raise LookalikeError(f"--labels must be 'folders' or 'none', got {labels!r}")
        if batch_size < 1:
            raise LookalikeError(f"batch size must be at least 1, got {batch_size}")
        root = Path(photos).resolve()
        if not root.is_dir():
            raise LookalikeError(f"not a folder: {photos}")
        index_path = Path(index_dir) if index_dir else root / INDEX_DIRNAME
        started = time.perf_counter()

        if Store.exists(index_path) and not rebuild:
            store = Store.open(index_path)
            if store.root != root:
                raise IndexMismatchError(
                    f"{index_path} indexes {store.root}, not {root}; pass another --index or --rebuild"
                )
            index = cls(store, runtime=runtime)
            describer = index.describer
            asked: dict[str, Any] = {}
            if model and model != store.meta["model"]["name"]:
                # a trained model is a folder: the same folder given by another (relative) path is the same model
                same_dir = Path(model).is_dir() and str(Path(model).resolve()) == store.meta["model"]["name"]
                if not same_dir:
                    asked["model"] = {"name": model}
            if pooling:
                asked["pooling"] = make_pooling(pooling).config()
            if resolution:
                asked["resolution"] = Describer(describer.model, describer.pooling, resolution).resolution
            if pca:
                asked["pca"] = int(pca)

            check_same_vocabulary(describer.pooling, vocab, index_path)
            if not _same_config(store.meta, asked):
                raise IndexMismatchError(
                    f"{index_path} was built with {describe_config(store.meta)}; asked for "
                    f"{describe_config({**store.meta, **asked})}. Use --rebuild to re-embed everything, "
                    "or another --index"
                )
            if store.meta.get("labels") != labels:
                store.meta["labels"] = labels
            if vectors:
                store.meta["vectors"] = vectors  # a change of storage type is a cast on commit, not a re-embed
        else:
            backbone = create_model(model or DEFAULT_MODEL, **model_kwargs(runtime, weights, model or DEFAULT_MODEL))
            # a trained embedding (N, D, 1, 1) asks for mean pooling: GeM would clamp its negative components
            default_pooling = getattr(backbone, "default_pooling", None) or DEFAULT_POOLING
            describer = Describer(
                backbone,
                use_vocabulary(make_pooling(pooling or default_pooling), vocab),
                resolution,
            )
            rel_root = os.path.relpath(root, index_path.resolve())
            extra: dict[str, Any] = {"pca": int(pca)} if pca else {}
            extra["vectors"] = vectors or "float32"
            store = Store.create(
                index_path, {"root": rel_root, "labels": labels, "dim": describer.dim, **describer.config(), **extra}
            )
            index = cls(store, runtime=runtime)
            index._describer = describer
            if rebuild:
                store.clear_parts()

        with store.lock():
            report = index._update(
                root,
                labels,
                batch_size=batch_size,
                workers=workers,
                progress=progress,
                checkpoint_every=checkpoint_every,
                engine=engine,
                engine_options={"address": address, "num_workers": num_workers},
            )

            fit_pending_post(index)

            refresh_ann(store, ann)
        report.seconds = time.perf_counter() - started
        index.report = report
        return index

    def _update(
        self,
        root: Path,
        labels: str,
        *,
        batch_size: int,
        workers: int | None,
        progress: bool,
        checkpoint_every: int,
        engine: str = "local",
        engine_options: dict[str, Any] | None = None,
    ) -> BuildReport:
        store, describer = self.store, self.describer
        index_path = store.path.resolve()
        files = [p for p in find_images(root) if index_path not in p.resolve().parents]
        report = BuildReport(total=len(files))
        if not files and len(store) == 0:
            exts = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise LookalikeError(f"no images found in {root} (looked for {exts}, in any case)")

        ensure_vocabulary(self, files, progress=progress)

        stats: dict[str, tuple[Path, int, int]] = {}
        for p in files:
            try:
                st = p.stat()
            except OSError:
                continue
            stats[p.relative_to(root).as_posix()] = (p, st.st_size, st.st_mtime_ns)

        old = store.table
        old_pos = {name: i for i, name in enumerate(old.column("path").to_pylist())}
        old_size = old.column("size").to_pylist()
        old_mtime = old.column("mtime_ns").to_pylist()
        old_hash = old.column("hash").to_pylist()
        recovered = store.read_parts()
        rec_pos = {} if recovered is None else {n: i for i, n in enumerate(recovered.column("path").to_pylist())}
        skipped_before = {s["path"]: s for s in store.skipped}

        keep_old: list[int] = []
        keep_rec: list[int] = []
        to_embed: list[Path] = []
        known: dict[Path, str] = {}
        skipped: list[dict[str, Any]] = []
        for name, (p, size, mtime) in stats.items():
            if name in rec_pos:
                r = rec_pos[name]
                if recovered.column("size")[r].as_py() == size and recovered.column("mtime_ns")[r].as_py() == mtime:
                    keep_rec.append(r)
                    continue
            if name in old_pos:
                i = old_pos[name]
                if old_size[i] == size and old_mtime[i] == mtime:
                    keep_old.append(i)
                    continue
                known[p] = old_hash[i]
            s = skipped_before.get(name)
            if s and s.get("size") == size and s.get("mtime_ns") == mtime:
                skipped.append(s)
                continue
            to_embed.append(p)
        report.unchanged = len(keep_old)
        report.resumed = len(keep_rec)
        report.removed = sum(1 for name in old_pos if name not in stats)

        new_tables: list[pa.Table] = []
        rows: list[dict[str, Any]] = []
        vecs: list[np.ndarray] = []
        reused: list[int] = []

        def flush() -> None:
            if not rows:
                return
            table = store.conform(make_table(rows, np.concatenate(vecs), store.dim))
            store.write_part(table)
            new_tables.append(table)
            rows.clear()
            vecs.clear()

        try:
            with bar("embedding", len(to_embed), progress and bool(to_embed)) as tick:
                if engine == "ray":
                    batches = ray_describe_files(
                        store.meta, store.path, to_embed, known_hashes=known.get, batch_size=batch_size,
                        runtime=self.runtime, **(engine_options or {}),
                    )  # fmt: skip
                else:
                    batches = describer.describe_files(
                        to_embed, known_hashes=known.get, batch_size=batch_size, workers=workers
                    )
                for batch in batches:
                    v = 0
                    for item in batch.items:
                        name = item.path.relative_to(root).as_posix()
                        _, size, mtime = stats[name]
                        if item.error:
                            skipped.append({"path": name, "reason": item.error, "size": size, "mtime_ns": mtime})
                        elif item.unchanged:
                            reused.append(old_pos[name])
                        else:
                            m = item.meta
                            rows.append(
                                {
                                    "path": name, "size": size, "mtime_ns": mtime, "hash": item.hash,
                                    "width": m.width, "height": m.height, "label": _label_for(name, labels),
                                    "exif_time": m.exif_time, "gps_lat": m.gps_lat, "gps_lon": m.gps_lon,
                                }
                            )  # fmt: skip
                            vecs.append(batch.vectors[v : v + 1])
                            v += 1
                            if name in old_pos:
                                report.updated += 1
                            else:
                                report.added += 1
                    tick.advance(len(batch.items))
                    if len(rows) >= checkpoint_every:
                        flush()
        finally:
            flush()  # on Ctrl-C too: what was embedded is on disk for the next run

        parts = [old.take(sorted(keep_old))] if keep_old else []
        if reused:
            # content unchanged but touched: keep the vector, refresh size/mtime
            t = old.take(sorted(reused))
            names = t.column("path").to_pylist()
            t = t.set_column(
                t.schema.get_field_index("size"), "size", pa.array([stats[n][1] for n in names], pa.int64())
            )
            t = t.set_column(
                t.schema.get_field_index("mtime_ns"), "mtime_ns", pa.array([stats[n][2] for n in names], pa.int64())
            )
            parts.append(t)
            report.unchanged += len(reused)
        if keep_rec:
            parts.append(recovered.take(sorted(keep_rec)))
        parts.extend(new_tables)
        parts = [store.conform(t) for t in parts]  # old rows may be float32 when --vectors float16 was asked
        table = pa.concat_tables(parts) if parts else make_table([], np.zeros((0, store.dim), np.float32), store.dim)
        if labels == "none":
            table = table.set_column(
                table.schema.get_field_index("label"), "label", pa.nulls(table.num_rows, pa.string())
            )
        store.commit(table, skipped)
        report.skipped = [(s["path"], s["reason"]) for s in skipped]
        self._invalidate()
        return report

    def _invalidate(self) -> None:
        self._search = None
        self._by_name = None
        self._by_hash = None
        self._names = None
        self._labels = None

    # --- properties ----------------------------------------------------------------------------------------------

    @property
    def describer(self) -> Describer:
        if self._describer is None:
            self._describer = describer_from_meta(self.store, runtime=self.runtime)
        return self._describer

    def __len__(self) -> int:
        return len(self.store)

    @property
    def root(self) -> Path:
        return self.store.root

    @property
    def names(self) -> list[str]:
        if self._names is None:
            self._names = self.store.column("path")
        return self._names

    @property
    def paths(self) -> list[Path]:
        root = self.root
        return [root / n for n in self.names]

    @property
    def labels(self) -> list[str | None]:
        """One list per opened index: per-image lookups in search loops must not convert the column each time."""
        if self._labels is None:
            self._labels = self.store.column("label")
        return self._labels

    @property
    def classes(self) -> list[str]:
        return sorted({lab for lab in self.labels if lab is not None})

    @property
    def vectors(self) -> np.ndarray:
        return self.store.vectors

    @property
    def searcher(self) -> VectorSearch:
        """Exact search, or the index folder's ANN index when ``--ann`` made one for these vectors."""
        if self._search is None:
            self._search = open_searcher(self.store)
        return self._search

    # --- describing queries ----------------------------------------------------------------------------------------

    def hash_ids(self, digest: str) -> list[int]:
        """Ids of indexed images whose file content has this hash."""
        if self._by_hash is None:
            by_hash: dict[str, list[int]] = {}
            for i, h in enumerate(self.store.column("hash")):
                by_hash.setdefault(h, []).append(i)
            self._by_hash = by_hash
        return self._by_hash.get(digest, [])

    def _self_ids(self, path: Path, data: bytes) -> list[int]:
        if self._by_name is None:
            self._by_name = {n: i for i, n in enumerate(self.names)}
        ids = set(self.hash_ids(content_hash(data)))
        with contextlib.suppress(ValueError):
            rel = path.resolve().relative_to(self.root).as_posix()
            if rel in self._by_name:
                ids.add(self._by_name[rel])
        return sorted(ids)

    def prepare(self, queries: Sequence[Query]) -> tuple[np.ndarray, list[list[int]]]:
        """Query vectors, described as the index was, and for each query the ids of index entries that *are* it
        (same file, or byte-identical content). Each file is read once: the bytes decoded are the bytes hashed."""
        loaded: list[Image.Image | np.ndarray] = []
        selves: list[list[int]] = []
        for q in queries:
            if isinstance(q, np.ndarray):
                v = np.asarray(q, dtype=np.float32).reshape(1, -1)
                if v.shape[1] != self.store.dim:
                    raise LookalikeError(f"query vector has {v.shape[1]} dims, the index has {self.store.dim}")
                loaded.append(v)
                selves.append([])
            elif isinstance(q, Image.Image):
                loaded.append(q.convert("RGB"))
                selves.append([])
            else:
                data = read_file(q)
                loaded.append(decode(data, str(q), target=self.describer.resolution)[0])
                selves.append(self._self_ids(Path(q), data))
        images = [x for x in loaded if isinstance(x, Image.Image)]
        described = iter(self.describer.describe_images(images)) if images else iter(())
        rows = [x if isinstance(x, np.ndarray) else next(described)[None] for x in loaded]
        vectors = np.concatenate(rows) if rows else np.zeros((0, self.store.dim), np.float32)
        return vectors, selves

    def embed(self, queries: Sequence[Query]) -> np.ndarray:
        """Vectors for query images (paths, PIL images) or pass-through vectors, described as the index was."""
        return self.prepare(queries)[0]

    def ids_of(self, query: Query) -> list[int]:
        """Ids of index entries that *are* this query (same file, or byte-identical content)."""
        if isinstance(query, (Image.Image, np.ndarray)):
            return []
        try:
            return self._self_ids(Path(query), read_file(query))
        except ImageError:
            return []

    # --- search ------------------------------------------------------------------------------------------------

    def search(self, query: Query, k: int = 5, *, mode: str = "all", label: str | None = None) -> list[Match]:
        """The k images most similar to ``query``, best first (the query itself is never its own match)."""
        return self.search_many([query], k, mode=mode, label=label)[0].matches

    def search_many(
        self,
        queries: Sequence[Query],
        k: int = 5,
        *,
        mode: str = "all",
        label: str | None = None,
        exclude: Sequence[Sequence[int]] | None = None,
    ) -> list[SearchResult]:
        """Search for several queries; ``exclude`` adds, per query, ids that are the query itself (e.g. an indexed
        image given by its vector) to those found from its file."""
        if mode not in MODES:
            raise LookalikeError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
        if len(self) == 0:
            raise LookalikeError(f"the index at {self.store.path} is empty")
        vectors, selves = self.prepare(queries)
        if exclude is not None:
            selves = [sorted(set(a) | set(b)) for a, b in zip(selves, exclude, strict=True)]
        exclude = selves
        names, labels, root = self.names, self.labels, self.root
        labels_arr = (
            np.array([lab if lab is not None else "" for lab in labels], dtype=object) if mode != "all" else None
        )
        results = []
        for qi, q in enumerate(queries):
            allowed = None
            qclass = source = None
            if labels_arr is not None:
                qclass, source = self.query_class(q, vectors[qi], label, exclude[qi])
                same = labels_arr == qclass
                allowed = np.flatnonzero(same if mode == "same-class" else ~same & (labels_arr != ""))
            scores, ids = self.searcher.search(vectors[qi : qi + 1], k, allowed=allowed, exclude=[exclude[qi]])
            matches = [
                Match(str(root / names[i]), float(s), labels[i], r + 1, int(i), names[i])
                for r, (s, i) in enumerate(zip(scores[0], ids[0], strict=True))
                if i >= 0
            ]
            qname = str(q) if not isinstance(q, (Image.Image, np.ndarray)) else "<image>"
            results.append(SearchResult(qname, matches, mode, qclass, source))
        return results

    def query_class(
        self, query: Query, vector: np.ndarray, given: str | None, self_ids: Sequence[int]
    ) -> tuple[str, str]:
        """The class a class-restricted search uses: given, else the query's label, else its folder, else predicted."""
        classes = self.classes
        if not classes:
            raise LookalikeError("this index has no labels; build it with --labels folders to search by class")
        if given is not None:
            if given not in classes:
                raise LookalikeError(f"unknown class {given!r}; the index has: {', '.join(classes)}")
            return given, "given"
        for i in self_ids:
            if self.labels[i] is not None:
                return self.labels[i], "label"  # type: ignore[return-value]
        if isinstance(query, (str, os.PathLike)) and Path(query).parent.name in classes:
            return Path(query).parent.name, "folder"
        return self.predict_class(vector), "predicted"

    def predict_class(self, vector: np.ndarray, k: int | None = None) -> str:
        """The class :meth:`classify` gives (the fitted head, else a kNN vote); a one-class index is that class."""
        classes = self.classes
        if len(classes) == 1:
            return classes[0]
        from lookalike.classify import classify_vectors

        return classify_vectors(self, np.asarray(vector, np.float32).reshape(1, -1), k=k)[0].label

    def classify(self, queries: Sequence[Query], k: int | None = None, *, method: str | None = None) -> list:
        """Class and per-class probabilities of each query (``list[lookalike.classify.Prediction]``).

        Uses the head `lookalike fit` stored in the index folder, else a similarity-weighted kNN vote over k
        neighbours; ``method`` asks for another head (fitted now, in memory, if it is not the stored one). A query
        that is itself in the index does not vote for itself.
        """
        from lookalike.classify import classify_vectors, require_classes

        require_classes(self)
        vectors, exclude = self.prepare(queries)
        return classify_vectors(self, vectors, method=method, k=k, exclude=exclude)

    # --- summary -------------------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        meta = self.store.meta
        counts = Counter(lab for lab in self.labels if lab is not None)
        return {
            "index": str(self.store.path),
            "root": str(self.root),
            "images": len(self),
            "model": meta["model"]["name"],
            "pooling": meta["pooling"],
            "resolution": meta["resolution"],
            "dim": meta["dim"],
            "post": meta.get("post"),
            "vocab": meta.get("vocab"),
            "labels": dict(sorted(counts.items())),
            "unlabelled": sum(1 for lab in self.labels if lab is None),
            "gps_tagged": int(sum(1 for v in self.store.column("gps_lat") if v is not None)),
            "skipped": [{"path": s["path"], "reason": s["reason"]} for s in self.store.skipped],
            "interrupted_parts": self.store.pending_parts(),
            "vectors": self.store.vector_type,
            "search": meta.get("ann") or {"kind": "auto", "index": "flat", "exact": True},
            "classifier": self._head_summary(),
            "disk_bytes": self.store.disk_bytes(),
            "created": meta.get("created"),
            "updated": meta.get("updated"),
        }

    def _head_summary(self) -> dict[str, Any] | None:
        """The head `lookalike fit` stored (method, held-out accuracy, stale or not), for `info`."""
        from lookalike.classify import head_info

        try:
            head = head_info(self)
        except LookalikeError as exc:
            return {"error": str(exc)}
        if head is None:
            return None
        keep = ("method", "classes", "n_train", "fitted", "stale", "metrics")
        return {k: head[k] for k in keep if k in head}


def describe_config(meta: dict[str, Any]) -> str:
    pooling = meta.get("pooling", {})
    p = pooling.get("name", "?") if isinstance(pooling, dict) else str(pooling)
    return f"model {meta.get('model', {}).get('name', '?')}, pooling {p}, resolution {meta.get('resolution')}"


def describer_from_meta(store: Store, *, runtime: str = "auto") -> Describer:
    """Rebuild the exact describer an index was made with; refuse if the model's weights changed."""
    meta = store.meta

    model = create_model(meta["model"]["name"], **stored_model_kwargs(runtime, meta["model"]))
    if model.config() != meta["model"]:
        raise IndexMismatchError(
            f"{store.path} was built with {meta['model']['name']} weights {meta['model'].get('weights', '?')[:12]}, "
            f"but this machine has {model.config().get('weights', '?')[:12]}; rebuild with `lookalike index --rebuild`"
        )
    pooling = make_pooling(meta["pooling"]) if "pooling" in meta else make_pooling(DEFAULT_POOLING)
    if hasattr(pooling, "load"):
        pooling.load(store.path)
    post = None
    if meta.get("post"):
        post = make_post(meta["post"], store.path)
    return Describer(model, pooling, meta["resolution"], post=post)
