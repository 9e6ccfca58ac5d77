"""Classify images by the index's labels: a kNN vote, a linear probe, or a shallow MLP on the index vectors.

All three heads have scikit-learn's shape (``fit(X, y)``, ``predict_proba(X)``, ``predict(X)``, ``classes_``) so the
evaluation and the cross-validation benchmark treat them alike. Each is calibrated so that "0.8" means right about
80 % of the time: the kNN vote tunes its similarity temperature and a little uniform smoothing by leave-one-out
log-loss over the index; the linear probe and the MLP learn a softmax temperature on a held-out part of the index.
The expected calibration error (ECE) of that held-out part is stored with the head.

A fitted head lives in the index folder as ``head.json`` (method, classes, parameters, metrics, and a fingerprint of
the vectors it was fitted on) plus ``head.npz`` (weights as plain arrays: no pickle, so opening an index never runs
code from it). A head whose fingerprint no longer matches the index (images added, removed, moved between class
folders, or re-embedded) is stale and refused with a message that says how to refit it. Without a fitted head,
classification is the similarity-weighted kNN vote with default parameters, which needs no fitting.
"""

from __future__ import annotations

from lookalike.classify.heads import (
    DEFAULT_K,
    DEFAULT_SMOOTHING,
    DEFAULT_TEMPERATURE,
    METHODS,
    Head,
    KNNHead,
    LinearHead,
    MLPHead,
    fit_temperature,
    make_head,
)
from lookalike.classify.stored import (
    HEAD_FORMAT,
    Prediction,
    classify_vectors,
    fingerprint,
    fit_index,
    head_for,
    head_info,
    load_head,
    predict_proba,
    remove_head,
    require_classes,
    to_predictions,
    training_data,
)

__all__ = [
    "DEFAULT_K",
    "DEFAULT_SMOOTHING",
    "DEFAULT_TEMPERATURE",
    "HEAD_FORMAT",
    "METHODS",
    "Head",
    "KNNHead",
    "LinearHead",
    "MLPHead",
    "Prediction",
    "classify_vectors",
    "fingerprint",
    "fit_index",
    "fit_temperature",
    "head_for",
    "head_info",
    "load_head",
    "make_head",
    "predict_proba",
    "remove_head",
    "require_classes",
    "to_predictions",
    "training_data",
]
