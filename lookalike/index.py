"""The :class:`Index`: the read side of an index of a photo folder — open, search, classify, info — and the view
tasks read (:class:`lookalike.view.IndexView`).

This is the library API the CLI and the server call. ``Index.build`` and ``Index.update`` run the write pipeline in
:mod:`lookalike.build` (incremental: only new or changed files are embedded, deleted ones dropped; resumable:
checkpoints every few hundred images, a killed run's work is picked up by the next run). Queries come through
:mod:`lookalike.query`; re-ranking and pairs live in :mod:`lookalike.verify.rerank`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from PIL import Image

from lookalike import query as query_path
from lookalike.build import describer_of
from lookalike.config import IndexConfig, RunOptions
from lookalike.display import Matches, Predictions, matches_html
from lookalike.embed import Describer
from lookalike.errors import ConfigError, ImageError, LookalikeError
from lookalike.filters import SCORE_DECIMALS, FilterColumns, SearchFilter
from lookalike.images import read_file
from lookalike.query import PreparedQuery, Query
from lookalike.search import VectorSearch, open_searcher, vectors_fingerprint
from lookalike.store import INDEX_DIRNAME, Store
from lookalike.view import IndexInfo

if TYPE_CHECKING:  # the write pipeline and local features load when used: a one-off search needs neither
    from lookalike.build import BuildReport
    from lookalike.verify import FeatureCache, FeatureConf, FeatureEngine, Features, MatchConf, VerifiedPair

__all__ = ["MODES", "Index", "Match", "SearchResult", "describer_of"]

MODES = ("all", "same-class", "other-classes")


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
    folded: list[int] | None = None  # collapsed searches: ids of the copies of this photo folded into it

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
        return matches_html(self.matches, self.note or "")


class Index:
    """An opened index: the facade the CLI, the server and users call (open, build/update, search, classify, info).

    It holds the store and the describer that made its vectors, and caches views derived from the stored table
    (names, labels, hashes, the searcher). Tasks take it as an :class:`~lookalike.view.IndexView`: they read what the
    view names and never the store or its header.
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
        """Index (or bring up to date) every image below ``photos`` (the steps: :mod:`lookalike.build`).

        ``settings`` are fields of :class:`~lookalike.config.IndexConfig` (model, pooling, resolution, pca, vocab,
        weights, vectors, labels) and of :class:`~lookalike.config.RunOptions` (batch_size, workers, progress,
        rebuild, engine, ann, ...), or pass the two objects. On an existing index, settings left out follow what
        the index was built with; one that would change its vectors is refused, naming the setting and both values
        (``rebuild=True`` re-embeds everything instead).
        """
        from lookalike import build

        built = build.main(photos, index_dir, config=config, options=options, **settings)
        index = cls(built.store, runtime=built.options.runtime)
        index._describer = built.describer
        index.report = built.report
        return index

    def update(self, options: RunOptions | None = None) -> BuildReport:
        """Bring the index up to date with its photo folder: embed new and changed files, drop deleted ones, refresh
        the ANN index (see :func:`lookalike.build.update`). The caller holds the index's :meth:`lock`."""
        from lookalike import build

        options = options or RunOptions(runtime=self.runtime)
        report = build.update(self.store, self.describer, options)
        self._views.clear()
        return report

    def refit_vocabulary(
        self,
        clusters: int = 32,
        *,
        soft: bool = False,
        out: str | os.PathLike[str] | None = None,
        progress: bool = False,
    ) -> Index:
        """A new VLAD vocabulary from the index's own images, then every image re-described with it. The index keeps
        its other settings; its PCA-whitening (if any) is refitted too, being fitted on vectors of the old one."""
        wanted = dataclasses.replace(self.store.config, pooling={"name": "vlad", "clusters": clusters, "soft": soft})
        options = RunOptions(rebuild=True, progress=progress, runtime=self.runtime)
        new = Index.build(self.root, self.store.path, config=wanted, options=options)
        if out is not None:
            new.describer.pooling.save(out)  # type: ignore[attr-defined]
        return new

    # --- properties ----------------------------------------------------------------------------------------------

    @property
    def config(self) -> IndexConfig:
        """The recipe of this index's vectors, as its ``meta.json`` records it."""
        return self.store.config

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

    # --- the read-only view tasks take (lookalike.view.IndexView) ---------------------------------------------------

    @property
    def folder(self) -> Path:
        """The index folder, where tasks keep their own files (head, clusters, map, journals)."""
        return self.store.path

    @property
    def hashes(self) -> list[str]:
        """Content hashes, one per image."""
        return self._view("hashes", lambda: self.store.column("hash"))

    @property
    def dim(self) -> int:
        return self.store.dim

    @property
    def created(self) -> str | None:
        return self.store.created

    @property
    def commit(self) -> int:  # the header's generation when opened: one more on every update
        return self.store.commit_id

    def share_model(self, other: Index) -> None:  # a newer commit of one build and recipe: its model, loaded once
        if other.created == self.created and other.recipe() == self.recipe() and other._describer is not None:
            self._describer = other._describer

    @property
    def version(self) -> int:
        """Changes whenever the index commits (a commit replaces the table object): the key of derived caches."""
        return id(self.store.table)

    def recipe(self) -> dict[str, Any]:
        """How the vectors were made: model, pooling, resolution and post-transform, as the header records them."""
        return self.store.recipe(("model", "pooling", "resolution", "post"))

    def vectors_fingerprint(self) -> str:
        return vectors_fingerprint(self.store)

    def column(self, name: str) -> list[Any]:
        return self.store.column(name)

    def metadata(self) -> pa.Table:
        return self.store.metadata()

    def feature_cache(self, conf: FeatureConf | None = None, engine: FeatureEngine | None = None) -> FeatureCache:
        """The local features of the indexed images with ``conf`` (None: as stored), made on ``engine`` if given."""
        from lookalike.verify import FeatureCache

        return self.features if conf is None and engine is None else FeatureCache(self.store, conf, engine=engine)

    # --- the writes the dedupe actions make (lookalike.view.IndexWriter) ----------------------------------------

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """The index folder's writer lock (one writer at a time)."""
        return self.store.lock()

    def follow_files(self, gone: set[str], linked: Sequence[tuple[str, str]] | None = None) -> bool:
        """Rows follow files the dedupe actions moved or linked (see :func:`lookalike.build.follow_files`)."""
        from lookalike import build

        changed = build.follow_files(self.store, gone, linked)
        self._views.clear()
        return changed

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

    def id_of(self, name: str) -> int | None:
        """The id of the image with this name (path relative to the photo folder), if it is indexed."""
        return self._view("by_name", lambda: {n: i for i, n in enumerate(self.names)}).get(name)

    def prepare_queries(self, queries: Sequence[Query]) -> list[PreparedQuery]:
        """Each query read, decoded and embedded once, with its self ids (:func:`lookalike.query.prepare`)."""
        return query_path.prepare(self, queries)

    def prepare(self, queries: Sequence[Query]) -> tuple[np.ndarray, list[list[int]]]:
        """Query vectors, described as the index was, and for each query the ids of index entries that *are* it
        (same file, or byte-identical content). Each file is read once: the bytes decoded are the bytes hashed."""
        return query_path.stacked(self.prepare_queries(queries), self.dim)

    def embed(self, queries: Sequence[Query]) -> np.ndarray:
        """Vectors for query images (paths, PIL images) or pass-through vectors, described as the index was."""
        return self.prepare(queries)[0]

    def ids_of(self, query: Query) -> list[int]:
        """Ids of index entries that *are* this query (same file, or byte-identical content)."""
        if isinstance(query, (Image.Image, np.ndarray)):
            return []
        try:
            return query_path.self_ids(self, Path(query), read_file(query))
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
        collapse: bool = False,
    ) -> Matches:
        """The k images most similar to ``query``, best first (the query itself is never its own match), as thumbnails.
        ``where`` restricts the images searched (capture time, place, path, label) and the lowest score returned;
        ``rerank`` > 0 re-orders the top by geometric verification; ``collapse`` folds copies (:meth:`search_many`)."""
        found = self.search_many([query], k, mode=mode, label=label, where=where, rerank=rerank, collapse=collapse)
        return Matches(found[0].matches)

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
        collapse: bool = False,
    ) -> list[SearchResult]:
        """Search for several queries; ``exclude`` adds, per query, ids that are the query itself (e.g. an indexed
        image given by its vector) to those found from its file. ``where`` filters inside the search: k matches
        come back whenever k images pass it, and when none can the result says why in ``note``. ``rerank``: the
        top ``rerank`` by cosine are verified geometrically against the query and re-ordered, verified ones first by
        inliers (ties by cosine), then the rest by cosine; each match reports its inliers (local features are
        computed and cached where missing). A query given as a vector needs its image in ``query_images`` (or must
        be indexed, named in ``exclude``). ``collapse``: copies among the hits fold into their keeper's match,
        listed in its ``folded`` (``lookalike.dedupe.collapse``)."""
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
        labels_arr = np.array([lab or "" for lab in labels], dtype=object) if mode != "all" else None
        filtered, why = self.allowed_by(where)
        shown = where.to_dict() if where else None
        results = []
        for qi, q in enumerate(map(query_path.source, queries)):
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
            depth = max(k * 4 if collapse else k, rerank)
            scores, ids = self.searcher.search(vectors[qi : qi + 1], depth, allowed=allowed, exclude=[exclude[qi]])
            found = ids[0] >= 0
            if where is not None and where.min_score is not None:
                reported = np.array([round(float(s), SCORE_DECIMALS) for s in scores[0]])  # as results show them
                keep = found & (reported >= where.min_score)
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
                matches = self.rerank(query_path.local_features(self.features, q, image, exclude[qi]), matches, verify)
            if collapse:  # imported only then (it needs scipy)
                from lookalike.dedupe.collapse import collapse_matches

                matches = collapse_matches(self, matches)
            matches = matches[:k]
            if not matches and note is None and where:
                note = "no image other than the query passes the filter"
            results.append(SearchResult(qname, matches, mode, qclass, source, shown, note))
        return results

    # --- geometric verification ---------------------------------------------------------------------------------

    @property
    def features(self) -> FeatureCache:
        """The local features of the indexed images (computed on demand, cached in the index folder)."""
        from lookalike.verify import FeatureCache

        return self._view("features", lambda: FeatureCache(self.store))

    def local_features(
        self,
        *,
        max_keypoints: int | None = None,
        resolution: int | None = None,
        decode: str | None = None,
        workers: int | None = None,
        progress: bool = False,
        engine: FeatureEngine | None = None,
    ) -> FeatureCache:
        """Compute and cache the local features of every indexed image that has none yet (on ``engine`` if given).

        Settings left out follow the features already stored (else the defaults); changing one recomputes all."""
        from lookalike.verify import FeatureCache, FeatureConf
        from lookalike.verify.rerank import RERANK_KEYPOINTS

        stored = self.features.conf
        conf = FeatureConf(
            stored.max_keypoints if max_keypoints is None else max_keypoints,
            stored.resolution if resolution is None else resolution,
            stored.decode if decode is None else decode,
        )
        cache = self.features if conf == stored else FeatureCache(self.store, conf)
        if cache is not self.features:
            self._views[("features", id(self.store.table))] = cache
        with cache.using(engine):
            cache.ensure(workers=workers, progress=progress)
        cache.prune()
        cache.pack(RERANK_KEYPOINTS)  # re-ranking's memory-mapped store, refreshed when much has changed
        return cache

    def rerank(self, query: Features, matches: list[Match], verify: MatchConf | None = None) -> list[Match]:
        """``matches`` re-ordered by geometric verification against ``query`` (:func:`lookalike.verify.rerank.rerank`)."""
        from lookalike.verify import rerank as reranking

        return reranking.rerank(query, matches, self.features, verify)

    def orientation_vectors(self, *, progress: bool = False, notes: list[str] | None = None) -> np.ndarray:
        """(N, 4, dim) vectors of every image turned 90°, 180°, 270° and mirrored, for finding turned copies
        (``near_duplicates(..., turned=...)``): four more model passes per image than indexing, done once and
        cached in the index folder by content hash (see ``lookalike.dedupe.orientations``)."""
        from lookalike.dedupe.orientations import orientation_vectors

        d = self.describer
        return orientation_vectors(self.store, d.describe_images, d.decode_size, progress=progress, notes=notes)

    def match_pair(self, a: int, b: int, verify: MatchConf | None = None) -> dict[str, Any]:
        """The verdict on two indexed images and their tentative matches in each image's own pixels (for drawing):
        ``matches`` rows are (xa, ya, xb, yb, inlier)."""
        from lookalike.verify import rerank as reranking

        sizes = self._view("sizes", lambda: (self.store.column("width"), self.store.column("height")))
        return reranking.match_pair(self.features, sizes, a, b, verify)

    def pairs(
        self,
        num_matched: int = 10,
        *,
        min_score: float | None = None,
        verify: MatchConf | bool = False,
        workers: int | None = None,
        progress: bool = False,
        notes: list[str] | None = None,
        engine: FeatureEngine | None = None,
    ) -> list[VerifiedPair]:
        """hloc-style retrieval pairs, one type either way (:class:`~lookalike.verify.VerifiedPair`, which unpacks as
        ``name_a, name_b, score``); with ``verify``, every candidate pair verified geometrically."""
        from lookalike.verify import rerank as reranking

        return reranking.pairs(
            self.store, num_matched, min_score=min_score, verify=verify, workers=workers, progress=progress, notes=notes,
            engine=engine,
        )  # fmt: skip

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
        return Predictions.of(preds, [query_path.source(q) for q in queries])

    # --- summary -------------------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """What ``lookalike info`` shows, as a dict (typed: :meth:`summary`)."""
        return self.summary().to_dict()

    def summary(self) -> IndexInfo:
        """What the index holds and how it was made (:class:`~lookalike.view.IndexInfo`)."""
        from lookalike.classify import head_summary

        store = self.store
        recipe = store.recipe(("pooling", "resolution", "dim", "post", "vocab", "created", "updated"))
        counts = Counter(lab for lab in self.labels if lab is not None)
        discovery = store.discovery
        return IndexInfo(
            index=str(store.path),
            root=str(self.root),
            images=len(self),
            model=store.model_name,
            **{k: recipe[k] for k in ("pooling", "resolution", "dim", "post", "vocab")},
            labels=dict(sorted(counts.items())),
            unlabelled=sum(1 for lab in self.labels if lab is None),
            gps_tagged=int(sum(1 for v in store.column("gps_lat") if v is not None)),
            skipped=[{"path": s["path"], "reason": s["reason"]} for s in store.skipped],
            ignored=discovery.get("ignored", {}),
            left_out=[{"path": p, "reason": r} for p, r in discovery.get("left_out", [])],
            interrupted_parts=store.pending_parts(),
            vectors=store.vector_type,
            precision=store.precision,
            calibration=store.calibration,  # int8: "samples" or "photos"; older int8 indexes: photos
            search=store.ann or {"kind": "auto", "index": "flat", "exact": True},
            classifier=head_summary(self),
            disk_bytes=store.disk_bytes(),
            created=recipe["created"],
            updated=recipe["updated"],
        )
