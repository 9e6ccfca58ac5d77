"""The index-level entry points: cluster an index (graph method or HDBSCAN), save and load the result, suggest
thresholds. ``ClusterResult`` is what a run produces and what ``clusters.json`` holds."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lookalike.cluster.gps import gps_centre, valid_gps
from lookalike.cluster.graph import GraphParams, Suggestion, graph_labels, hdbscan_labels, suggest_thresholds
from lookalike.cluster.labels import label_metrics, members, relabel
from lookalike.dedupe.decisions import Decisions
from lookalike.errors import ConfigError, LookalikeError
from lookalike.io import atomic_write_json
from lookalike.search import knn_graph
from lookalike.store import CLUSTERS_FILE
from lookalike.verify import MATCH, NO_MATCH, FeatureConf, FeatureEngine, MatchConf, verify_pairs

if TYPE_CHECKING:
    from lookalike.view import IndexView


@dataclass
class ClusterResult:
    """Labels over the index's images plus everything a person or the server shows about them."""

    labels: np.ndarray
    names: list[str]
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    lat: np.ndarray | None = None
    lon: np.ndarray | None = None
    unverifiable: list[str] = field(default_factory=list)
    root: str | None = None  # the photo folder ``names`` are relative to (for pictures)

    def _repr_html_(self) -> str:
        from lookalike.display import cluster_html

        return cluster_html(self)

    def clusters(self) -> list[dict[str, Any]]:
        out = []
        groups = members(self.labels)
        for c in range(int(self.labels.max(initial=-1)) + 1):
            inside = groups.get(c, np.array([], dtype=np.int64))
            gps = None
            if self.lat is not None and self.lon is not None:
                centre = gps_centre(self.lat[inside], self.lon[inside])
                if centre is not None:
                    tagged = int(np.isfinite(self.lat[inside]).sum())
                    gps = {"lat": round(centre[0], 7), "lon": round(centre[1], 7), "count": tagged}
            out.append({"id": c + 1, "size": len(inside), "paths": [self.names[i] for i in inside], "gps": gps})
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "clusters": self.clusters(),
            "noise": [self.names[i] for i in np.flatnonzero(self.labels < 0)],
            "metrics": self.metrics,
            "method": self.method,
            "params": self.params,
            "notes": self.notes,
            "unverifiable": self.unverifiable,
        }


def _basic_metrics(labels: np.ndarray, seconds: float) -> dict[str, Any]:
    return {
        "images": len(labels),
        "clusters": int(labels.max(initial=-1)) + 1,
        "clustered": int((labels >= 0).sum()),
        "noise": int((labels < 0).sum()),
        "seconds": round(seconds, 3),
    }


def _index_gps(index: IndexView, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    cols = index.metadata().column_names
    if "gps_lat" not in cols or "gps_lon" not in cols:
        n = len(index)
        return np.full(n, np.nan), np.full(n, np.nan)
    lat, lon, rejected = valid_gps(index.column("gps_lat"), index.column("gps_lon"))
    if rejected:
        notes.append(f"{rejected} photo(s) with malformed or out-of-range GPS ignored")
    return lat, lon


def _check_size(index: IndexView) -> None:
    if len(index) < 2:
        raise LookalikeError(
            f"the index has {len(index)} image(s); clustering needs at least 2 — add photos and run `lookalike index`"
        )


def suggest(index: IndexView, k: int = 10) -> Suggestion:
    """The similarity distribution of the index's kNN graph and the thresholds the graph method would use."""
    _check_size(index)
    vectors = index.vectors
    return suggest_thresholds(knn_graph(vectors, k)[1], vectors)


def cluster_index(
    index: IndexView,
    method: str = "graph",
    *,
    params: GraphParams | None = None,
    hdbscan_size: int = 5,
    pca: int | None = None,
    save: bool = True,
    match: MatchConf | bool | None = None,
    features: FeatureConf | None = None,
    workers: int | None = None,
    progress: bool = False,
    engine: FeatureEngine | None = None,
    skip_decided: bool = False,
) -> ClusterResult:
    """Cluster an index's images; saves the result as ``clusters.json`` in the index folder (see load_clusters).

    ``match`` (True, or a :class:`~lookalike.verify.MatchConf`): the graph method's kNN pairs are verified
    geometrically (local features computed and cached first where missing) and the verdicts decide the edges; the
    cosine only proposes candidates. Images too flat to verify keep the cosine rules and are listed in
    ``unverifiable``. ``engine``: where features are extracted and pairs verified (None: this machine's threads;
    the verdicts are the same). ``skip_decided``: verify only the pairs the cosine leaves undecided (see
    :func:`decided_by_cosine`), and extract features only for the photos in them."""
    if method not in ("graph", "hdbscan"):
        raise ConfigError(f"clustering method must be 'graph' or 'hdbscan', got {method!r}")
    if match and method != "graph":
        raise ConfigError("geometric verification works with the graph method, not hdbscan", setting="match")
    match_conf = MatchConf() if match is True else match or None
    _check_size(index)
    params = params or GraphParams()
    started = time.perf_counter()
    notes: list[str] = []
    lat, lon = _index_gps(index, notes)
    vectors = index.vectors
    used: dict[str, Any]
    if method == "graph":
        ids, scores = knn_graph(vectors, params.k)
        s = suggest_thresholds(scores, vectors)
        strong = s.strong if params.strong is None else params.strong
        weak = min(s.weak, strong) if params.weak is None else params.weak
        if params.strong is None or params.weak is None:
            notes.append(f"thresholds from the similarity distribution: strong {strong:.4f}, weak {weak:.4f}")
        p = replace(params, strong=strong, weak=weak)
        verdict, unverifiable = None, []
        if match_conf is not None:
            decided = Decided.of(strong, weak) if skip_decided else None
            verdict, unverifiable = _verdicts(
                index, ids, scores, match_conf, features, workers, progress, notes, engine=engine, decided=decided
            )
        separate = separated_pairs(index, ids, notes)
        labels = graph_labels(ids, scores, p, lat=lat, lon=lon, notes=notes, verdict=verdict, separate=separate)
        used = {"method": "graph", **p.to_dict()}
        if match_conf is not None:
            used["verify"] = match_conf.to_dict()
    else:
        if len(Decisions.load(index.folder)):
            notes.append('hdbscan has no pairwise edges: "not duplicates" decisions are used by the graph method only')
        labels = relabel(
            hdbscan_labels(vectors, hdbscan_size, second_min_size=max(2, params.min_size), pca=pca), params.min_size
        )
        used = {"method": "hdbscan", "hdbscan_size": hdbscan_size, "min_size": params.min_size, "pca": pca}
    metrics = _basic_metrics(labels, time.perf_counter() - started)
    metrics.update(label_metrics(labels, index.labels))
    result = ClusterResult(labels, index.names, method, used, notes, metrics, lat, lon)
    result.root = str(index.root)
    if match_conf is not None:
        result.unverifiable = unverifiable
    if save:
        atomic_write_json(index.folder / CLUSTERS_FILE, result.to_dict())
    return result


def separated_pairs(index: IndexView, ids: np.ndarray, notes: list[str] | None = None) -> np.ndarray | None:
    """The kNN entries (same shape as ``ids``) that pair two photos a person marked "not duplicates" (by content
    hash, see :mod:`lookalike.dedupe.decisions`), or None when there are none."""
    decisions = Decisions.load(index.folder)
    if not len(decisions):
        return None
    hashes = index.hashes
    marked = {h for d in decisions.items if d["kind"] == "not-duplicates" for h in d["hashes"]}
    rows = [i for i, h in enumerate(hashes) if h in marked]
    if not rows:
        return None
    separate = np.zeros(ids.shape, bool)
    for i in rows:
        for c, j in enumerate(ids[i]):
            if j >= 0 and decisions.separated(hashes[i], hashes[int(j)]):
                separate[i, c] = True
    if notes is not None and separate.any():
        pairs = {tuple(sorted((i, int(ids[i, c])))) for i, c in zip(*np.nonzero(separate), strict=True)}
        notes.append(f'{len(pairs)} neighbour pair(s) marked "not duplicates": weak edges only')
    return separate if separate.any() else None


@dataclass(frozen=True)
class Decided:
    """Cosines at which a kNN pair's verdict is taken as given instead of verified: at or above ``copy`` a
    near-copy (verified), below ``far`` far below the weak threshold (refuted). Set from the graph's thresholds:
    ``far`` = weak − FAR_BELOW·(strong − weak), ``copy`` = max(COPY, strong)."""

    far: float
    copy: float

    @classmethod
    def of(cls, strong: float, weak: float) -> Decided:
        return cls(weak - FAR_BELOW * (strong - weak), max(COPY, strong))


FAR_BELOW = 2.0
COPY = 0.97


def _verdicts(
    index: IndexView,
    ids: np.ndarray,
    scores: np.ndarray,
    conf: MatchConf,
    features: FeatureConf | None,
    workers: int | None,
    progress: bool,
    notes: list[str],
    *,
    engine: FeatureEngine | None = None,
    decided: Decided | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Verify each unordered kNN pair once (with ``decided``, only those whose cosine decides nothing); the verdicts
    laid out like ``ids`` (1 verified, -1 refuted, 0 unknown), and the names of images whose pairs could not be
    verified (too few keypoints, unreadable)."""
    n, k = ids.shape
    i = np.repeat(np.arange(n), k)
    j = ids.ravel()
    ok = j >= 0
    lo, hi = np.minimum(i, j)[ok], np.maximum(i, j)[ok]
    pairs, first, back = np.unique(np.stack([lo, hi], axis=1), axis=0, return_index=True, return_inverse=True)
    cosine = scores.ravel()[ok][first]
    code = np.zeros(len(pairs), np.int8)
    todo = np.ones(len(pairs), bool)
    if decided is not None:
        code[cosine >= decided.copy], code[cosine < decided.far] = 1, -1
        todo = code == 0
        photos = len(np.unique(pairs[todo])) if todo.any() else 0
        notes.append(
            f"decided by cosine, not verified: {int((code > 0).sum())} near-copy pair(s) (≥ {decided.copy:.4f}), "
            f"{int((code < 0).sum())} pair(s) far below the weak threshold (< {decided.far:.4f}); local features "
            f"for {photos} of {n} photos"
        )
    cache = index.feature_cache(features, engine)
    found = verify_pairs(cache, pairs[todo, 0], pairs[todo, 1], conf, workers=workers, progress=progress)
    code[todo] = [1 if v.status == MATCH else -1 if v.status == NO_MATCH else 0 for v in found]
    verdict = np.zeros(n * k, np.int8)
    verdict[np.flatnonzero(ok)] = code[back.ravel()]
    notes.extend(cache.notes)
    flat = cache.unusable()
    names = index.names
    notes.append(
        f"geometric verification of {len(pairs)} kNN pairs: {int((code > 0).sum())} verified, {int((code < 0).sum())} "
        f"refuted, {int((code == 0).sum())} unknown"
        + (f"; {len(flat)} image(s) too flat or small to verify keep the cosine rules" if flat else "")
    )
    return verdict.reshape(n, k), [names[x] for x in flat]


def load_clusters(index: IndexView | str | os.PathLike[str]) -> dict[str, Any] | None:
    """The last saved ``lookalike cluster`` result of an index (an Index or its folder), or None if there is none."""
    folder = Path(index) if isinstance(index, (str, os.PathLike)) else index.folder
    path = folder / CLUSTERS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LookalikeError(f"{path} is unreadable ({exc}); run `lookalike cluster` again") from None
