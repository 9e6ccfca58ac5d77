"""Packed scenes: which detected objects on a shelf photo are the same product, and where each product congregates.

Seed packed-scenes: every detected box is cropped and embedded, the crops are clustered by cosine similarity without
knowing how many products there are (HDBSCAN, then a second pass with minimum size 2 that rescues small groups), and
each cluster's boxes are joined into regions by morphological closing of the cluster's box mask. The closing element
is a fraction (``gap``) of the median box size, so neighbours a shelf edge or a price tag apart join while a block of
another product (a whole box wide) keeps two regions of one product apart.

Detections come in three layouts (see :func:`parse_detections`); geometric problems in single boxes are repaired or
the box is skipped and reported, while a file that is not detections at all is refused with a one-line error.
"""

from lookalike.scenes.analyse import Cluster, Scene, analyse_scene, crops, scene_describer
from lookalike.scenes.detections import (
    DEFAULT_GAP,
    DEFAULT_MIN_SIZE,
    FORMATS,
    Box,
    Checked,
    check_boxes,
    load_detections,
    parse_detections,
)
from lookalike.scenes.draw import NOISE_COLOUR, cluster_colours, draw_scene
from lookalike.scenes.regions import Region, RegionMaps, box_regions, separable_closing
from lookalike.scenes.run import run_scene

__all__ = [
    "DEFAULT_GAP",
    "DEFAULT_MIN_SIZE",
    "FORMATS",
    "NOISE_COLOUR",
    "Box",
    "Checked",
    "Cluster",
    "Region",
    "RegionMaps",
    "Scene",
    "analyse_scene",
    "box_regions",
    "check_boxes",
    "cluster_colours",
    "crops",
    "draw_scene",
    "load_detections",
    "parse_detections",
    "run_scene",
    "scene_describer",
    "separable_closing",
]
