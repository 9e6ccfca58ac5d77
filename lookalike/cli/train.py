"""Train embeddings from labelled folders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from lookalike.cli.common import (
    QuietOpt,
    app,
    err,
    shown,
)


@app.command("train")
def train_cmd(
    data: Annotated[Path, typer.Argument(help="Labelled folder: DATA/<class>/<image>.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Model folder to write.")],
    loss: Annotated[str, typer.Option(help="normsoftmax, triplet or arcface.")] = "normsoftmax",
    scale: Annotated[
        float | None, typer.Option(help="λ: softmax scale (temperature 1/λ) [normsoftmax 20, arcface 30].")
    ] = None,
    margin: Annotated[float | None, typer.Option(help="Triplet margin [0.2]; ArcFace, degrees [28.6].")] = None,
    miner: Annotated[str, typer.Option(help="Triplet miner: semihard or hard (batch-hard).")] = "semihard",
    unfreeze: Annotated[int, typer.Option(help="Backbone blocks to fine-tune (0: head only).")] = 0,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs [40]; early stopping may end sooner.")] = None,
    val_split: Annotated[float, typer.Option(help="Fraction of each class held out for validation.")] = 0.15,
    resolution: Annotated[int | None, typer.Option(help="Input size in pixels [model default].")] = None,
    model: Annotated[str, typer.Option(help="Base backbone.")] = "efficientnet-lite0",
    dim: Annotated[int, typer.Option(help="Embedding size.")] = 128,
    head: Annotated[str, typer.Option(help="Projection head: mlp or linear.")] = "mlp",
    batch_size: Annotated[int, typer.Option(help="Images per training step.")] = 64,
    lr: Annotated[float | None, typer.Option(help="Learning rate [1e-3 head only, 3e-4 fine-tuning].")] = None,
    patience: Annotated[int, typer.Option(help="Stop after this many epochs without a better validation.")] = 5,
    seed: Annotated[int, typer.Option(help="Random seed (split, sampling, initialisation).")] = 0,
    crop: Annotated[
        float, typer.Option(help="Fine-tuning: smallest fraction of a side kept by the random crop each step (1: off).")
    ] = 0.75,
    schedule: Annotated[
        str, typer.Option(help="Learning rate over the epochs: constant, or cosine (decays to 1/100 by --epochs).")
    ] = "constant",
    members: Annotated[
        int,
        typer.Option(help="Train N models (seeds seed..seed+N-1) used as one: N× the training, more accurate."),
    ] = 1,
    drop_suspects: Annotated[
        float,
        typer.Option(
            help="Leave out images whose folder label a probe fitted on the other images gives less than this "
            "probability (0: keep all; 0.1 catches mostly wrong labels)."
        ),
    ] = 0.0,
    resume: Annotated[
        bool | None, typer.Option("--resume/--restart", help="Require resuming / discard an unfinished run [auto].")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a finished model in --out.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Learn an embedding from labelled folders; use it with `lookalike index PHOTOS --model OUT`."""
    from lookalike.training import TrainOptions, train

    options = TrainOptions(
        loss=loss, scale=scale, margin=margin, miner=miner, unfreeze=unfreeze, epochs=epochs, val_split=val_split,
        resolution=resolution, model=model, dim=dim, head=head, batch_size=batch_size, lr=lr, patience=patience,
        seed=seed, crop=crop, schedule=schedule, members=members, drop_suspects=drop_suspects,
    )  # fmt: skip
    result = train(
        data, out_dir, options, overwrite=overwrite, resume=resume, progress=not quiet,
        log=None if quiet else (lambda line: err.print(line, highlight=False)),
    )  # fmt: skip
    for path, reason in result.skipped[:20]:
        err.print(f"  [yellow]skipped[/] {shown(path)}: {escape(reason)}", highlight=False)
    if len(result.skipped) > 20:
        err.print(f"  … and {len(result.skipped) - 20} more (listed in model.json)")
    if result.dropped_classes:
        err.print(f"[yellow]classes with one image left out[/]: {', '.join(result.dropped_classes)}")
    for r in result.members or [result]:
        b, a = r.metrics["before"], r.metrics["after"]
        who = f"member {r.out.name}: " if result.members else ""
        err.print(
            f"[bold green]trained[/] {who}{len(r.classes)} classes, {r.n_train} train / {r.n_val} validation "
            f"images, {r.epochs_run} epochs (best {r.best_epoch}); validation "
            f"precision@1 {b['precision_at_1']:.3f} → {a['precision_at_1']:.3f}, mAP@R {b['map_at_r']:.3f} → "
            f"{a['map_at_r']:.3f}",
            highlight=False,
        )
    _warn_of_leaks(result.leaks or (result.members[0].leaks if result.members else []))
    err.print(f"in {result.seconds:.0f}s" + (f", {len(result.members)} members used as one" if result.members else ""))
    err.print(f"model: {result.out} (use: lookalike index PHOTOS --model {result.out})")


def _warn_of_leaks(leaks: list[dict[str, Any]]) -> None:
    """Validation images that are copies of training images (``lookalike.leaks.split_leaks``): the first, and where
    the others are."""
    if leaks:
        err.print(
            f"[yellow]warning: {len(leaks)} validation images are copies of training images[/] (first: "
            f"{shown(leaks[0]['held_out'])} ~ {shown(leaks[0]['train'])}); validation figures are optimistic "
            "(all pairs in model.json, held_out_leaks)",
            highlight=False,
        )
