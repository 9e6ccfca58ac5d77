"""The :class:`Index`: build or update an index of a photo folder, and search it.

This is the library API the CLI and the server call. Building is incremental (only new or changed files are
embedded, deleted ones dropped) and resumable (checkpoints every few hundred images; a killed run's work is picked
up by the next run).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from lookalike.config import IndexConfig, RunOptions, split_settings
from lookalike.display import Matches, Predictions
from lookalike.distributed import ray_describe_files, require_ray
from lookalike.embed import Batch, Describer
from lookalike.errors import ConfigError, ImageError, IndexMismatchError, LookalikeError
from lookalike.filters import FilterColumns, SearchFilter
from lookalike.images import IMAGE_EXTENSIONS, content_hash, decode, discover, read_file
from lookalike.models.quantize import INT8_FILE
from lookalike.progress import bar
from lookalike.search import VectorSearch, open_searcher, refresh_ann
from lookalike.store import FEATURES_DIR, INDEX_DIRNAME, Store, make_table, names_of, plan_update, with_labels
from lookalike.verify import (
    UNKNOWN,
    FeatureCache,
    FeatureConf,
    Features,
    MatchConf,
    VerifiedPair,
    extract,
    judge,
    match_points,
    verified_pairs,
    verify_against,
)
from lookalike.vocab import check_same_vocabulary, ensure_vocabulary, fit_pending_post

MODES = ("all", "same-class", "other-classes")
RERANK_KEYPOINTS = 512
"""Re-ranking matches each image's strongest 512 keypoints (of 2,048 stored): a sixteenth of the matching work of
all of them, so depth 100 fits a query's time budget (BENCHMARKS.md, places, compares 512 and 1,024)."""

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
    inliers: int | None = None  # geometric verification against the query (re-ranked searches only)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchResult:
    query: str
    matches: list[Match]
    mode: str = "all"
    query_class: str | None = None
    class_source: str | None = None  # "given", "label", "folder" or "predicted"
    filter: dict[str, Any] | None = None  # the SearchFilter applied (its set fields), if any
    note: str | None = None  # why there are fewer than k matches (a filter that leaves nothing, min_score)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["matches"] = [m.to_dict() for m in self.matches]
        return d

    def _repr_html_(self) -> str:
        from lookalike.display import matches_html

        return matches_html(self.matches, self.note or "")


@dataclass
class BuildReport:
    """What an index run did, accounting for every image-named entry it saw:
    ``total == added + updated + unchanged + resumed + len(skipped)`` (``removed`` rows were gone from disk).

    ``skipped`` lists (relative path, reason) for entries that could not be used (exact names: pass them through
    :func:`lookalike.io.shown` to print); ``ignored`` counts the other files by extension; ``left_out`` lists
    (relative folder, why) for folders lookalike wrote itself, which are never indexed.
    """

    total: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    resumed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=dict)
    left_out: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    calibration: str | None = None  # what an int8 backbone was calibrated on, when this run calibrated one

    @property
    def embedded(self) -> int:
        return self.added + self.updated


class Index:
    """An opened index: the facade the CLI, the server and users call (open, build/update, search, classify, info).

    It holds the store and the describer that made its vectors, and caches views derived from the stored table
    (names, labels, the searcher); tasks read these through its public attributes and never write into it.
    """

    def __init__(self, store: Store, *, runtime: str = "auto") -> None:
        self.store = store
        self.runtime = runtime
        self.report: BuildReport | None = None
        self._describer: Describer | None = None
        self._views: dict[str, Any] = {}

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
        config: IndexConfig | None = None,
        options: RunOptions | None = None,
        **settings: Any,
    ) -> Index:
        """Index (or bring up to date) every image below ``photos``.

        ``settings`` are fields of :class:`~lookalike.config.IndexConfig` (model, pooling, resolution, pca, vocab,
        weights, vectors, labels) and of :class:`~lookalike.config.RunOptions` (batch_size, workers, progress,
        rebuild, engine, ann, ...), or pass the two objects. On an existing index, settings left out follow what
        the index was built with; one that would change its vectors is refused, naming the setting and both values
        (``rebuild=True`` re-embeds everything instead).
        """
        asked, run = split_settings(settings)
        options = dataclasses.replace(options or RunOptions(), **run)
        if options.engine == "ray":
            require_ray()
        if isinstance(asked.get("model"), (str, os.PathLike)) and Path(asked["model"]).is_dir():
            asked["model"] = str(Path(asked["model"]).resolve())  # a model folder is named by its absolute path
        for key in ("vocab", "weights"):
            if asked.get(key) is not None:
                asked[key] = str(asked[key])
        root = Path(photos).resolve()
        if not root.is_dir():
            raise LookalikeError(f"not a folder: {photos}")
        index_path = Path(index_dir) if index_dir else root / INDEX_DIRNAME
        started = time.perf_counter()

        if Store.exists(index_path) and not options.rebuild:
            index = cls._reopen(index_path, root, config, asked, options)
        else:
            wanted = (
                dataclasses.replace(config, **{k: v for k, v in asked.items() if v is not None}) if config else None
            )
            wanted = wanted or IndexConfig(**{k: v for k, v in asked.items() if v is not None})
            describer = Describer.from_config(wanted, runtime=options.runtime)
            wanted = dataclasses.replace(wanted, precision=describer.precision)  # stored resolved, like pooling
            meta = {"root": os.path.relpath(root, index_path.resolve()), "dim": describer.dim}
            store = Store.create(index_path, {**meta, **wanted.to_meta(), **describer.config()})
            index = cls(store, runtime=options.runtime)
            index._describer = describer
            if options.rebuild:
                store.clear_parts()
                store.discard_table()

        with index.store.lock():
            report = index.update(options)
            refresh_ann(index.store, options.ann)
        report.seconds = time.perf_counter() - started
        index.report = report
        return index

    @classmethod
    def _reopen(
        cls, path: Path, root: Path, config: IndexConfig | None, asked: dict[str, Any], options: RunOptions
    ) -> Index:
        """An existing index, checked against what was asked: the same vectors or a refusal that names why."""
        store = Store.open(path)
        if store.root != root:
            raise IndexMismatchError(f"{path} indexes {store.root}, not {root}; pass another index folder or rebuild")
        stored = IndexConfig.from_meta(store.meta)
        wanted = stored.merged(**{k: v for k, v in dataclasses.asdict(config).items()}) if config else stored
        wanted = wanted.merged(**asked)
        diffs = stored.differences(wanted)
        if diffs:
            raise IndexMismatchError(
                f"{path} was built with other settings ({IndexConfig.describe_differences(diffs)}); re-embed "
                "everything with --rebuild (rebuild=True in Python), or use another index folder"
            )
        index = cls(store, runtime=options.runtime)
        check_same_vocabulary(index.describer.pooling, wanted.vocab, path)
        store.meta["labels"] = wanted.labels
        store.meta["vectors"] = wanted.vectors  # a change of storage type is a cast on commit, not a re-embed
        return index

    def update(self, options: RunOptions | None = None) -> BuildReport:
        """Bring the index up to date with its photo folder: embed new and changed files, drop deleted ones.

        Checkpoints every ``options.checkpoint_every`` images; a killed run's checkpoints are picked up here. The
        caller holds the store's lock.
        """
        options = options or RunOptions()
        store, describer, root = self.store, self.describer, self.root
        found = discover(root, exclude=[store.path])
        files = found.files
        if not files and len(store) == 0:
            exts = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise LookalikeError(f"no images found in {root} (looked for {exts}, in any case)")
        calibration = None
        if describer.needs_calibration:  # before the vocabulary: its descriptors come from the int8 model too
            calibration = describer.calibrate(files, store.path / INT8_FILE, source=options.calibration)
            store.meta["calibration"] = options.calibration  # saved with the table when this run commits
        ensure_vocabulary(store, describer, files, progress=options.progress)

        on_disk = {p.relative_to(root).as_posix(): found.stats[p] for p in files}
        old = store.table
        old_rows = {n: i for i, n in enumerate(store.names())}
        sizes, mtimes, hashes = (old.column(c).to_pylist() for c in ("size", "mtime_ns", "hash"))
        recovered = store.read_parts()
        rec_rows = {} if recovered is None else {n: i for i, n in enumerate(names_of(recovered))}
        rec_stat = (
            {}
            if recovered is None
            else dict(
                zip(
                    rec_rows,
                    zip(*(recovered.column(c).to_pylist() for c in ("size", "mtime_ns")), strict=True),
                    strict=True,
                )
            )
        )
        skipped_before = {s["path"]: s for s in store.skipped}
        plan = plan_update(
            on_disk,
            {n: (sizes[i], mtimes[i], hashes[i]) for n, i in old_rows.items()},
            rec_stat,
            {n: (s.get("size"), s.get("mtime_ns")) for n, s in skipped_before.items()},
        )
        report = BuildReport(
            total=found.seen,
            unchanged=len(plan.keep),
            resumed=len(plan.resume),
            removed=len(plan.removed),
            ignored=dict(sorted(found.ignored.items(), key=lambda kv: (-kv[1], kv[0]))),
            left_out=[(rel_name(p, root), why) for p, why in found.left_out],
            calibration=calibration,
        )
        # entries that are no regular files are found again (and not opened) on every run: no size or mtime to keep
        skipped = [skipped_before[n] for n in plan.skip_again]
        skipped += [{"path": rel_name(p, root), "reason": why} for p, why in found.skipped]
        new_tables: list[pa.Table] = []
        rows: list[dict[str, Any]] = []
        vecs: list[np.ndarray] = []
        reused: list[str] = []

        def flush() -> None:
            if rows:
                table = store.conform(make_table(rows, np.concatenate(vecs), store.dim))
                store.write_part(table)
                new_tables.append(table)
                rows.clear()
                vecs.clear()

        to_embed = [root / n for n in plan.embed]
        known = {root / n: h for n, h in plan.known_hashes.items()}
        try:
            with bar("embedding", len(to_embed), options.progress and bool(to_embed)) as tick:
                for batch in self._describe(to_embed, known, options):
                    v = 0
                    for item in batch.items:
                        name = item.path.relative_to(root).as_posix()
                        size, mtime = on_disk[name]
                        if item.error:
                            skipped.append({"path": name, "reason": item.error, "size": size, "mtime_ns": mtime})
                        elif item.unchanged:
                            reused.append(name)
                        else:
                            m = item.meta
                            rows.append(
                                {
                                    "path": name, "size": size, "mtime_ns": mtime, "hash": item.hash,
                                    "width": m.width, "height": m.height, "exif_time": m.exif_time,
                                    "gps_lat": m.gps_lat, "gps_lon": m.gps_lon,
                                }
                            )  # fmt: skip
                            vecs.append(batch.vectors[v : v + 1])
                            v += 1
                            if name in old_rows:
                                report.updated += 1
                            else:
                                report.added += 1
                    tick.advance(len(batch.items))
                    if len(rows) >= options.checkpoint_every:
                        flush()
        finally:
            flush()  # on Ctrl-C too: what was embedded is on disk for the next run

        parts = [old.take(sorted(old_rows[n] for n in plan.keep))] if plan.keep else []
        if reused:  # content unchanged but touched: keep the vector, refresh size and mtime
            t = old.take(sorted(old_rows[n] for n in reused))
            names = names_of(t)
            for col, pos in (("size", 0), ("mtime_ns", 1)):
                values = pa.array([on_disk[n][pos] for n in names], pa.int64())
                t = t.set_column(t.schema.get_field_index(col), col, values)
            parts.append(t)
            report.unchanged += len(reused)
        if plan.resume:
            parts.append(recovered.take(sorted(rec_rows[n] for n in plan.resume)))
        parts.extend(new_tables)
        parts = [store.conform(t) for t in parts]  # old rows may be float32 when float16 storage was asked
        table = pa.concat_tables(parts) if parts else make_table([], np.zeros((0, store.dim), np.float32), store.dim)
        store.meta["discovery"] = {"ignored": report.ignored, "left_out": [list(x) for x in report.left_out]}
        store.commit(with_labels(table, store.meta.get("labels", "folders")), skipped)
        report.skipped = [(s["path"], s["reason"]) for s in skipped]
        fit_pending_post(store, describer)
        if (store.path / FEATURES_DIR).is_dir():  # local features of files changed or gone are stale
            FeatureCache(store).prune()
        self._views.clear()
        return report

    def _describe(self, paths: list[Path], known: dict[Path, str], options: RunOptions) -> Iterator[Batch]:
        if options.engine == "ray":
            return ray_describe_files(
                self.store.meta, self.store.path, paths, known_hashes=known.get, batch_size=options.batch_size,
                runtime=self.runtime, address=options.address, num_workers=options.num_workers,
            )  # fmt: skip
        return self.describer.describe_files(
            paths, known_hashes=known.get, batch_size=options.batch_size, workers=options.workers
        )

    def refit_vocabulary(
        self,
        clusters: int = 32,
        *,
        soft: bool = False,
        out: str | os.PathLike[str] | None = None,
        progress: bool = False,
    ) -> Index:
        """A new VLAD vocabulary from the index's own images, then every image re-described with it.

        The index keeps its model, resolution, labels and PCA setting; its PCA-whitening (if any) is refitted
        too, since it was fitted on vectors of the old vocabulary.
        """
        stored = IndexConfig.from_meta(self.store.meta)
        wanted = dataclasses.replace(stored, pooling={"name": "vlad", "clusters": clusters, "soft": soft})
        new = Index.build(
            self.root,
            self.store.path,
            config=wanted,
            options=RunOptions(rebuild=True, progress=progress, runtime=self.runtime),
        )
        if out is not None:
            new.describer.pooling.save(out)  # type: ignore[attr-defined]
        return new

    # --- properties ----------------------------------------------------------------------------------------------

    @property
    def config(self) -> IndexConfig:
        """The recipe of this index's vectors, as its ``meta.json`` records it."""
        return IndexConfig.from_meta(self.store.meta)

    @property
    def describer(self) -> Describer:
        """The describer the vectors were made with (built on first use: opening an index loads no model)."""
        if self._describer is None:
            self._describer = describer_of(self.store, runtime=self.runtime)
        return self._describer

    def _view(self, name: str, make: Any) -> Any:
        """A view derived from the stored table, computed once per table (a commit replaces the table object)."""
        key = (name, id(self.store.table))
        if key not in self._views:
            self._views = {k: v for k, v in self._views.items() if k[1] == id(self.store.table)}
            self._views[key] = make()
        return self._views[key]

    def __len__(self) -> int:
        return len(self.store)

    @property
    def root(self) -> Path:
        return self.store.root

    @property
    def names(self) -> list[str]:
        """Paths relative to the photo folder, exact (a name that is not valid UTF-8 keeps its bytes: shown in
        readable form by :func:`lookalike.io.shown`)."""
        return self._view("names", self.store.names)

    @property
    def paths(self) -> list[Path]:
        root = self.root
        return [root / n for n in self.names]

    @property
    def labels(self) -> list[str | None]:
        """One list per opened index: per-image lookups in search loops must not convert the column each time."""
        return self._view("labels", lambda: self.store.column("label"))

    @property
    def classes(self) -> list[str]:
        return sorted({lab for lab in self.labels if lab is not None})

    @property
    def vectors(self) -> np.ndarray:
        return self.store.vectors

    @property
    def searcher(self) -> VectorSearch:
        """Exact search, or the index folder's ANN index when ``--ann`` made one for these vectors."""
        return self._view("searcher", lambda: open_searcher(self.store))

    # --- describing queries ----------------------------------------------------------------------------------------

    def hash_ids(self, digest: str) -> list[int]:
        """Ids of indexed images whose file content has this hash."""

        def make() -> dict[str, list[int]]:
            by_hash: dict[str, list[int]] = {}
            for i, h in enumerate(self.store.column("hash")):
                by_hash.setdefault(h, []).append(i)
            return by_hash

        return self._view("by_hash", make).get(digest, [])

    def _self_ids(self, path: Path, data: bytes) -> list[int]:
        by_name = self._view("by_name", lambda: {n: i for i, n in enumerate(self.names)})
        ids = set(self.hash_ids(content_hash(data)))
        with contextlib.suppress(ValueError):
            rel = path.resolve().relative_to(self.root).as_posix()
            if rel in by_name:
                ids.add(by_name[rel])
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

    def search(
        self,
        query: Query,
        k: int = 5,
        *,
        mode: str = "all",
        label: str | None = None,
        where: SearchFilter | None = None,
        rerank: int = 0,
    ) -> Matches:
        """The k images most similar to ``query``, best first (the query itself is never its own match): a list of
        :class:`Match` that a notebook shows as thumbnails.

        ``where`` restricts the images searched (capture time, place, path, label) and the lowest score returned;
        ``rerank`` > 0 re-orders that many of the top by geometric verification (see :meth:`search_many`).
        """
        return Matches(self.search_many([query], k, mode=mode, label=label, where=where, rerank=rerank)[0].matches)

    @property
    def filter_columns(self) -> FilterColumns:
        """Time, GPS, path and label columns as arrays for :class:`SearchFilter`, converted once per table."""
        return self._view("filter_columns", lambda: FilterColumns.from_table(self.store.metadata()))

    def allowed_by(self, where: SearchFilter | None) -> tuple[np.ndarray | None, str | None]:
        """Ids a filter allows (None: all) and, when it allows none, why; computed once per filter and table."""
        if where is None or not where.restricts_rows:
            return None, None
        cache = self._view("filter_cache", dict)
        key = dataclasses.replace(where, min_score=None)
        if key not in cache:
            if len(cache) > 16:
                cache.clear()
            cache[key] = where.select(self.filter_columns)
        return cache[key]

    def search_many(
        self,
        queries: Sequence[Query],
        k: int = 5,
        *,
        mode: str = "all",
        label: str | None = None,
        exclude: Sequence[Sequence[int]] | None = None,
        where: SearchFilter | None = None,
        rerank: int = 0,
        verify: MatchConf | None = None,
        query_images: Sequence[Image.Image | None] | None = None,
    ) -> list[SearchResult]:
        """Search for several queries; ``exclude`` adds, per query, ids that are the query itself (e.g. an indexed
        image given by its vector) to those found from its file. ``where`` filters inside the search: k matches
        come back whenever k images pass it, and when none can the result says why in ``note``.

        ``rerank``: the top ``rerank`` by cosine are verified geometrically against the query and re-ordered,
        verified ones first by inliers (ties by cosine), then the rest by cosine; each match reports its inliers.
        Local features of indexed images are computed and cached where missing. A query given as a vector needs
        its image in ``query_images`` (or must be an indexed image, named in ``exclude``)."""
        if rerank < 0:
            raise ConfigError(f"rerank depth must not be negative, got {rerank}", setting="rerank_depth")
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
        filtered, why = self.allowed_by(where)
        shown = where.to_dict() if where else None
        results = []
        for qi, q in enumerate(queries):
            allowed = filtered
            qclass = source = None
            note = why
            if labels_arr is not None:
                qclass, source = self.query_class(q, vectors[qi], label, exclude[qi])
                same = labels_arr == qclass
                in_mode = np.flatnonzero(same if mode == "same-class" else ~same & (labels_arr != ""))
                allowed = in_mode if filtered is None else np.intersect1d(filtered, in_mode, assume_unique=True)
                if not len(allowed) and note is None:
                    note = f"no image passes the filter in {mode} ({qclass})" if where else None
            qname = str(q) if not isinstance(q, (Image.Image, np.ndarray)) else "<image>"
            if allowed is not None and not len(allowed):
                results.append(SearchResult(qname, [], mode, qclass, source, shown, note))
                continue
            depth = max(k, rerank)
            scores, ids = self.searcher.search(vectors[qi : qi + 1], depth, allowed=allowed, exclude=[exclude[qi]])
            found = ids[0] >= 0
            if where is not None and where.min_score is not None:
                keep = found & (scores[0] >= where.min_score)
                if found.any() and not keep.any():
                    note = (
                        f"no match scores at least {where.min_score:g} (the best scores {scores[0][found].max():.3f})"
                    )
                found = keep
            matches = [
                Match(str(root / names[i]), float(s), labels[i], r + 1, int(i), names[i])
                for r, (s, i) in enumerate(zip(scores[0][found], ids[0][found], strict=True))
            ]
            if rerank:
                image = query_images[qi] if query_images is not None else None
                matches = self.rerank(self._query_features(q, image, exclude[qi]), matches, verify)
            matches = matches[:k]
            if not matches and note is None and where:
                note = "no image other than the query passes the filter"
            results.append(SearchResult(qname, matches, mode, qclass, source, shown, note))
        return results

    # --- geometric verification ---------------------------------------------------------------------------------

    @property
    def features(self) -> FeatureCache:
        """The local features of the indexed images (computed on demand, cached in the index folder)."""
        return self._view("features", lambda: FeatureCache(self.store))

    def local_features(
        self,
        *,
        max_keypoints: int | None = None,
        resolution: int | None = None,
        workers: int | None = None,
        progress: bool = False,
    ) -> FeatureCache:
        """Compute and cache the local features of every indexed image that has none yet.

        Settings left out follow the features already stored (else the defaults); changing one recomputes all."""
        stored = self.features.conf
        conf = FeatureConf(
            stored.max_keypoints if max_keypoints is None else max_keypoints,
            stored.resolution if resolution is None else resolution,
        )
        cache = self.features if conf == stored else FeatureCache(self.store, conf)
        if cache is not self.features:
            self._views[("features", id(self.store.table))] = cache
        cache.ensure(workers=workers, progress=progress)
        cache.prune()
        cache.pack(RERANK_KEYPOINTS)  # re-ranking's memory-mapped store, refreshed when much has changed
        return cache

    def _query_features(self, query: Query, image: Image.Image | None, self_ids: Sequence[int]) -> Features:
        """Local features of a query, made as the index's were: an indexed image's cached ones, else extracted."""
        cache = self.features
        if image is None and self_ids:
            feats = cache.get(self_ids[0])
            if feats is not None:
                return feats
        if image is None:
            if isinstance(query, Image.Image):
                image = query
            elif isinstance(query, np.ndarray):
                raise LookalikeError("re-ranking needs the query image, not only its vector")
            else:
                image = decode(read_file(query), str(query), target=cache.conf.resolution)[0]
        return extract(image, cache.conf)

    def rerank(self, query: Features, matches: list[Match], verify: MatchConf | None = None) -> list[Match]:
        """``matches`` re-ordered by geometric verification against ``query``: verified (inliers ≥ min_inliers)
        first by inliers, ties and the rest by cosine; ranks renumbered, inliers filled in."""
        conf = verify or MatchConf(keypoints=RERANK_KEYPOINTS)
        verdicts = verify_against(query, self.features, [m.id for m in matches], conf)
        for m, v in zip(matches, verdicts, strict=True):
            m.inliers = None if v.status == UNKNOWN else v.inliers
        good = {m.id for m, v in zip(matches, verdicts, strict=True) if v.verified}
        ordered = sorted(matches, key=lambda m: (m.id not in good, -(m.inliers or 0) if m.id in good else 0, -m.score))
        for r, m in enumerate(ordered, start=1):
            m.rank = r
        return ordered

    def orientation_vectors(self, *, progress: bool = False, notes: list[str] | None = None) -> np.ndarray:
        """(N, 4, dim) vectors of every image turned 90°, 180°, 270° and mirrored, for finding turned copies
        (``near_duplicates(..., turned=...)``): four more model passes per image than indexing, done once and
        cached in the index folder by content hash (see ``lookalike.cluster.orientations``)."""
        from lookalike.cluster.orientations import orientation_vectors

        describer = self.describer
        return orientation_vectors(
            self.store, describer.describe_images, describer.resolution, progress=progress, notes=notes
        )

    def match_pair(self, a: int, b: int, verify: MatchConf | None = None) -> dict[str, Any]:
        """The verdict on two indexed images and their tentative matches in each image's own pixels (for drawing):
        ``matches`` rows are (xa, ya, xb, yb, inlier)."""
        n = len(self)
        for i in (a, b):
            if not 0 <= i < n:
                raise LookalikeError(f"no image with id {i}; ids run from 0 to {n - 1}")
        conf = verify or MatchConf()
        cache = self.features
        cache.ensure([a, b])
        fa, fb = cache.get(a), cache.get(b)
        widths, heights = self._view("sizes", lambda: (self.store.column("width"), self.store.column("height")))
        out: dict[str, Any] = {
            "a": a,
            "b": b,
            "size_a": [widths[a], heights[a]],
            "size_b": [widths[b], heights[b]],
            "matches": [],
        }
        if fa is None or fb is None or not fa.usable or not fb.usable:
            return {**out, "status": UNKNOWN, "inliers": 0, "tentative": 0}
        pa, pb, mask = match_points(fa, fb, conf)
        sa = np.array([widths[a] / fa.size[0], heights[a] / fa.size[1]], np.float32)
        sb = np.array([widths[b] / fb.size[0], heights[b] / fb.size[1]], np.float32)
        rows = np.concatenate([pa * sa, pb * sb, mask[:, None]], axis=1) if len(pa) else np.zeros((0, 5))
        verdict = judge(int(mask.sum()), len(pa), conf)
        return {
            **out,
            "status": verdict.status,
            "inliers": verdict.inliers,
            "tentative": verdict.matches,
            "matches": [[round(float(v), 1) for v in r[:4]] + [bool(r[4])] for r in rows],
        }

    def pairs(
        self,
        num_matched: int = 10,
        *,
        min_score: float | None = None,
        verify: MatchConf | bool = False,
        workers: int | None = None,
        progress: bool = False,
        notes: list[str] | None = None,
    ) -> list[VerifiedPair] | list[tuple[str, str, float]]:
        """hloc-style retrieval pairs (name, name, cosine); with ``verify``, every candidate pair verified
        geometrically (features computed first where missing), as :class:`~lookalike.verify.VerifiedPair`."""
        if not verify:
            from lookalike.cluster import similar_pairs

            return similar_pairs(self.vectors, self.names, num_matched, min_score)
        if num_matched < 1:
            raise ConfigError(f"num_matched must be at least 1, got {num_matched}", setting="num_matched")
        conf = MatchConf() if verify is True else verify
        return verified_pairs(
            self.store, num_matched, min_score=min_score, conf=conf, workers=workers, progress=progress, notes=notes
        )

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
        preds = classify_vectors(self, vectors, method=method, k=k, exclude=exclude)
        for q, p in zip(queries, preds, strict=True):
            p.path = str(q) if isinstance(q, (str, os.PathLike)) else None
        return Predictions(preds)

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
            "ignored": meta.get("discovery", {}).get("ignored", {}),
            "left_out": [{"path": p, "reason": r} for p, r in meta.get("discovery", {}).get("left_out", [])],
            "interrupted_parts": self.store.pending_parts(),
            "vectors": self.store.vector_type,
            "precision": meta.get("precision", "fp32"),
            "calibration": meta.get("calibration"),  # int8: "samples" or "photos"; older int8 indexes: photos
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


def rel_name(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` with forward slashes: the name an index keeps for it."""
    return path.relative_to(root).as_posix()


def describer_of(store: Store, *, runtime: str = "auto") -> Describer:
    """The exact describer an index was made with; refused if this machine's weights for its model differ."""
    describer = Describer.from_config(IndexConfig.from_meta(store.meta), folder=store.path, runtime=runtime)
    stored, found = store.meta["model"], describer.model.config()
    if found != stored:
        raise IndexMismatchError(
            f"{store.path} was built with {stored['name']} weights {stored.get('weights', '?')[:12]}, but this "
            f"machine has {found.get('weights', '?')[:12]}; rebuild the index to use them"
        )
    if stored.get("post") and describer.post is None:
        raise LookalikeError(f"{store.path}: PCA-whitening file missing; rebuild the index")
    if describer.needs_calibration and (len(store) or store.pending_parts()):
        # these vectors came from the int8 model that was in the folder: another calibration would not match them
        raise LookalikeError(f"{store.path}: the int8 model {INT8_FILE} is missing; rebuild the index")
    return describer
