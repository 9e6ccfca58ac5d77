"""The training loop: model, loss and optimiser, epochs with validation and a checkpoint each, resume, members.

Losses and miners are pytorch-metric-learning's (NormalizedSoftmaxLoss with temperature 1/λ, TripletMarginLoss with
a semi-hard or batch-hard miner, ArcFaceLoss); batches hold four images of each class they draw
(MPerClassSampler). Validation is retrieval with the held-out images as queries and the training images as
references, scored by :mod:`lookalike.metrics` like every other figure lookalike reports. Each epoch is
checkpointed in ``OUT/run/``, so a killed run resumes where it stopped; the best epoch's weights are kept.
"""

from __future__ import annotations

import ctypes
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.errors import LookalikeError
from lookalike.io import atomic_write
from lookalike.models.trained import COMPLETE_FILE, MEMBERS_DIR, RUN_DIR, build_embedder
from lookalike.training.cache import stem_features
from lookalike.training.card import (
    MODEL_FILES,
    members_card,
    members_card_markdown,
    read_model_card,
    result_from_card,
    write_card,
)
from lookalike.training.data import AUG_VIEWS, TrainingData, random_crop
from lookalike.training.options import TrainOptions, TrainResult

CHECKPOINT = "checkpoint.pt"
PER_CLASS = 4  # images of each class in a batch
HEAD_HIDDEN, HEAD_DROPOUT = 512, 0.1
Say = Callable[[str], object]


def validation_metrics(
    query: np.ndarray, query_labels: np.ndarray, ref: np.ndarray, ref_labels: np.ndarray
) -> dict[str, float]:
    """precision@1 and mAP@R of queries against a disjoint reference set (cosine on unit vectors)."""
    from lookalike.metrics import retrieval_metrics

    m = retrieval_metrics(query, list(query_labels), ref, list(ref_labels), ks=(1,))
    return {"precision_at_1": m["precision_at"]["1"], "map_at_r": m["map_at_r"]}


def lr_factor(schedule: str, epoch: int, epochs: int) -> float:
    """Cosine decay to 1/100 by the last epoch; a function of the epoch alone so a resumed run continues the curve
    (growing ``epochs`` on resume stretches the rest of it). Not the default: on rooms it matched the constant
    rate's held-out accuracy, no better (BENCHMARKS.md)."""
    import math

    if schedule == "constant" or epochs <= 1:
        return 1.0
    t = (epoch - 1) / (epochs - 1)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))


def make_loss(o: TrainOptions, n_classes: int) -> tuple[Any, Any]:
    """pytorch-metric-learning's loss for ``o.loss``, and its miner (triplet loss only; else None)."""
    from pytorch_metric_learning import losses, miners

    if o.loss == "normsoftmax":
        return losses.NormalizedSoftmaxLoss(n_classes, o.dim, temperature=1.0 / o.scale), None
    if o.loss == "arcface":
        return losses.ArcFaceLoss(n_classes, o.dim, margin=o.margin, scale=o.scale), None
    loss = losses.TripletMarginLoss(margin=o.margin)
    if o.miner == "hard":
        return loss, miners.BatchHardMiner()
    return loss, miners.TripletMarginMiner(margin=o.margin, type_of_triplets="semihard")


@contextmanager
def keep_freed_memory() -> Iterator[None]:
    """Keep freed heap memory in the process while fine-tuning, then hand it back.

    Every training step allocates and frees activation buffers of tens of MB. glibc serves blocks above 32 MB with
    a fresh mmap each time, so every step paid for the kernel zeroing new pages: about 40% of the CPU time was
    system time, and a Lite2 step at 384 px took twice as long (measured in BENCHMARKS.md). Serving them from the
    heap and not trimming it reuses the same pages. Elsewhere than glibc this does nothing.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both exist only on glibc
    except (OSError, AttributeError):
        yield
        return
    m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4
    libc.mallopt(m_mmap_max, 0)
    libc.mallopt(m_trim_threshold, 2**31 - 1)
    libc.mallopt(m_top_pad, 256 << 20)
    try:
        yield
    finally:  # glibc's defaults, and the kept memory returned to the system
        libc.mallopt(m_mmap_max, 65536)
        libc.mallopt(m_trim_threshold, 128 << 10)
        libc.mallopt(m_top_pad, 128 << 10)
        libc.malloc_trim(0)


# --- the output folder and its checkpoint -----------------------------------------------------------------------


def prepare_out(out: Path, overwrite: bool, resume: bool | None) -> Path | None:
    """Check the output folder (empty, or a model folder of ours); return the checkpoint to resume from, if any.

    ``resume``: None resumes an unfinished run if there is one, True requires one, False discards it.
    """
    if out.exists() and not out.is_dir():
        raise LookalikeError(f"{out} is a file; give a folder for the model")
    ckpt = out / RUN_DIR / CHECKPOINT
    if out.is_dir():
        if (out / COMPLETE_FILE).exists() and not overwrite:
            raise LookalikeError(
                f"{out} already holds a trained model; pass overwrite to replace it, or choose another folder"
            )
        foreign = [p.name for p in out.iterdir() if p.name not in MODEL_FILES and not p.name.endswith(".tmp")]
        if foreign:
            raise LookalikeError(f"{out} is not empty and is not a lookalike model folder ({foreign[0]}, ...)")
        if overwrite or resume is False:
            (out / COMPLETE_FILE).unlink(missing_ok=True)  # first: the folder stops being a model at once
            for name in MODEL_FILES:
                p = out / name
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink(missing_ok=True)
            return None
        if ckpt.exists():
            return ckpt
    if resume:
        raise LookalikeError(f"nothing to resume in {out} (no unfinished run there)")
    return None


def _load_checkpoint(path: Path | None, o: TrainOptions, data_hash: str, out: Path, say: Say) -> dict | None:
    """The state of an unfinished run, if it was run with these options on these files (an unreadable one is
    dropped: it only costs the epochs it held)."""
    import torch

    if path is None:
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:
        say(f"checkpoint in {path.parent} is unreadable; starting afresh")
        return None
    options = state.get("options")
    if options is None or TrainOptions.comparable(options) != o.run_identity() or state.get("data") != data_hash:
        raise LookalikeError(
            f"{out} holds an unfinished run with other options or data; pass the same options to resume it, "
            "overwrite to start afresh, or choose another folder"
        )
    return state


# --- one model ---------------------------------------------------------------------------------------------------


@dataclass
class Fitted:
    """A finished loop: the embedder with its best weights, and what the model card reports of the run."""

    embedder: Any
    head: dict[str, Any]  # the projection head's config, as the card records it
    history: list[dict[str, float]]
    epochs_run: int
    best_epoch: int
    metrics: dict[str, dict[str, float]]  # validation "before" (backbone) and "after" (best epoch)
    embeddings: np.ndarray  # every row of the data by the best weights
    frozen_seconds: float
    resumed_from: int


class _Inputs:
    """What the trainable part is fed: the pooled backbone features (frozen backbone), or the cached outputs of
    the frozen layers (fine-tuning), of which each step draws a view and a random crop."""

    def __init__(self, embedder: Any, d: TrainingData, start: int, crop: float) -> None:
        import torch

        self.embedder, self.d, self.start, self.crop = embedder, d, start, crop
        self.pooled = torch.from_numpy(d.pooled)
        self.plain: np.ndarray | None = None  # (N, C, h, w) frozen maps of the plain images
        self.views: np.ndarray | None = None  # (AUG_VIEWS - 1, n_train, C, h, w) of the augmented views
        self.frozen_seconds = 0.0

    def compute_frozen(self, model: str, resolution: int, seed: int, progress: bool, say: Say) -> None:
        say(
            f"frozen layers once: {len(self.d.files)} images and {AUG_VIEWS - 1} augmented views of each training "
            f"image at {resolution} px"
        )
        t0 = time.perf_counter()
        self.plain, self.views = stem_features(
            self.embedder, model, self.d.paths, self.d.train, resolution, self.start, np.random.default_rng(seed),
            progress,
        )  # fmt: skip
        self.frozen_seconds = time.perf_counter() - t0
        say(f"frozen layers done in {self.frozen_seconds:.0f}s")

    def _from_maps(self, maps: np.ndarray) -> Any:
        import torch

        e = self.embedder
        return e.embed_pooled(e.pool(e.top(torch.from_numpy(maps.astype(np.float32)), self.start)))

    def batch(self, pos: np.ndarray, rng: np.random.Generator) -> Any:
        """Embeddings (with gradients) of the training images at positions ``pos`` of the training rows."""
        rows = self.d.train[pos]
        if self.plain is None:
            return self.embedder.embed_pooled(self.pooled[rows])
        view = rng.integers(0, AUG_VIEWS, len(pos))  # 0: the plain image, else an augmented view
        maps = np.where((view == 0)[:, None, None, None], self.plain[rows], self.views[np.maximum(view - 1, 0), pos])
        return self._from_maps(random_crop(maps, self.crop, rng))

    def embed_all(self) -> np.ndarray:
        """Every row's embedding by the current weights, without augmentation."""
        import torch

        self.embedder.eval()
        with torch.inference_mode():
            if self.plain is None:
                return self.embedder.embed_pooled(self.pooled).numpy()
            return np.concatenate(
                [self._from_maps(self.plain[s : s + 64]).numpy() for s in range(0, len(self.plain), 64)]
            )


def _trainable(embedder: Any, loss_fn: Any, o: TrainOptions, start: int) -> Any:
    """Freeze the backbone but its last ``o.unfreeze`` blocks; Adam over the head (×1), the tuned blocks (×1/3)
    and the loss's own parameters (×10, class proxies learn from few examples per step)."""
    import torch

    for prm in embedder.net.parameters():
        prm.requires_grad = False
    groups = [{"params": list(embedder.head.parameters()), "lr_mult": 1.0}]  # each epoch: lr × lr_mult × schedule
    if o.unfreeze:
        tuned = [*embedder.net._blocks[start:], embedder.net._conv_head, embedder.net._bn1]
        for m in tuned:
            for prm in m.parameters():
                prm.requires_grad = True
        groups.append({"params": [p for m in tuned for p in m.parameters()], "lr_mult": 1 / 3})
    if list(loss_fn.parameters()):
        groups.append({"params": list(loss_fn.parameters()), "lr_mult": 10.0})
    return torch.optim.Adam(groups, lr=o.lr, weight_decay=1e-4)


def epoch_order(labels: np.ndarray, m: int, batch: int, seed: int) -> np.ndarray:
    """One epoch's batches (``m`` images of each of ``batch / m`` classes), drawn from ``seed`` alone.

    PML's sampler draws from numpy's global random state and keeps its shuffled class order from epoch to epoch:
    used as it is, one seed would sample differently on every run, and a resumed run differently from an
    uninterrupted one. A fresh sampler per epoch drawing from a seeded generator makes the batches a function of
    (seed, epoch).
    """
    from pytorch_metric_learning.samplers import MPerClassSampler
    from pytorch_metric_learning.utils import common_functions as pml_common

    sampler = MPerClassSampler(labels, m=m, batch_size=batch, length_before_new_iter=max(batch, len(labels)))
    saved, pml_common.NUMPY_RANDOM = pml_common.NUMPY_RANDOM, np.random.RandomState(seed)
    try:
        return np.array(list(iter(sampler)))
    finally:
        pml_common.NUMPY_RANDOM = saved


@dataclass
class _Trainer:
    """What one epoch of training needs, made once by :func:`fit`."""

    o: TrainOptions
    d: TrainingData
    embedder: Any
    loss_fn: Any
    miner: Any
    opt: Any
    inputs: _Inputs
    y: Any  # the labels as a torch tensor
    batch: int

    def epoch(self, epoch: int, rng: np.random.Generator) -> float:
        """One pass over the training split in class-balanced batches; the mean loss."""
        import torch

        o, tr = self.o, self.d.train
        for g in self.opt.param_groups:
            g["lr"] = o.lr * g["lr_mult"] * lr_factor(o.schedule, epoch, o.epochs)
        torch.manual_seed(o.seed * 1000 + epoch)
        self.embedder.eval()  # BatchNorm of the backbone stays frozen; only the head's layers train
        self.embedder.head.train()
        order = epoch_order(self.d.labels[tr], PER_CLASS, self.batch, o.seed * 1000 + epoch)
        losses = []
        for s in range(0, len(order) - self.batch + 1, self.batch):
            pos = order[s : s + self.batch]
            emb, yb = self.inputs.batch(pos, rng), self.y[tr[pos]]
            loss = self.loss_fn(emb, yb, self.miner(emb, yb)) if self.miner is not None else self.loss_fn(emb, yb)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            losses.append(float(loss.detach()))
        return float(np.mean(losses)) if losses else 0.0

    def save(self, out: Path, epoch: int, history: list[dict[str, float]], best: dict[str, Any]) -> None:
        """The checkpoint a resumed run starts from, written atomically after every epoch."""
        import torch

        state = {
            "epoch": epoch,
            "model": self.embedder.state_dict(),
            "loss": self.loss_fn.state_dict(),
            "opt": self.opt.state_dict(),
            "history": history,
            "best": best,
            "options": self.o.run_identity(),
            "data": self.d.hash,
        }
        atomic_write(out / RUN_DIR / CHECKPOINT, lambda tmp, st=state: torch.save(st, tmp))


def _trainer(o: TrainOptions, d: TrainingData, state: dict[str, Any] | None) -> tuple[_Trainer, dict[str, Any]]:
    """The model, loss, optimiser and inputs of a run (restored from ``state`` when resuming); the head's spec."""
    import torch

    torch.manual_seed(o.seed)
    head = {"type": o.head, "in": d.pooled.shape[1], "hidden": HEAD_HIDDEN, "dim": o.dim, "dropout": HEAD_DROPOUT}
    embedder = build_embedder(o.model, head)
    loss_fn, miner = make_loss(o, len(d.classes))
    start = len(embedder.net._blocks) - o.unfreeze
    opt = _trainable(embedder, loss_fn, o, start)
    if state is not None:
        embedder.load_state_dict(state["model"])
        loss_fn.load_state_dict(state["loss"])
        opt.load_state_dict(state["opt"])
    batch = max(PER_CLASS, min(o.batch_size, PER_CLASS * len(d.classes)) // PER_CLASS * PER_CLASS)
    inputs = _Inputs(embedder, d, start, o.crop)
    return _Trainer(o, d, embedder, loss_fn, miner, opt, inputs, torch.from_numpy(d.labels), batch), head


def fit(
    o: TrainOptions,
    d: TrainingData,
    out: Path,
    checkpoint: Path | None = None,
    *,
    progress: bool = False,
    say: Say = lambda _msg: None,
) -> Fitted:
    """Train one model on ``d`` (resuming from ``checkpoint``), checkpointing every epoch in ``out/run/``; stop
    after ``o.epochs`` or ``o.patience`` epochs without a better validation score, and keep the best epoch."""
    state = _load_checkpoint(checkpoint, o, d.hash, out, say)
    (out / RUN_DIR).mkdir(parents=True, exist_ok=True)
    t, head = _trainer(o, d, state)
    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"epoch": 0, "score": -1.0, "state": None}
    first_epoch = 1
    if state is not None:
        history, best, first_epoch = state["history"], state["best"], state["epoch"] + 1
        say(f"resuming {out} after epoch {state['epoch']}")
    tr, va, labels = d.train, d.val, d.labels
    before = validation_metrics(d.pooled[va], labels[va], d.pooled[tr], labels[tr])
    if o.unfreeze:
        t.inputs.compute_frozen(o.model, o.resolution, o.seed, progress, say)
    rng = np.random.default_rng(o.seed + first_epoch)
    epoch = first_epoch - 1
    stopped_early = False
    with keep_freed_memory():  # the fine-tuning steps: see there
        for epoch in range(first_epoch, o.epochs + 1):
            if best["epoch"] and epoch - best["epoch"] > o.patience:
                stopped_early = True
                epoch -= 1
                break
            t0 = time.perf_counter()
            loss = t.epoch(epoch, rng)
            emb_all = t.inputs.embed_all()
            metrics = validation_metrics(emb_all[va], labels[va], emb_all[tr], labels[tr])
            row = {"epoch": epoch, "loss": loss, "lr": t.opt.param_groups[0]["lr"], **metrics}
            row["seconds"] = time.perf_counter() - t0
            history.append(row)
            score = metrics["map_at_r"] + metrics["precision_at_1"]
            if score > best["score"]:
                best = {
                    "epoch": epoch,
                    "score": score,
                    "state": {k: v.clone() for k, v in t.embedder.state_dict().items()},
                }
            t.save(out, epoch, history, best)
            say(
                f"epoch {epoch}/{o.epochs}: loss {row['loss']:.4f}, val precision@1 {metrics['precision_at_1']:.3f}, "
                f"mAP@R {metrics['map_at_r']:.3f} ({row['seconds']:.1f}s)" + (" *" if best["epoch"] == epoch else "")
            )
    if best["state"] is None:
        raise LookalikeError("training produced no epochs; raise epochs")
    if stopped_early:
        say(f"stopped early: no better validation for {o.patience} epochs after epoch {best['epoch']}")
    t.embedder.load_state_dict(best["state"])
    final = t.inputs.embed_all()
    after = validation_metrics(final[va], labels[va], final[tr], labels[tr])
    return Fitted(
        embedder=t.embedder,
        head=head,
        history=history,
        epochs_run=epoch,
        best_epoch=int(best["epoch"]),
        metrics={"before": before, "after": after},
        embeddings=final,
        frozen_seconds=t.inputs.frozen_seconds,
        resumed_from=first_epoch - 1,
    )


# --- members -----------------------------------------------------------------------------------------------------


def train_members(
    train_one: Callable[[Path, TrainOptions], TrainResult],
    out: Path,
    o: TrainOptions,
    *,
    data: Any = None,
    overwrite: bool = False,
    resume: bool | None = None,
    say: Say = lambda _msg: None,
    started: float | None = None,
) -> TrainResult:
    """``members=N``: N models that differ only in their seed (initialisation, augmented views, sampling and the
    validation split, so between them nearly every image is trained on), used as one by joining their embeddings.

    Members trained apart make partly different mistakes, so their joined embedding tends to beat each of them;
    it costs N times the training, but at indexing time the frozen layers, identical in every member, run once.
    Each member is an ordinary model folder under ``OUT/members/``, trained by ``train_one(folder, options)``, so a
    killed run resumes inside the member it was training and finished members are kept.
    """
    started = time.perf_counter() if started is None else started
    if resume and not overwrite and not (out / MEMBERS_DIR).is_dir():
        raise LookalikeError(f"nothing to resume in {out} (no unfinished run there)")
    if prepare_out(out, overwrite, None if resume else resume) is not None:
        raise LookalikeError(f"{out} holds an unfinished single-model run; resume it with members=1, or pass overwrite")
    (out / MEMBERS_DIR).mkdir(parents=True, exist_ok=True)
    results: list[TrainResult] = []
    for k in range(o.members):
        mo = TrainOptions(**{**asdict(o), "members": 1, "seed": o.seed + k})
        mdir = out / MEMBERS_DIR / f"seed{mo.seed}"
        if (mdir / COMPLETE_FILE).exists():
            card = read_model_card(mdir)
            if TrainOptions.comparable(card["options"]) != mo.run_identity():
                raise LookalikeError(
                    f"{mdir} was trained with other options; pass the same options to finish {out}, or overwrite"
                )
            say(f"member {k + 1}/{o.members} (seed {mo.seed}) already trained")
            results.append(result_from_card(mdir, card))
            continue
        say(f"member {k + 1}/{o.members} (seed {mo.seed})")
        results.append(train_one(mdir, mo))

    cards = [read_model_card(r.out) for r in results]
    card = members_card(o, cards, [str(r.out.relative_to(out)) for r in results], data)
    write_card(out, card, members_card_markdown(card, cards))
    mean = {
        when: {m: float(np.mean([r.metrics[when][m] for r in results])) for m in results[0].metrics[when]}
        for when in ("before", "after")
    }
    first = results[0]
    return TrainResult(
        out=out,
        classes=first.classes,
        n_train=first.n_train,
        n_val=first.n_val,
        epochs_run=sum(r.epochs_run for r in results),
        best_epoch=first.best_epoch,
        metrics=mean,
        seconds=time.perf_counter() - started,
        resumed_from=first.resumed_from,
        skipped=first.skipped,
        dropped_classes=first.dropped_classes,
        members=results,
    )
