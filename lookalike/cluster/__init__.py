"""Grouping images without labels: similarity pairs, graph clustering with GPS merging, HDBSCAN, near-duplicates,
and export of the result as folders, contact sheets and an HTML page.

Everything starts from a k-nearest-neighbour graph (``search.knn_graph``: FAISS, batched), never an N×N similarity
matrix, so memory grows as N·k and a million photos fit on a laptop.

Modules, by concern:

- ``graph``: the similarity graph, local pruning, adaptive thresholds, the graph method, HDBSCAN, retrieval pairs;
- ``gps``: cleaning EXIF positions, cluster centres, distances, merging clusters by GPS;
- ``dedupe``: near-duplicate groups and burst series; ``pixels``: the pixel check that tells copies from other photos;
- ``keep``: which copy to keep (resolution, sharpness, file size, EXIF, age) and why;
- ``actions``: plans (dry runs), applying them with a journal, resuming, undoing;
- ``decisions``: "not duplicates" / "keep all", remembered by content hash; ``incoming``: new photos vs an index;
- ``export``: folders, contact sheets, the HTML page;
- ``labels``: helpers on label arrays and scores against known labels;
- ``run``: the index-level entry points (cluster, save, load, suggest) and ``ClusterResult``.

The names below are the public API; import them from ``lookalike.cluster``.
"""

from lookalike.cluster.actions import APPLY_MODES, apply_plan, load_plan, make_plan, save_plan, undo_plan
from lookalike.cluster.decisions import DECISION_KINDS, Decisions, decide
from lookalike.cluster.dedupe import (
    DEDUPE_FLOOR,
    DEDUPE_PIXEL,
    SERIES_FLOOR,
    SERIES_SECONDS,
    burst_series,
    candidate_pairs,
    near_duplicates,
)
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
from lookalike.cluster.incoming import check_new
from lookalike.cluster.keep import KEEP_RULES, FileFacts, choose_keeper, facts_of
from lookalike.cluster.labels import label_metrics
from lookalike.cluster.run import ClusterResult, cluster_index, load_clusters, suggest
from lookalike.store import CLUSTERS_FILE

__all__ = [
    "APPLY_MODES",
    "BACKGROUND_QUANTILE",
    "CLUSTERS_FILE",
    "DECISION_KINDS",
    "DEDUPE_FLOOR",
    "DEDUPE_PIXEL",
    "EARTH_RADIUS_M",
    "EXPORT_MARKER",
    "EXPORT_MODES",
    "KEEP_RULES",
    "LOCAL_RATIO",
    "RANDOM_PAIRS",
    "RULE",
    "SERIES_FLOOR",
    "SERIES_SECONDS",
    "STRONG_FRACTION",
    "WEAK_FRACTION",
    "ClusterResult",
    "Decisions",
    "FileFacts",
    "GraphParams",
    "Suggestion",
    "apply_plan",
    "burst_series",
    "candidate_pairs",
    "check_new",
    "choose_keeper",
    "cluster_index",
    "contact_sheet",
    "decide",
    "export_clusters",
    "facts_of",
    "gps_centre",
    "gps_merge",
    "graph_labels",
    "haversine_m",
    "hdbscan_labels",
    "label_metrics",
    "load_clusters",
    "load_plan",
    "local_prune",
    "make_plan",
    "near_duplicates",
    "random_pair_similarities",
    "save_plan",
    "similar_pairs",
    "similarity_graph",
    "suggest",
    "suggest_thresholds",
    "undo_plan",
    "valid_gps",
]
