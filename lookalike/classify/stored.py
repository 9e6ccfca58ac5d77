"""The head of an index: fitted on its labelled vectors, kept in the index folder (``head.json`` + ``head.npz``, plain
arrays, no pickle), refused when stale (its fingerprint of the vectors no longer matches), and predictions from it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lookalike.classify.heads import DEFAULT_K, METHODS, Head, KNNHead, make_head

if TYPE_CHECKING:
    from lookalike.view import IndexView

import hashlib
import io
import json
import time
import weakref
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.errors import LookalikeError
from lookalike.io import atomic_write, atomic_write_json, now_iso
from lookalike.store import HEAD_FILE as HEAD_JSON
from lookalike.store import HEAD_WEIGHTS_FILE as HEAD_NPZ

HEAD_FORMAT = 1


@dataclass
class Prediction:
    """One image's class: the most probable label and the probability of every class (summing to 1)."""

    label: str
    probabilities: dict[str, float]
    method: str
    path: str | None = field(default=None, compare=False, repr=False)  # the image, when it was given by its path

    @property
    def probability(self) -> float:
        return self.probabilities[self.label]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("path")
        return d

    def _repr_html_(self) -> str:
        from lookalike.display import prediction_html

        return prediction_html(self)


def require_classes(index: IndexView) -> list[str]:
    """The index's classes, or a one-line error when it cannot classify (no labels, a single class)."""
    classes = index.classes
    if not classes:
        raise LookalikeError(
            f"the index at {index.folder} has no labels; build it with `lookalike index PHOTOS_DIR --labels folders` "
            "from one folder per class to classify"
        )
    if len(classes) < 2:
        raise LookalikeError(
            f"the index at {index.folder} has one class ({classes[0]}); classification needs at least two: "
            "add a folder of images for another class and re-index"
        )
    return classes


def training_data(index: IndexView) -> tuple[np.ndarray, np.ndarray]:
    """Vectors and labels of the index's labelled images."""
    require_classes(index)
    labels = index.labels
    rows = np.array([i for i, lab in enumerate(labels) if lab is not None], dtype=np.int64)
    return index.vectors[rows], np.array([labels[i] for i in rows], dtype=object)


def fingerprint(index: IndexView) -> str:
    """What a fitted head depends on: how vectors are made, and which images (by content) carry which label."""
    h = hashlib.sha1(json.dumps(index.recipe(), sort_keys=True).encode())
    for col in ("path", "hash", "label"):
        h.update("\0".join("" if v is None else str(v) for v in index.column(col)).encode())
    return h.hexdigest()[:16]


def _attach_to_index(head: KNNHead, index: IndexView, classes: Sequence[str]) -> KNNHead:
    lookup = {c: i for i, c in enumerate(classes)}
    row_class = np.array([lookup.get(lab, -1) if lab is not None else -1 for lab in index.labels], dtype=np.int64)
    return head.attach(index.searcher, row_class, classes)


def fit_index(index: IndexView, method: str, *, k: int = DEFAULT_K, save: bool = True, seed: int = 0) -> dict[str, Any]:
    """Fit a head on the index's labelled vectors and (by default) store it in the index folder.

    Returns what ``head.json`` holds: method, classes, parameters, held-out metrics (accuracy, ECE) and fit time.
    """
    X, y = training_data(index)  # noqa: N806
    head = make_head(method, k=k, seed=seed)
    started = time.perf_counter()
    head.fit(X, y)
    seconds = time.perf_counter() - started
    info = {
        "format": HEAD_FORMAT,
        "method": head.method,
        "classes": [str(c) for c in head.classes_],
        "params": head.params(),
        "metrics": head.metrics_,
        "n_train": len(y),
        "fit_seconds": round(seconds, 3),
        "fingerprint": fingerprint(index),
        "fitted": now_iso(),
    }
    if save:
        arrays = {k: v for k, v in head.arrays().items() if v is not None}
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        path = index.folder
        atomic_write(path / HEAD_NPZ, buf.getvalue())
        atomic_write_json(path / HEAD_JSON, info)
    if isinstance(head, KNNHead):
        _attach_to_index(head, index, list(head.classes_))
    _cache(index, head, info)
    return info


def head_info(index: IndexView) -> dict[str, Any] | None:
    """The stored head's ``head.json`` plus ``stale`` (bool), or None when no head has been fitted."""
    path = index.folder / HEAD_JSON
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LookalikeError(f"{path}: unreadable ({exc}); run `lookalike fit` again") from None
    info["stale"] = info.get("fingerprint") != fingerprint(index)
    return info


def _stale_message(index: IndexView, info: dict[str, Any]) -> str:
    return (
        f"the {info['method']} head in {index.folder} was fitted on {info.get('n_train', '?')} labelled images "
        f"({info.get('fitted', '?')}) and the index has changed since (images added, removed, relabelled or "
        f"re-embedded): run `lookalike fit --index {index.folder} --method {info['method']}` again"
    )


# Loaded heads, per opened index and valid while its table is the same object (a commit replaces it): the server
# classifies every upload, and reading head.npz each time would dominate. Weak keys: a closed index frees its head.
_LOADED: weakref.WeakKeyDictionary[Any, tuple[int, Head, dict[str, Any]]] = weakref.WeakKeyDictionary()


def _cache(index: IndexView, head: Head, info: dict[str, Any] | None) -> None:
    if info is not None:
        _LOADED[index] = (index.version, head, info)


def load_head(index: IndexView) -> tuple[Head, dict[str, Any]] | None:
    """The head stored in the index folder (None if there is none); a stale head is refused with how to refit."""
    cached = _LOADED.get(index)
    if cached and cached[0] == index.version:
        return cached[1], cached[2]
    info = head_info(index)
    if info is None:
        return None
    if info["stale"]:
        raise LookalikeError(_stale_message(index, info))
    if info.get("format") != HEAD_FORMAT:
        raise LookalikeError(f"{index.folder / HEAD_JSON} has an unknown format; run `lookalike fit` again")
    head = make_head(info["method"])
    arrays: dict[str, np.ndarray] = {}
    npz = index.folder / HEAD_NPZ
    if npz.is_file():
        with np.load(npz, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    try:
        head.load_state(info["params"], arrays)
    except KeyError as exc:
        raise LookalikeError(f"{npz}: missing {exc}; run `lookalike fit` again") from None
    head.classes_ = np.array(info["classes"], dtype=object)
    head.metrics_ = info.get("metrics", {})
    if isinstance(head, KNNHead):
        _attach_to_index(head, index, info["classes"])
    _cache(index, head, info)
    return head, info


def head_for(index: IndexView, method: str | None = None, *, k: int | None = None) -> Head:
    """The head that classifies for this index.

    No method: the stored head if there is one, else the unfitted kNN vote. A method: the stored head when it is
    that method (and, for kNN, the same k), else a head of that method fitted now, in memory, on the index.
    """
    classes = require_classes(index)
    if method is not None and method not in METHODS:
        raise LookalikeError(f"unknown classification method {method!r}; use one of {', '.join(METHODS)}")
    stored = load_head(index)
    if stored is not None:
        head, info = stored
        if method is None or (
            method == info["method"] and (method != "knn" or k is None or k == info["params"].get("k"))
        ):
            if isinstance(head, KNNHead) and k is not None and k != head.k:
                head = KNNHead(k, head.temperature, head.smoothing)
                _attach_to_index(head, index, info["classes"])
            return head
    if method in (None, "knn"):
        return _attach_to_index(KNNHead(k or DEFAULT_K), index, classes)
    X, y = training_data(index)  # noqa: N806
    return make_head(method).fit(X, y)


def predict_proba(head: Head, vectors: np.ndarray, exclude: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """Class probabilities; ``exclude`` (kNN only) keeps a query that is itself indexed from voting for itself."""
    if isinstance(head, KNNHead):
        return head.predict_proba(vectors, exclude)
    return head.predict_proba(vectors)


def to_predictions(head: Head, proba: np.ndarray) -> list[Prediction]:
    classes = [str(c) for c in head.classes_]
    return [
        Prediction(classes[int(np.argmax(p))], {c: float(v) for c, v in zip(classes, p, strict=True)}, head.method)
        for p in proba
    ]


def classify_vectors(
    index: IndexView,
    vectors: np.ndarray,
    *,
    method: str | None = None,
    k: int | None = None,
    exclude: Sequence[Sequence[int]] | None = None,
) -> list[Prediction]:
    """Predictions for vectors described as the index's are (see :func:`head_for` for which head)."""
    head = head_for(index, method, k=k)
    if len(vectors) == 0:
        return []
    return to_predictions(head, predict_proba(head, vectors, exclude))


def remove_head(index_dir: Path) -> None:
    for name in (HEAD_JSON, HEAD_NPZ):
        (index_dir / name).unlink(missing_ok=True)
