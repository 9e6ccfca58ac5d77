"""What a finished run leaves in its model folder besides the checkpoints: weights, model card (``model.json`` and
``MODEL.md``), training curves and a t-SNE picture, and last the ``complete`` marker.

The card's fields are the model folder format (:mod:`lookalike.models.trained` reads ``format``, ``base_model``,
``resolution``, ``gem_p``, ``head``, ``embedding_dim`` and ``members``); the rest records how the model was made.
Every file is written atomically and the marker last, so a run killed while finishing leaves no half model.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lookalike.io import atomic_write
from lookalike.models.trained import (
    CARD_FILE,
    COMPLETE_FILE,
    FORMAT,
    FORMAT_VERSION,
    MEMBERS_DIR,
    RUN_DIR,
    WEIGHTS_FILE,
)
from lookalike.training.cache import GEM_P
from lookalike.training.options import TrainOptions, TrainResult

if TYPE_CHECKING:
    from lookalike.training.data import TrainingData
    from lookalike.training.loop import Fitted

MARKDOWN_FILE = "MODEL.md"
CURVES_FILE = "curves.png"
TSNE_FILE = "tsne.png"
MODEL_FILES = (COMPLETE_FILE, CARD_FILE, WEIGHTS_FILE, MARKDOWN_FILE, CURVES_FILE, TSNE_FILE, RUN_DIR, MEMBERS_DIR)


def _root(data: str | os.PathLike[str] | None) -> str | None:
    return str(Path(data).resolve()) if data is not None else None


def model_card(o: TrainOptions, d: TrainingData, fitted: Fitted, data: str | os.PathLike[str] | None) -> dict:
    """The card of one trained model (``model.json``)."""
    counts = np.bincount(d.labels[d.train], minlength=len(d.classes))
    counts_val = np.bincount(d.labels[d.val], minlength=len(d.classes))
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "base_model": o.model,
        "resolution": o.resolution,
        "gem_p": GEM_P,
        "head": fitted.head,
        "embedding_dim": o.dim,
        "loss": o.loss,
        "scale": o.scale,
        "temperature": (1.0 / o.scale) if o.loss == "normsoftmax" and o.scale else None,
        "margin": o.margin,
        "miner": o.miner if o.loss == "triplet" else None,
        "unfreeze": o.unfreeze,
        "options": asdict(o),
        "data": {
            "root": _root(data),
            "images": len(d.files),
            "train": len(d.train),
            "validation": len(d.val),
            "skipped": d.skipped,
            "dropped_classes": d.dropped_classes,
            "suspects": d.suspects,
            "hash": d.hash,
        },
        "classes": [
            {"name": c, "train": int(counts[i]), "validation": int(counts_val[i])} for i, c in enumerate(d.classes)
        ],
        "epochs_run": fitted.epochs_run,
        "best_epoch": fitted.best_epoch,
        "history": fitted.history,
        "metrics": fitted.metrics,
        "training_seconds": round(sum(h["seconds"] for h in fitted.history), 1),
        "frozen_seconds": round(fitted.frozen_seconds, 1),  # the last (or resumed) pass through the frozen layers
    }


def write_model(out: Path, card: dict[str, Any], d: TrainingData, fitted: Fitted) -> None:
    """Weights, pictures and card, then the ``complete`` marker; the checkpoints go once the model is complete."""
    import torch

    atomic_write(out / WEIGHTS_FILE, lambda tmp: torch.save(fitted.embedder.state_dict(), tmp))
    curves_png(fitted.history, out / CURVES_FILE)
    tsne_before_after(d, fitted.embeddings, out / TSNE_FILE)
    write_card(out, card, model_card_markdown(card))
    shutil.rmtree(out / RUN_DIR, ignore_errors=True)


def write_card(out: Path, card: dict[str, Any], markdown: str) -> None:
    """``model.json`` and ``MODEL.md``, then the marker that makes the folder a model."""
    atomic_write(out / CARD_FILE, json.dumps(card, indent=1))
    atomic_write(out / MARKDOWN_FILE, markdown)
    atomic_write(out / COMPLETE_FILE, f"{FORMAT} {FORMAT_VERSION}\n")


def members_card(o: TrainOptions, cards: list[dict[str, Any]], member_dirs: list[str], data: Any) -> dict:
    """The card of members used as one model: what they share, and per member what differs."""
    first = cards[0]
    shared = ("format", "format_version", "base_model", "resolution", "gem_p", "loss", "scale", "temperature",
              "margin", "miner", "unfreeze", "classes")  # fmt: skip
    return {
        **{k: first[k] for k in shared},
        "options": asdict(o),
        "embedding_dim": sum(c["embedding_dim"] for c in cards),
        "members": member_dirs,
        "epochs_run": [c["epochs_run"] for c in cards],
        "best_epoch": [c["best_epoch"] for c in cards],
        "metrics": {"members": [c["metrics"] for c in cards]},
        "training_seconds": round(sum(c["training_seconds"] for c in cards), 1),
        "frozen_seconds": round(sum(c["frozen_seconds"] for c in cards), 1),
        "data": {**first["data"], "root": _root(data)},
    }


def read_model_card(path: Path) -> dict[str, Any]:
    return json.loads((Path(path) / CARD_FILE).read_text())


def result_from_card(path: Path, card: dict[str, Any]) -> TrainResult:
    """The TrainResult of a model finished earlier (a member of an interrupted run), from its card."""
    return TrainResult(
        out=path,
        classes=[c["name"] for c in card["classes"]],
        n_train=card["data"]["train"],
        n_val=card["data"]["validation"],
        epochs_run=card["epochs_run"],
        best_epoch=card["best_epoch"],
        metrics=card["metrics"],
        seconds=0.0,
        skipped=[tuple(s) for s in card["data"]["skipped"]],
        dropped_classes=card["data"]["dropped_classes"],
    )


# --- pictures ----------------------------------------------------------------------------------------------------


def curves_png(history: list[dict[str, float]], path: Path) -> Path:
    """Training loss and validation precision@1 / mAP@R per epoch, side by side."""
    import matplotlib.pyplot as plt

    from lookalike.plots import save_figure

    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    a.plot(ep, [h["loss"] for h in history], marker="o")
    a.set(xlabel="epoch", ylabel="training loss", title="loss")
    b.plot(ep, [h["precision_at_1"] for h in history], marker="o", label="precision@1")
    b.plot(ep, [h["map_at_r"] for h in history], marker="o", label="mAP@R")
    b.set(xlabel="epoch", ylabel="validation", title="validation retrieval", ylim=(0, 1.02))
    b.legend()
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def tsne_before_after(d: TrainingData, embeddings: np.ndarray, path: Path) -> Path:
    """t-SNE of the validation images by the untrained backbone and by the trained model, side by side."""
    from lookalike.plots import tsne_png

    return tsne_png(
        d.pooled[d.val],
        [d.classes[i] for i in d.labels[d.val]],
        path,
        beside=[("validation embeddings, after (trained)", embeddings[d.val])],
        title="validation embeddings, before (backbone)",
        min_points=1,
    )


# --- MODEL.md ------------------------------------------------------------------------------------------------------


def model_card_markdown(card: dict[str, Any]) -> str:
    b, a = card["metrics"]["before"], card["metrics"]["after"]
    loss = card["loss"] + (f", λ = {card['scale']:g}" if card.get("scale") else "")
    loss += f", margin {card['margin']:g}" if card.get("margin") else ""
    loss += f", {card['miner']} miner" if card.get("miner") else ""
    lines = [
        "# Trained lookalike embedding",
        "",
        f"- Base model: {card['base_model']} at {card['resolution']} px; "
        + (f"last {card['unfreeze']} block(s) fine-tuned" if card["unfreeze"] else "backbone frozen")
        + f"; {card['head']['type']} head to {card['embedding_dim']} dimensions",
        f"- Loss: {loss}",
        f"- Data: {card['data']['root'] or '(file list)'}: {card['data']['images']} images, "
        f"{len(card['classes'])} classes, {card['data']['train']} train / {card['data']['validation']} validation"
        + (f", {len(card['data']['skipped'])} unreadable skipped" if card["data"]["skipped"] else "")
        + (
            f", classes dropped (one image): {', '.join(card['data']['dropped_classes'])}"
            if card["data"]["dropped_classes"]
            else ""
        ),
        f"- Epochs: {card['epochs_run']} run, best {card['best_epoch']}; {card['training_seconds']} s of training",
        "",
        "| validation | precision@1 | mAP@R |",
        "|---|---|---|",
        f"| backbone (before) | {b['precision_at_1']:.3f} | {b['map_at_r']:.3f} |",
        f"| trained (after) | {a['precision_at_1']:.3f} | {a['map_at_r']:.3f} |",
        "",
        "Classes: " + ", ".join(f"{c['name']} ({c['train']}+{c['validation']})" for c in card["classes"]),
        "",
        f"Use it: `lookalike index PHOTOS --model THIS_FOLDER`. Curves: {CURVES_FILE}; t-SNE: {TSNE_FILE}.",
        f"Format: {card['format']} version {card['format_version']}.",
    ]
    return "\n".join(lines) + "\n"


def members_card_markdown(card: dict[str, Any], cards: list[dict[str, Any]]) -> str:
    rows = [
        f"| {m} | {c['options']['seed']} | {c['epochs_run']} (best {c['best_epoch']}) | "
        f"{c['metrics']['before']['precision_at_1']:.3f} → {c['metrics']['after']['precision_at_1']:.3f} | "
        f"{c['metrics']['before']['map_at_r']:.3f} → {c['metrics']['after']['map_at_r']:.3f} |"
        for m, c in zip(card["members"], cards, strict=True)
    ]
    lines = [
        f"# Trained lookalike embedding: {len(cards)} members",
        "",
        f"Members trained alike but for the seed; the embedding ({card['embedding_dim']} dimensions) is their "
        "embeddings concatenated (each member's own card is in its folder).",
        "",
        "| member | seed | epochs | validation precision@1 | mAP@R |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "Each member validates on its own split, so there is no validation figure for the members together.",
        f"Use it: `lookalike index PHOTOS --model THIS_FOLDER`. Format: {card['format']} version "
        f"{card['format_version']}.",
    ]
    return "\n".join(lines) + "\n"
