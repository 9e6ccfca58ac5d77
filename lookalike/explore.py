"""A map of the collection: every image as a point in 2-D, placed so that look-alikes sit together.

``lookalike map`` lays out all vectors (UMAP by default; t-SNE or PCA on request) and stores the layout in the
index folder (``map.npz``) with a fingerprint of the vectors it was made from: a map whose index has changed since is
reported stale and never shown as if current. The web page's Map tab draws it, coloured by label, cluster, folder,
capture time or uniqueness (the colour codes are derived from the index when served, so relabelling by moving files,
a new ``lookalike cluster`` or ``lookalike unique`` needs no new layout); labelled images the rest of the data contradicts (``lookalike suspects``)
are stored with the map so they can be highlighted.

Why UMAP: at 100,000 images t-SNE (scikit-learn's Barnes-Hut) takes tens of minutes on two cores, while UMAP on a
50-d PCA projection lays them out in about a minute and keeps both neighbourhoods and the arrangement of groups;
PCA alone is instant but crowds everything into one blob (BENCHMARKS.md, explore).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from lookalike.errors import ConfigError, LookalikeError
from lookalike.io import atomic_write, now_iso
from lookalike.store import MAP_FILE

if TYPE_CHECKING:
    from lookalike.view import IndexView

METHODS = ("umap", "tsne", "pca")
COLORS = ("label", "cluster", "folder", "time", "uniqueness")
#: Colourings drawn on a ramp of ``TIME_STEPS`` steps (the others are categories, one colour per legend entry).
RAMPS = ("time", "uniqueness")
#: Suspects come from a cross-validated logistic regression over every labelled image; above this many it would
#: take longer than the layout itself, so larger maps are stored without them (``lookalike suspects`` still works).
SUSPECTS_LIMIT = 20_000
#: Capture times are coloured on a ramp of this many steps (code 0 = no time).
TIME_STEPS = 255
#: A ramp colouring by stored uniqueness (``lookalike unique``), same steps as time: none until it has been computed.
UNIQUENESS_COLOR = "uniqueness"


def layout_2d(vectors: np.ndarray, method: str = "umap", *, seed: int = 0, pca_dims: int = 50) -> np.ndarray:
    """(N, 2) float32 coordinates scaled into [0, 1] (aspect kept), from L2-normalised vectors.

    Vectors are first projected to ``pca_dims`` dimensions by PCA (for UMAP and t-SNE): the neighbour search inside
    both then works on 50 numbers per image instead of 1,280, and the directions PCA drops are mostly noise.
    """
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}", setting="method")
    x = np.asarray(vectors, dtype=np.float32)
    n = len(x)
    if n < 3:
        raise LookalikeError(f"a map needs at least 3 images, the index has {n}")
    from sklearn.decomposition import PCA

    dims = 2 if method == "pca" else min(pca_dims, x.shape[1], n - 1)
    reduced = PCA(n_components=dims, random_state=seed, svd_solver="randomized" if n > 2000 else "auto")
    y = reduced.fit_transform(x).astype(np.float32)
    if method == "umap":
        import warnings

        import umap

        neighbours = max(2, min(15, n - 1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # n_jobs/random_state and numba notices are not for the user
            y = umap.UMAP(
                n_neighbors=neighbours, min_dist=0.1, metric="cosine", random_state=seed, n_jobs=1, low_memory=True
            ).fit_transform(y)
    elif method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
        y = TSNE(2, perplexity=perplexity, init="pca", random_state=seed, metric="cosine").fit_transform(y)
    y = np.asarray(y, dtype=np.float64)
    lo, hi = y.min(axis=0), y.max(axis=0)
    span = float(max(hi - lo)) or 1.0
    y = (y - lo) / span + (1.0 - (hi - lo) / span) / 2  # the longer side spans [0, 1], the other is centred
    return y.astype(np.float32)


@dataclass
class CollectionMap:
    """A stored layout: one (x, y) per image in index order, how it was made and of which vectors."""

    xy: np.ndarray
    method: str
    fingerprint: str
    color: str = "label"
    suspects: list[int] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Any) -> None:
        header = {
            "method": self.method,
            "fingerprint": self.fingerprint,
            "color": self.color,
            **self.info,
        }

        def write(tmp: Any) -> None:
            with open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    xy=self.xy.astype(np.float32),
                    suspects=np.asarray(self.suspects, np.int64),
                    header=np.frombuffer(json.dumps(header).encode(), np.uint8),
                )

        atomic_write(path, write)

    @classmethod
    def load(cls, path: Any) -> CollectionMap:
        try:
            with np.load(path) as z:
                header = json.loads(bytes(z["header"]).decode())
                xy, suspects = z["xy"], z["suspects"].tolist()
        except (OSError, ValueError, KeyError) as exc:
            raise LookalikeError(f"{path} is unreadable ({exc}); run `lookalike map` again") from None
        info = {k: v for k, v in header.items() if k not in ("method", "fingerprint", "color")}
        return cls(xy, header["method"], header["fingerprint"], header.get("color", "label"), suspects, info)


def load_map(index: IndexView) -> tuple[CollectionMap | None, str | None]:
    """The stored map and None, or None and why there is none to show (missing, or made from other vectors)."""
    path = index.folder / MAP_FILE
    if not path.is_file():
        return None, "this index has no map yet: run `lookalike map`"
    found = CollectionMap.load(path)
    if found.fingerprint != index.vectors_fingerprint() or len(found.xy) != len(index):
        return None, "the map is out of date (the index changed since it was made): run `lookalike map` again"
    return found, None


def compute_map(
    index: IndexView,
    method: str = "umap",
    *,
    color: str = "label",
    seed: int = 0,
    pca_dims: int = 50,
    suspects: bool | None = None,
    force: bool = False,
) -> CollectionMap:
    """Lay out the index's vectors and store the map; an up-to-date map made the same way is returned as is.

    ``suspects``: also store the labelled images whose label the rest contradicts (None: when the index has two or
    more classes and at most ``SUSPECTS_LIMIT`` labelled images).
    """
    if color not in COLORS:
        raise ConfigError(f"color must be one of {', '.join(COLORS)}, got {color!r}", setting="color")
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}", setting="method")
    current, _ = load_map(index) if (index.folder / MAP_FILE).is_file() else (None, None)
    if current is not None and not force and current.method == method and current.info.get("seed") == seed:
        if current.color != color:
            current.color = color
            current.save(index.folder / MAP_FILE)
        return current
    started = time.perf_counter()
    xy = layout_2d(index.vectors, method, seed=seed, pca_dims=pca_dims)
    seconds = time.perf_counter() - started
    labelled = sum(1 for lab in index.labels if lab is not None)
    if suspects is None:
        suspects = len(index.classes) >= 2 and labelled <= SUSPECTS_LIMIT
    flagged: list[int] = []
    if suspects:
        from lookalike.evaluate import index_suspects

        by_path = {str(p): i for i, p in enumerate(index.paths)}
        flagged = sorted(by_path[s["path"]] for s in index_suspects(index))
    info = {"seed": seed, "pca_dims": pca_dims, "seconds": round(seconds, 2), "created": now_iso(), "count": len(xy)}
    info["suspects_checked"] = bool(suspects)
    result = CollectionMap(xy, method, index.vectors_fingerprint(), color, flagged, info)
    result.save(index.folder / MAP_FILE)
    return result


def color_codes(index: IndexView, color: str, clusters: dict[str, Any] | None = None) -> tuple[np.ndarray, list[str]]:
    """Per-image colour codes (uint16, 0 = none) and the legend (code i is ``legend[i - 1]``).

    label: the class; folder: the folder the file is in; cluster: the last ``lookalike cluster`` (``clusters`` as
    :func:`lookalike.cluster.load_clusters` returns it; noise = 0); time: capture time on a ramp of ``TIME_STEPS``
    steps from the earliest to the latest, the legend then holding those two dates.
    """
    n = len(index)
    codes = np.zeros(n, np.uint16)
    if color == "label":
        legend = index.classes
        pos = {c: i + 1 for i, c in enumerate(legend)}
        codes[:] = [pos.get(lab, 0) for lab in index.labels]  # type: ignore[arg-type]
        return codes, legend
    if color == "folder":
        folders = [str(PurePosixPath(name).parent) for name in index.names]
        legend = sorted(set(folders))
        pos = {c: i + 1 for i, c in enumerate(legend)}
        if len(legend) >= 65535:
            return codes, []
        codes[:] = [pos[f] for f in folders]
        return codes, legend
    if color == "cluster":
        if not clusters:
            return codes, []
        by_name = {name: i for i, name in enumerate(index.names)}
        root = index.root
        legend = []
        for c in clusters.get("clusters", [])[:65534]:
            legend.append(f"cluster {c.get('id')}")
            for p in c.get("paths", []):
                name = str(p)
                if name.startswith("/"):
                    try:
                        name = PurePosixPath(name).relative_to(root.as_posix()).as_posix()
                    except ValueError:
                        continue
                if name in by_name:
                    codes[by_name[name]] = len(legend)
        return codes, legend
    if color == "time":
        times = index.filter_columns.times
        known = ~np.isnat(times)
        if not known.any():
            return codes, []
        t = times[known].astype(np.int64)
        lo, hi = int(t.min()), int(t.max())
        codes[known] = 1 + np.round((t - lo) / max(hi - lo, 1) * (TIME_STEPS - 1)).astype(np.uint16)
        return codes, [datetime.fromtimestamp(lo).isoformat(), datetime.fromtimestamp(hi).isoformat()]
    if color == UNIQUENESS_COLOR:
        from lookalike.uniqueness import load_uniqueness

        found, _ = load_uniqueness(index)  # stored by `lookalike unique`; none (or stale): no colour
        if found is None:
            return codes, []
        codes[:] = 1 + np.round(np.clip(found.scores, 0, 1) * (TIME_STEPS - 1)).astype(np.uint16)
        return codes, ["0 (has copies)", "1 (most isolated)"]
    raise ConfigError(f"color must be one of {', '.join(COLORS)}, got {color!r}", setting="color")


def neighbour_label_agreement(points: np.ndarray, labels: list[str | None], k: int = 10) -> float:
    """The mean share of each labelled point's k nearest (other) labelled points that share its label.

    On a 2-D map against the same on the full vectors it says how much of the neighbourhood structure the picture
    keeps (BENCHMARKS.md, explore). Cosine for vectors (they are L2-normalised), Euclidean for 2-D points.
    """
    from lookalike.search import knn_graph

    rows = np.array([i for i, lab in enumerate(labels) if lab is not None])
    y = np.array([labels[i] for i in rows], dtype=object)
    x = np.asarray(points, np.float32)[rows]
    if x.shape[1] == 2:
        import faiss

        flat = faiss.IndexFlatL2(2)
        flat.add(np.ascontiguousarray(x))
        _, ids = flat.search(np.ascontiguousarray(x), k + 1)
        ids = np.array([[j for j in r if j != i][:k] for i, r in enumerate(ids)])
    else:
        ids, _ = knn_graph(x, k)
    return float(np.mean(y[ids] == y[:, None]))
