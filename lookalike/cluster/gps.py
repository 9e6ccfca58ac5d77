"""GPS positions from EXIF: cleaning them, cluster centres on the sphere, distances, and merging clusters whose
centres are close (photos of one place taken from viewpoints too different for the descriptor to link)."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import sparse

from lookalike.cluster.labels import components, members

EARTH_RADIUS_M = 6_371_008.8


def valid_gps(lat: list[Any] | np.ndarray, lon: list[Any] | np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(lat, lon, rejected): float arrays with NaN where missing; values that are not numbers or out of range
    (|lat| > 90, |lon| > 180) become NaN too and are counted, so one bad EXIF tag cannot pull a cluster centre."""

    def num(v: Any) -> float:
        try:
            f = float(v)
        except (TypeError, ValueError):
            return float("inf") if v is not None else float("nan")
        return f

    la = np.array([num(v) for v in lat], dtype=np.float64)
    lo = np.array([num(v) for v in lon], dtype=np.float64)
    present = ~(np.isnan(la) & np.isnan(lo))
    ok = np.isfinite(la) & np.isfinite(lo) & (np.abs(la) <= 90) & (np.abs(lo) <= 180)
    rejected = int((present & ~ok).sum())
    la[~ok] = np.nan
    lo[~ok] = np.nan
    return la, lo, rejected


def gps_centre(lat: np.ndarray, lon: np.ndarray) -> tuple[float, float] | None:
    """Mean position on the sphere (mean of unit vectors), so clusters across the antimeridian come out right."""
    ok = np.isfinite(lat) & np.isfinite(lon)
    if not ok.any():
        return None
    la, lo = np.radians(lat[ok]), np.radians(lon[ok])
    v = np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=1).mean(axis=0)
    r = np.linalg.norm(v)
    if r < 1e-12:
        return None
    return float(np.degrees(np.arcsin(v[2] / r))), float(np.degrees(np.arctan2(v[1], v[0])))


def haversine_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance in metres between two (lat, lon) points in degrees."""
    la1, lo1, la2, lo2 = map(np.radians, (a[0], a[1], b[0], b[1]))
    h = np.sin((la2 - la1) / 2) ** 2 + np.cos(la1) * np.cos(la2) * np.sin((lo2 - lo1) / 2) ** 2
    return float(2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(min(1.0, h))))


def gps_merge(
    labels: np.ndarray, lat: np.ndarray, lon: np.ndarray, count: int, distance: float
) -> tuple[np.ndarray, int]:
    """(labels, merges): clusters having ≥ ``count`` GPS-tagged photos whose centres are within ``distance`` metres
    united (transitively), and how many clusters disappeared that way. Noise (-1) stays noise."""
    from sklearn.neighbors import BallTree

    tagged = np.bincount(labels[(labels >= 0) & np.isfinite(lat)], minlength=int(labels.max(initial=-1)) + 1)
    centres, which = [], []
    groups = members(labels)
    for c in np.flatnonzero(tagged >= max(1, count)):
        inside = groups[int(c)]
        centre = gps_centre(lat[inside], lon[inside])
        if centre is not None:
            centres.append(centre)
            which.append(int(c))
    if len(centres) < 2:
        return labels, 0
    tree = BallTree(np.radians(np.array(centres)), metric="haversine")
    near = tree.query_radius(np.radians(np.array(centres)), r=distance / EARTH_RADIUS_M)
    rows = np.concatenate([np.full(len(nb), i) for i, nb in enumerate(near)])
    cols = np.concatenate(near)
    g = sparse.csr_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(len(centres),) * 2)
    comp = components(g)
    first_of: dict[int, int] = {}
    remap = np.arange(int(labels.max()) + 1)
    for i, c in enumerate(which):
        remap[c] = which[first_of.setdefault(int(comp[i]), i)]
    out = np.where(labels >= 0, remap[np.maximum(labels, 0)], -1)
    return out, len(which) - len(np.unique(comp))
