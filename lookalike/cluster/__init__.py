"""Grouping images without labels: similarity pairs, graph clustering with GPS merging, HDBSCAN, and export of the
result as folders, contact sheets and an HTML page.

Everything starts from a k-nearest-neighbour graph (``search.knn_graph``: FAISS, batched), never an N×N similarity
matrix, so memory grows as N·k and a million photos fit on a laptop.

Modules, by concern:

- ``graph``: the similarity graph, local pruning, adaptive thresholds, the graph method, HDBSCAN, retrieval pairs;
- ``gps``: cleaning EXIF positions, cluster centres, distances, merging clusters by GPS;
- ``export``: folders, contact sheets, the HTML page;
- ``labels``: helpers on label arrays and scores against known labels;
- ``run``: the index-level entry points (cluster, save, load, suggest) and ``ClusterResult``.

The names below are the public API; import them from ``lookalike.cluster``. Copies (near-duplicates, plans,
decisions) are :mod:`lookalike.dedupe`; clustering respects its "not duplicates" decisions.
"""

from lookalike.cluster.export import EXPORT_MARKER, EXPORT_MODES, contact_sheet, export_clusters
from lookalike.cluster.gps import EARTH_RADIUS_M, gps_centre, gps_merge, haversine_m, valid_gps
from lookalike.cluster.graph import (
    BACKGROUND_QUANTILE,
    LOCAL_RATIO,
    RANDOM_PAIRS,
    RULE,
    STRONG_FRACTION,
    WEAK_FRACTION,
    GraphParams,
    Suggestion,
    graph_labels,
    hdbscan_labels,
    local_prune,
    random_pair_similarities,
    similar_pairs,
    similarity_graph,
    suggest_thresholds,
)
from lookalike.cluster.labels import label_metrics
from lookalike.cluster.run import ClusterResult, cluster_index, load_clusters, suggest
from lookalike.store import CLUSTERS_FILE

__all__ = [
    "BACKGROUND_QUANTILE",
    "CLUSTERS_FILE",
    "EARTH_RADIUS_M",
    "EXPORT_MARKER",
    "EXPORT_MODES",
    "LOCAL_RATIO",
    "RANDOM_PAIRS",
    "RULE",
    "STRONG_FRACTION",
    "WEAK_FRACTION",
    "ClusterResult",
    "GraphParams",
    "Suggestion",
    "cluster_index",
    "contact_sheet",
    "export_clusters",
    "gps_centre",
    "gps_merge",
    "graph_labels",
    "haversine_m",
    "hdbscan_labels",
    "label_metrics",
    "load_clusters",
    "local_prune",
    "random_pair_similarities",
    "similar_pairs",
    "similarity_graph",
    "suggest",
    "suggest_thresholds",
    "valid_gps",
]
