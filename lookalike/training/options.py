"""What defines a training run (:class:`TrainOptions`), what a run produced (:class:`TrainResult`), and the choices
the command line offers.

Options are checked and their defaults filled in by :meth:`TrainOptions.resolved`; errors name an option as Python
spells it (``members must be 1..8``), since the library is called from Python as often as from the command line.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from lookalike.errors import ConfigError
from lookalike.models.trained import BASE_MODELS

LOSSES = ("normsoftmax", "triplet", "arcface")
MINERS = ("semihard", "hard")
HEADS = ("mlp", "linear")
SCHEDULES = ("constant", "cosine")
MAX_MEMBERS = 8
DEFAULT_SCALE = {"normsoftmax": 20.0, "arcface": 30.0}
DEFAULT_MARGIN = {"triplet": 0.2, "arcface": 28.6}  # triplet: cosine distance; arcface: degrees (PML's unit)
DEFAULT_EPOCHS = 40
# Blocks that may be fine-tuned: all of the stride-16 stage after its first (downsampling) block, and everything
# after it. The frozen maps cached per view then stay at 1/16 of the image side; one block further back they would
# be at 1/8, four times the memory and the compute per step.
MAX_UNFREEZE = {"efficientnet-lite0": 10, "efficientnet-lite2": 13}
STOPPING = ("epochs", "patience")  # options a resumed run may change: they only say when to stop


@dataclass
class TrainOptions:
    """Everything that defines a run; a resumed run must be asked for with the same options (epochs may grow)."""

    loss: str = "normsoftmax"
    scale: float | None = None
    margin: float | None = None
    miner: str = "semihard"
    unfreeze: int = 0
    epochs: int | None = None
    val_split: float = 0.15
    resolution: int | None = None
    model: str = "efficientnet-lite0"
    dim: int = 128
    head: str = "mlp"
    batch_size: int = 64
    lr: float | None = None
    patience: int = 5
    seed: int = 0
    crop: float = 0.75
    schedule: str = "constant"
    members: int = 1
    drop_suspects: float = 0.0

    def resolved(self) -> TrainOptions:
        """A checked copy with every default filled in (scale and margin per loss, resolution per model, ...)."""
        o = TrainOptions(**asdict(self))
        if o.loss not in LOSSES:
            raise ConfigError(f"unknown loss {o.loss!r}; use one of {', '.join(LOSSES)}")
        if o.miner not in MINERS:
            raise ConfigError(f"unknown miner {o.miner!r}; use semihard or hard")
        if o.model not in BASE_MODELS:
            raise ConfigError(f"can only train on {', '.join(BASE_MODELS)}, not {o.model!r}")
        if not 0 <= o.unfreeze <= MAX_UNFREEZE[o.model]:
            raise ConfigError(
                f"unfreeze must be 0..{MAX_UNFREEZE[o.model]} for {o.model} (blocks of the backbone to fine-tune), "
                f"got {o.unfreeze}"
            )
        if not 0.0 < o.val_split < 0.9:
            raise ConfigError(f"val_split must be between 0 and 0.9, got {o.val_split}")
        if o.head not in HEADS:
            raise ConfigError(f"head must be mlp or linear, got {o.head!r}")
        if not 0.25 <= o.crop <= 1.0:
            raise ConfigError(f"crop must be between 0.25 and 1 (fraction of the side kept), got {o.crop}")
        if o.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be constant or cosine, got {o.schedule!r}")
        if not 1 <= o.members <= MAX_MEMBERS:
            raise ConfigError(
                f"members must be 1..{MAX_MEMBERS} (models trained with seeds seed..seed+N-1), got {o.members}"
            )
        if not 0.0 <= o.drop_suspects < 1.0:
            raise ConfigError(f"drop_suspects must be 0 (keep all) or a probability below 1, got {o.drop_suspects}")
        if o.dim < 2 or o.batch_size < 4 or o.patience < 1:
            raise ConfigError("dim must be ≥ 2, batch_size ≥ 4 and patience ≥ 1")
        o.scale = float(o.scale if o.scale is not None else DEFAULT_SCALE.get(o.loss, 0.0)) or None
        if o.scale is not None and o.scale <= 0:
            raise ConfigError(f"scale must be positive, got {o.scale}")
        o.margin = float(o.margin if o.margin is not None else DEFAULT_MARGIN.get(o.loss, 0.0)) or None
        o.epochs = int(o.epochs or DEFAULT_EPOCHS)
        if o.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {o.epochs}")
        o.resolution = int(o.resolution or (224 if o.model == "efficientnet-lite0" else 260))
        o.resolution = max(32, round(o.resolution / 32) * 32)
        o.lr = float(o.lr or (1e-3 if o.unfreeze == 0 else 3e-4))
        return o

    def run_identity(self) -> dict[str, Any]:
        """The options a checkpoint records: all but the stopping ones, which a resumed run may change."""
        return {k: v for k, v in asdict(self).items() if k not in STOPPING}

    @classmethod
    def comparable(cls, options: dict[str, Any]) -> dict[str, Any]:
        """What must match for a checkpoint or a finished member to belong to a run: every option but the stopping
        ones, with options added since it was written (absent from its record) at their defaults."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in options.items() if k in known}).run_identity()


@dataclass
class TrainResult:
    """What a run produced; ``metrics`` holds validation precision@1 / mAP@R before (raw backbone) and after."""

    out: Path
    classes: list[str]
    n_train: int
    n_val: int
    epochs_run: int
    best_epoch: int
    metrics: dict[str, dict[str, float]]
    seconds: float
    resumed_from: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    dropped_classes: list[str] = field(default_factory=list)
    members: list[TrainResult] = field(default_factory=list)
    leaks: list[dict[str, str | float]] = field(default_factory=list)  # held-out images copied from training ones
