"""Learn an embedding from labelled folders (``lookalike train``): metric learning on top of the offline backbone.

The ImageNet backbone is only fair on a user's own domain (about 0.85 linear-probe accuracy on room photos), so
lookalike learns from the user's labels instead of shipping a bigger model. Two regimes:

* ``unfreeze=0`` trains a projection head on backbone features pooled once and cached (keyed by file, size, mtime,
  weights and resolution), so an epoch is a few milliseconds and a whole run takes minutes on two cores;
* ``unfreeze=N`` also fine-tunes the last N blocks of the backbone on lightly augmented images (crop, flip, colour).
  The frozen layers run once per image and view, then every epoch only runs the last blocks, so many epochs stay
  affordable.

A run is :func:`train`: the labelled files and their split (:mod:`.data`), the frozen backbone's features
(:mod:`.features`), the loop with its checkpoints (:mod:`.loop`), and the model folder with its card (:mod:`.card`,
read back by :mod:`lookalike.models.trained`; the ``complete`` marker is written last).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from lookalike.errors import ConfigError
from lookalike.images import labelled_files
from lookalike.training.cache import pooled_features
from lookalike.training.card import model_card, write_model
from lookalike.training.data import TrainingData, check_classes, prepare_data
from lookalike.training.loop import fit, prepare_out, train_members, validation_metrics
from lookalike.training.options import (
    DEFAULT_EPOCHS,
    DEFAULT_MARGIN,
    DEFAULT_SCALE,
    HEADS,
    LOSSES,
    MAX_MEMBERS,
    MAX_UNFREEZE,
    MINERS,
    SCHEDULES,
    TrainOptions,
    TrainResult,
)

__all__ = [
    "DEFAULT_EPOCHS",
    "DEFAULT_MARGIN",
    "DEFAULT_SCALE",
    "HEADS",
    "LOSSES",
    "MAX_MEMBERS",
    "MAX_UNFREEZE",
    "MINERS",
    "SCHEDULES",
    "TrainOptions",
    "TrainResult",
    "pooled_features",
    "train",
    "validation_metrics",
]


def train(
    data: str | os.PathLike[str] | None,
    out: str | os.PathLike[str],
    options: TrainOptions | None = None,
    *,
    files: list[tuple[Path, str]] | None = None,
    overwrite: bool = False,
    resume: bool | None = None,
    progress: bool = False,
    log: Callable[[str], object] | None = None,
) -> TrainResult:
    """Train an embedding on ``data/<class>/*`` (or explicit ``files``) and write a model folder to ``out``.

    ``resume``: None resumes an unfinished run in ``out`` automatically, True requires one, False starts afresh.
    ``log`` is called with one line per epoch (the CLI prints them).
    """
    started = time.perf_counter()
    o = (options or TrainOptions()).resolved()
    out = Path(out)
    say = log or (lambda _msg: None)
    if files is None:
        if data is None:
            raise ConfigError("give a labelled folder to train on")
        files = labelled_files(data, what="training images")
    if o.members > 1:

        def train_member(folder: Path, member: TrainOptions) -> TrainResult:
            return train(data, folder, member, files=files, progress=progress, log=say)

        return train_members(
            train_member, out, o, data=data, overwrite=overwrite, resume=resume, say=say, started=started
        )

    files, dropped = check_classes(files)  # before anything is written
    checkpoint = prepare_out(out, overwrite, resume)
    # The backbone's features once: the head's input (unfreeze 0), the "before" metrics and the readability check.
    pooled, unreadable = pooled_features([p for p, _ in files], o.model, o.resolution, progress=progress)
    d = prepare_data(
        files, pooled, unreadable, val_split=o.val_split, seed=o.seed, drop_suspects=o.drop_suspects, dropped=dropped,
        say=say,
    )  # fmt: skip
    leaks = held_out_leaks(d, say)
    fitted = fit(o, d, out, checkpoint, progress=progress, say=say)
    card = model_card(o, d, fitted, data)
    card["held_out_leaks"] = {"count": len(leaks), "pairs": leaks[:100]}
    write_model(out, card, d, fitted)
    return TrainResult(
        out=out,
        classes=d.classes,
        n_train=len(d.train),
        n_val=len(d.val),
        epochs_run=fitted.epochs_run,
        best_epoch=fitted.best_epoch,
        metrics=fitted.metrics,
        seconds=time.perf_counter() - started,
        resumed_from=fitted.resumed_from,
        skipped=d.skipped,
        dropped_classes=d.dropped_classes,
        leaks=leaks,
    )


def held_out_leaks(d: TrainingData, say: Callable[[str], object]) -> list[dict[str, str | float]]:
    """Validation images that are copies (pixel-checked, upright or mirrored) of training images: the validation
    figures are optimistic by them (``lookalike.leaks``)."""
    from lookalike.leaks import split_leaks

    found = split_leaks(d.pooled, d.paths, d.train, d.val)
    if found:
        say(
            f"warning: {len(found)} of {len(d.val)} validation images are copies of training images (first: "
            f"{found[0]['held_out']} ~ {found[0]['train']}); validation figures are optimistic"
        )
    return found
