"""The three classification heads, with scikit-learn's shape (``fit(X, y)``, ``predict_proba(X)``, ``predict(X)``,
``classes_``): a kNN vote, a linear probe and a shallow MLP, each calibrated so that "0.8" means right about 80 % of
the time (the kNN vote tunes its similarity temperature and smoothing by leave-one-out log-loss; the linear probe and
the MLP learn a softmax temperature on a held-out part)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lookalike.errors import LookalikeError
from lookalike.metrics import expected_calibration_error

METHODS = ("knn", "linear", "mlp")


DEFAULT_K = 10


#: The unfitted vote weighs a neighbour by exp(cosine / T); T = 0.1 is what search's predicted class always used.
DEFAULT_TEMPERATURE = 0.1


DEFAULT_SMOOTHING = 0.01


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _nll(proba: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, None))))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """Temperature scaling (Guo et al. 2017): the T minimising held-out log-loss of softmax(logits / T).

    One scalar cannot change which class wins, so accuracy is untouched; it only makes the confidence honest.
    T is kept in [0.5, 20]: a small held-out part that happens to be classified perfectly would otherwise drive T
    towards 0 and make every later prediction "certain".
    """
    from scipy.optimize import minimize_scalar

    if len(y) == 0:
        return 1.0
    res = minimize_scalar(
        lambda t: _nll(_softmax(logits / np.exp(t)), y), bounds=(np.log(0.5), np.log(20.0)), method="bounded"
    )
    return float(np.exp(res.x))


def _split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train / held-out indices, stratified when every class has at least two images (else a plain shuffle)."""
    from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit

    n = len(y)
    n_val = max(1, round(n * fraction))
    counts = np.bincount(y)
    n_classes = int((counts > 0).sum())
    if counts[counts > 0].min() >= 2 and n_val >= n_classes and n - n_val >= n_classes:
        sss = StratifiedShuffleSplit(n_splits=1, test_size=n_val, random_state=seed)
        return next(sss.split(np.zeros(n), y))
    return next(ShuffleSplit(n_splits=1, test_size=n_val, random_state=seed).split(np.zeros(n)))


class Head:
    """Common part of the three heads: classes, label encoding, probabilities, and (de)serialisation."""

    method = ""

    def __init__(self) -> None:
        self.classes_: np.ndarray = np.array([], dtype=object)
        self.metrics_: dict[str, Any] = {}

    def _encode(self, y: Sequence[str] | np.ndarray) -> np.ndarray:
        y = np.asarray(y, dtype=object)
        self.classes_ = np.array(sorted(set(y.tolist())), dtype=object)
        if len(self.classes_) < 2:
            only = self.classes_[0] if len(self.classes_) else "none"
            raise LookalikeError(
                f"classification needs at least two classes, the training data has one ({only}); "
                "add a folder of images for another class and re-index"
            )
        lookup = {c: i for i, c in enumerate(self.classes_)}
        return np.array([lookup[v] for v in y], dtype=np.int64)

    def fit(self, X: np.ndarray, y: Sequence[str] | np.ndarray) -> Head:  # noqa: N803 - scikit-learn's names
        raise NotImplementedError

    def predict_proba(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        raise NotImplementedError

    def predict(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def params(self) -> dict[str, Any]:
        return {}

    def arrays(self) -> dict[str, np.ndarray]:
        return {}

    def load_state(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        raise NotImplementedError


class KNNHead(Head):
    """Similarity-weighted vote of the k nearest labelled neighbours: p(c) ∝ Σ_{neighbours of class c} exp(cos / T).

    ``fit`` keeps the vectors and tunes T and a uniform smoothing ε by leave-one-out log-loss (each training vector
    is classified by its neighbours other than itself), so the vote's confidence is calibrated without a held-out
    split. When the head belongs to an index it votes among the index's current vectors (:meth:`attach`).
    """

    method = "knn"
    TEMPERATURES = (0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
    SMOOTHINGS = (0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.2)

    def __init__(
        self, k: int = DEFAULT_K, temperature: float = DEFAULT_TEMPERATURE, smoothing: float = DEFAULT_SMOOTHING
    ) -> None:
        super().__init__()
        if k < 1:
            raise LookalikeError(f"k must be at least 1, got {k}")
        self.k = k
        self.temperature = temperature
        self.smoothing = smoothing
        self._searcher: Any = None
        self._row_class: np.ndarray | None = None

    def attach(self, searcher: Any, row_class: np.ndarray, classes: Sequence[str]) -> KNNHead:
        """Vote among an existing searcher's vectors; ``row_class`` is each row's class index (-1: unlabelled)."""
        self._searcher = searcher
        self._row_class = np.asarray(row_class, dtype=np.int64)
        self.classes_ = np.array(list(classes), dtype=object)
        return self

    def fit(self, X: np.ndarray, y: Sequence[str] | np.ndarray, *, tune: bool = True) -> KNNHead:  # noqa: N803
        from lookalike.search import VectorSearch

        yi = self._encode(y)
        self.attach(VectorSearch(np.asarray(X, np.float32)), yi, self.classes_)
        if tune and len(yi) > 2:
            self._tune(np.asarray(X, np.float32), yi)
        return self

    def _vote(self, scores: np.ndarray, cls: np.ndarray, temperature: float, smoothing: float) -> np.ndarray:
        n_classes = len(self.classes_)
        valid = (cls >= 0) & np.isfinite(scores)
        # subtract the best score before exp so a small T cannot overflow; the common factor cancels
        best = np.where(valid, scores, -np.inf).max(axis=1, keepdims=True)
        best = np.where(np.isfinite(best), best, 0.0)
        w = np.where(valid, np.exp((np.where(valid, scores, 0.0) - best) / temperature), 0.0)
        votes = np.zeros((len(scores), n_classes))
        rows = np.repeat(np.arange(len(scores)), scores.shape[1])
        np.add.at(votes, (rows[valid.ravel()], cls.ravel()[valid.ravel()]), w.ravel()[valid.ravel()])
        total = votes.sum(axis=1, keepdims=True)
        proba = np.where(total > 0, votes / np.where(total > 0, total, 1.0), 1.0 / n_classes)
        return (1.0 - smoothing) * proba + smoothing / n_classes

    def _neighbours(
        self,
        X: np.ndarray,
        exclude: Sequence[Sequence[int]] | None = None,  # noqa: N803
    ) -> tuple[np.ndarray, np.ndarray]:
        if self._searcher is None or self._row_class is None:
            raise LookalikeError("the kNN head has no vectors to vote with; fit it first")
        # unlabelled rows take places among the neighbours but cannot vote: ask for a few more
        unlabelled = int((self._row_class < 0).sum())
        k = min(self.k + min(unlabelled, self.k), len(self._row_class))
        scores, ids = self._searcher.search(np.asarray(X, np.float32), k, exclude=exclude)
        cls = np.where(ids >= 0, self._row_class[np.clip(ids, 0, None)], -1)
        # keep the k best labelled neighbours of each query
        order = np.argsort(cls < 0, axis=1, kind="stable")[:, : self.k]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(cls, order, 1)

    def _tune(self, X: np.ndarray, y: np.ndarray) -> None:  # noqa: N803
        exclude = [[i] for i in range(len(X))]
        scores, cls = self._neighbours(X, exclude)
        best = (np.inf, self.temperature, self.smoothing)
        for t in self.TEMPERATURES:
            for s in self.SMOOTHINGS:
                nll = _nll(self._vote(scores, cls, t, s), y)
                if nll < best[0]:
                    best = (nll, t, s)
        raw = self._vote(scores, cls, DEFAULT_TEMPERATURE, DEFAULT_SMOOTHING)
        self.temperature, self.smoothing = best[1], best[2]
        proba = self._vote(scores, cls, self.temperature, self.smoothing)
        self.metrics_ = {
            "validation": "leave-one-out",
            "n_val": len(y),
            "val_accuracy": float(np.mean(proba.argmax(1) == y)),
            "val_log_loss": best[0],
            "val_ece": expected_calibration_error(proba, y),
            "val_ece_uncalibrated": expected_calibration_error(raw, y),
        }

    def predict_proba(
        self,
        X: np.ndarray,
        exclude: Sequence[Sequence[int]] | None = None,  # noqa: N803
    ) -> np.ndarray:
        scores, cls = self._neighbours(X, exclude)
        return self._vote(scores, cls, self.temperature, self.smoothing)

    def params(self) -> dict[str, Any]:
        return {"k": self.k, "temperature": self.temperature, "smoothing": self.smoothing}

    def load_state(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.k = int(params["k"])
        self.temperature = float(params["temperature"])
        self.smoothing = float(params["smoothing"])


class _LogitHead(Head):
    """A head computing logits from standardised vectors, with a softmax temperature learnt on held-out data."""

    def __init__(self, validation_fraction: float = 0.2, seed: int = 0) -> None:
        super().__init__()
        self.validation_fraction = validation_fraction
        self.seed = seed
        self.temperature_ = 1.0
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None

    def _standardise_fit(self, X: np.ndarray) -> None:  # noqa: N803
        self.mean_ = X.mean(axis=0).astype(np.float32)
        self.scale_ = (X.std(axis=0) + 1e-6).astype(np.float32)

    def _z(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        if self.mean_ is None or self.scale_ is None:
            raise LookalikeError(f"the {self.method} head is not fitted")
        return (np.asarray(X, np.float32) - self.mean_) / self.scale_

    def logits(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        raise NotImplementedError

    def predict_proba(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        return _softmax(self.logits(X) / self.temperature_)

    def _calibrate(self, Xv: np.ndarray, yv: np.ndarray, n_train: int) -> None:  # noqa: N803
        logits = self.logits(Xv)
        self.temperature_ = fit_temperature(logits, yv)
        proba = _softmax(logits / self.temperature_)
        self.metrics_ = {
            "validation": f"held-out {self.validation_fraction:.0%} of the index",
            "n_train": n_train,
            "n_val": len(yv),
            "val_accuracy": float(np.mean(proba.argmax(1) == yv)),
            "val_log_loss": _nll(proba, yv),
            "val_ece": expected_calibration_error(proba, yv),
            "val_ece_uncalibrated": expected_calibration_error(_softmax(logits), yv),
        }


class LinearHead(_LogitHead):
    """Linear probe: multinomial logistic regression on standardised vectors (scikit-learn, L-BFGS).

    The held-out part picks the regularisation C and the temperature; the probe is then refitted on everything.
    """

    method = "linear"
    CS = (0.002, 0.005, 0.01, 0.03)

    def __init__(self, C: float | None = None, validation_fraction: float = 0.2, seed: int = 0) -> None:  # noqa: N803
        super().__init__(validation_fraction, seed)
        self.C = C
        self.coef_: np.ndarray | None = None
        self.intercept_: np.ndarray | None = None

    def _fit_lr(self, Z: np.ndarray, y: np.ndarray, C: float) -> tuple[np.ndarray, np.ndarray]:  # noqa: N803
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=C, max_iter=2000).fit(Z, y)
        coef, intercept = lr.coef_, lr.intercept_
        if coef.shape[0] == 1:  # binary: scikit-learn keeps one row; make it a two-logit softmax
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.concatenate([[0.0], intercept])
        full_coef = np.zeros((len(self.classes_), Z.shape[1]), np.float32)
        full_int = np.full(len(self.classes_), -1e4, np.float32)  # a class absent from the split: never chosen
        full_coef[lr.classes_] = coef
        full_int[lr.classes_] = intercept
        return full_coef, full_int

    def fit(self, X: np.ndarray, y: Sequence[str] | np.ndarray) -> LinearHead:  # noqa: N803
        yi = self._encode(y)
        X = np.asarray(X, np.float32)  # noqa: N806
        self._standardise_fit(X)
        Z = self._z(X)  # noqa: N806
        tr, va = _split(yi, self.validation_fraction, self.seed)
        if len(np.unique(yi[tr])) < 2:
            tr = np.arange(len(yi))
        best: tuple[float, float] | None = None
        for C in [self.C] if self.C else self.CS:  # noqa: N806
            self.coef_, self.intercept_ = self._fit_lr(Z[tr], yi[tr], C)
            self._calibrate(X[va], yi[va], len(tr))
            score = self.metrics_["val_log_loss"]
            if best is None or score < best[0]:
                best, metrics, temperature = (score, C), self.metrics_, self.temperature_
        self.C = best[1]  # type: ignore[index]
        self.coef_, self.intercept_ = self._fit_lr(Z, yi, self.C)
        self.metrics_, self.temperature_ = metrics, temperature
        self.metrics_["C"] = self.C
        return self

    def logits(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        return self._z(X) @ self.coef_.T + self.intercept_  # type: ignore[union-attr]

    def params(self) -> dict[str, Any]:
        return {"C": self.C, "temperature": self.temperature_}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean_, "scale": self.scale_, "coef": self.coef_, "intercept": self.intercept_}  # type: ignore[dict-item]

    def load_state(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.C, self.temperature_ = params.get("C"), float(params["temperature"])
        self.mean_, self.scale_ = arrays["mean"], arrays["scale"]
        self.coef_, self.intercept_ = arrays["coef"], arrays["intercept"]


class MLPHead(_LogitHead):
    """Shallow MLP: standardised vector → Linear(hidden) → ReLU → dropout → Linear(classes), trained in torch.

    Early stopping watches the log-loss of a held-out part of the index and keeps the best epoch's weights; the same
    part then fits the temperature. Weights are kept as numpy arrays, so predicting needs no torch.
    """

    method = "mlp"

    def __init__(
        self,
        hidden: int = 256,
        dropout: float = 0.3,
        lr: float = 3e-4,
        weight_decay: float = 1e-3,
        max_epochs: int = 200,
        patience: int = 15,
        batch_size: int = 128,
        validation_fraction: float = 0.2,
        seed: int = 0,
    ) -> None:
        super().__init__(validation_fraction, seed)
        self.hidden, self.dropout, self.lr, self.weight_decay = hidden, dropout, lr, weight_decay
        self.max_epochs, self.patience, self.batch_size = max_epochs, patience, batch_size
        self.w1_: np.ndarray | None = None
        self.b1_: np.ndarray | None = None
        self.w2_: np.ndarray | None = None
        self.b2_: np.ndarray | None = None
        self.epochs_ = 0

    def fit(self, X: np.ndarray, y: Sequence[str] | np.ndarray) -> MLPHead:  # noqa: N803
        import torch
        from torch import nn

        yi = self._encode(y)
        X = np.asarray(X, np.float32)  # noqa: N806
        tr, va = _split(yi, self.validation_fraction, self.seed)
        self._standardise_fit(X[tr])
        Z = torch.from_numpy(self._z(X))  # noqa: N806
        Y = torch.from_numpy(yi)  # noqa: N806
        torch.manual_seed(self.seed)
        net = nn.Sequential(
            nn.Linear(X.shape[1], self.hidden),
            nn.ReLU(),
            nn.Dropout(self.dropout),
            nn.Linear(self.hidden, len(self.classes_)),
        )
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        loss_fn = nn.CrossEntropyLoss()
        gen = torch.Generator().manual_seed(self.seed)
        tr_t, va_t = torch.from_numpy(tr), torch.from_numpy(va)
        best_loss, best_state, bad = np.inf, None, 0
        for epoch in range(self.max_epochs):
            net.train()
            perm = tr_t[torch.randperm(len(tr_t), generator=gen)]
            for start in range(0, len(perm), self.batch_size):
                b = perm[start : start + self.batch_size]
                opt.zero_grad()
                loss_fn(net(Z[b]), Y[b]).backward()
                opt.step()
            net.eval()
            with torch.no_grad():
                val_loss = float(loss_fn(net(Z[va_t]), Y[va_t]))
            if val_loss < best_loss - 1e-4:
                best_loss, bad, self.epochs_ = val_loss, 0, epoch + 1
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                bad += 1
                if bad >= self.patience:
                    break
        if best_state is not None:
            net.load_state_dict(best_state)
        self.w1_, self.b1_ = net[0].weight.detach().numpy().copy(), net[0].bias.detach().numpy().copy()
        self.w2_, self.b2_ = net[3].weight.detach().numpy().copy(), net[3].bias.detach().numpy().copy()
        self._calibrate(X[va], yi[va], len(tr))
        self.metrics_["epochs"] = self.epochs_
        return self

    def logits(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        h = np.maximum(self._z(X) @ self.w1_.T + self.b1_, 0.0)  # type: ignore[union-attr]
        return h @ self.w2_.T + self.b2_  # type: ignore[union-attr]

    def params(self) -> dict[str, Any]:
        return {
            "hidden": self.hidden,
            "dropout": self.dropout,
            "epochs": self.epochs_,
            "temperature": self.temperature_,
        }

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "mean": self.mean_,
            "scale": self.scale_,
            "w1": self.w1_,
            "b1": self.b1_,
            "w2": self.w2_,
            "b2": self.b2_,
        }  # type: ignore[dict-item]

    def load_state(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.hidden, self.epochs_ = int(params["hidden"]), int(params.get("epochs", 0))
        self.temperature_ = float(params["temperature"])
        self.mean_, self.scale_ = arrays["mean"], arrays["scale"]
        self.w1_, self.b1_, self.w2_, self.b2_ = arrays["w1"], arrays["b1"], arrays["w2"], arrays["b2"]


def make_head(method: str, *, k: int = DEFAULT_K, seed: int = 0) -> Head:
    """An unfitted head by name."""
    if method == "knn":
        return KNNHead(k=k)
    if method == "linear":
        return LinearHead(seed=seed)
    if method == "mlp":
        return MLPHead(seed=seed)
    raise LookalikeError(f"unknown classification method {method!r}; use one of {', '.join(METHODS)}")
