"""Models made by ``lookalike train``: a folder holding the weights and a model card, loaded like any backbone.

The trained embedding is backbone → GeM over the whole feature map → L2 → projection head → L2, and the graph
returns it as (N, D, 1, 1): mean pooling of that 1×1 map *is* the embedding, so indexing, search and the ONNX Runtime
path work unchanged (the backbone advertises ``default_pooling = "mean"``; GeM would clamp negative components).
Pooling over the whole map, padding included, is deliberate: the graph only sees pixels, and training pooled the
same way, so what was trained is exactly what runs.

A folder is a model only once its ``complete`` marker exists; that marker is written last, so a training run that
was killed leaves a folder that is refused with a message saying how to resume, never a half model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from lookalike.errors import ModelUnavailableError
from lookalike.models.base import TorchBackbone, cache_dir, file_hash
from lookalike.models.efficientnet import PIXEL_MEAN, PIXEL_STD  # the same pixels as the base model

FORMAT = "lookalike-trained-model"
FORMAT_VERSION = 1
CARD_FILE = "model.json"
WEIGHTS_FILE = "weights.pt"
COMPLETE_FILE = "complete"
RUN_DIR = "run"
MEMBERS_DIR = "members"
BASE_MODELS = ("efficientnet-lite0", "efficientnet-lite2")


def make_projection_head(cfg: dict[str, Any]) -> Any:
    """The projection head: BatchNorm standardises the pooled features, then a linear map or a one-hidden-layer MLP."""
    from torch import nn

    d_in, dim = int(cfg["in"]), int(cfg["dim"])
    if cfg.get("type", "mlp") == "linear":
        return nn.Sequential(nn.BatchNorm1d(d_in), nn.Dropout(float(cfg.get("dropout", 0.0))), nn.Linear(d_in, dim))
    hidden = int(cfg.get("hidden", 512))
    return nn.Sequential(
        nn.BatchNorm1d(d_in),
        nn.Dropout(float(cfg.get("dropout", 0.0))),
        nn.Linear(d_in, hidden),
        nn.ReLU(),
        nn.Linear(hidden, dim),
    )


def build_embedder(base: str, head_cfg: dict[str, Any], gem_p: float = 3.0) -> Any:
    """A fresh embedder on the ImageNet weights of ``base``; trained weights are loaded on top by the caller."""
    import torch
    import torch.nn.functional as F  # noqa: N812
    from torch import nn

    from lookalike.models.efficientnet import feature_module, weights_file

    if base not in BASE_MODELS:
        raise ModelUnavailableError(f"cannot train on {base!r}; base models: {', '.join(BASE_MODELS)}")
    variant = base.removeprefix("efficientnet-")
    net = feature_module(variant, weights_file(variant)).net

    class Embedder(nn.Module):
        """Normalised NCHW pixels -> (N, D, 1, 1) unit-length embeddings."""

        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.head = make_projection_head(head_cfg)
            self.p = float(gem_p)

        def stem(self, x: torch.Tensor, upto: int) -> torch.Tensor:
            """Stem and the first ``upto`` blocks (the frozen part when fine-tuning)."""
            x = self.net._swish(self.net._bn0(self.net._conv_stem(x)))
            for block in self.net._blocks[:upto]:
                x = block(x)
            return x

        def top(self, x: torch.Tensor, start: int) -> torch.Tensor:
            """Blocks from ``start`` on and the head convolution: dense features."""
            for block in self.net._blocks[start:]:
                x = block(x)
            return self.net._swish(self.net._bn1(self.net._conv_head(x)))

        def pool(self, feats: torch.Tensor) -> torch.Tensor:
            g = feats.clamp(min=1e-6).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)
            return F.normalize(g, dim=1)

        def embed_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
            return F.normalize(self.head(pooled), dim=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n = len(self.net._blocks)
            e = self.embed_pooled(self.pool(self.top(self.stem(x, n), n)))
            return e[:, :, None, None]

    return Embedder().eval()


def read_card(path: Path) -> dict[str, Any]:
    """The model card of a finished model folder, or a one-line error saying what is wrong with the folder."""
    path = Path(path)
    card_path = path / CARD_FILE
    if not (path / COMPLETE_FILE).is_file():
        if (path / RUN_DIR).is_dir() or (path / MEMBERS_DIR).is_dir():
            raise ModelUnavailableError(
                f"{path} holds an unfinished training run; run `lookalike train DATA --out {path}` again to resume "
                "it, or delete the folder"
            )
        if card_path.is_file():
            raise ModelUnavailableError(f"{path} is a half-written model (no '{COMPLETE_FILE}' marker); retrain it")
        raise ModelUnavailableError(f"{path} is not a model folder from `lookalike train` (no {CARD_FILE})")
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(f"{path}: unreadable {CARD_FILE} ({exc}); retrain the model") from None
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise ModelUnavailableError(f"{path}: {CARD_FILE} is not a lookalike model card; retrain the model")
    if card.get("format_version") != FORMAT_VERSION:
        raise ModelUnavailableError(
            f"{path} was written by model format version {card.get('format_version')}; this lookalike reads "
            f"version {FORMAT_VERSION}: retrain it with `lookalike train`"
        )
    if "members" in card:
        for member in card["members"]:
            read_card(path / member)
    elif not (path / WEIGHTS_FILE).is_file():
        raise ModelUnavailableError(f"{path}: {WEIGHTS_FILE} is missing; retrain the model")
    return card


def build_ensemble(embedders: list[Any]) -> Any:
    """Members trained alike but for the seed, as one graph: their unit embeddings concatenated and scaled by
    1/sqrt(N), so the result is unit length and its cosine is the mean of the members' cosines.

    The layers no member fine-tuned hold the same ImageNet weights in every member, so they run once and only the
    tuned top of each member runs per member: an ensemble of N costs far less than N models at indexing time.
    """
    import torch
    from torch import nn

    def same(a: nn.Module, b: nn.Module) -> bool:
        return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))

    first, rest = embedders[0], embedders[1:]
    # how many leading blocks every member still holds untouched (the ImageNet ones no member fine-tuned)
    start = len(first.net._blocks)
    for e in rest:
        pairs = enumerate(zip(first.net._blocks, e.net._blocks, strict=True))
        start = min(start, next((i for i, (a, b) in pairs if not same(a, b)), start))
    stem_same = all(same(first.net._conv_stem, e.net._conv_stem) and same(first.net._bn0, e.net._bn0) for e in rest)

    class Ensemble(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.members = nn.ModuleList(embedders)
            self.shared = start if stem_same else -1

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.shared < 0:
                outs = [m(x)[:, :, 0, 0] for m in self.members]
            else:
                h = self.members[0].stem(x, self.shared)
                outs = [m.embed_pooled(m.pool(m.top(h, self.shared))) for m in self.members]
            e = torch.cat(outs, dim=1) / float(len(outs)) ** 0.5
            return e[:, :, None, None]

    return Ensemble().eval()


class TrainedBackbone(TorchBackbone):
    """A TorchBackbone whose ONNX export is keyed by the trained weights' hash rather than by its (path) name."""

    default_pooling = "mean"

    @property
    def onnx_path(self) -> Path:
        return cache_dir() / "onnx" / f"trained-{self.weights_id[:24]}.onnx"


def _load_embedder(path: Path, card: dict[str, Any]) -> Any:
    import torch

    embedder = build_embedder(card["base_model"], card["head"], card.get("gem_p", 3.0))
    try:
        state = torch.load(path / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        embedder.load_state_dict(state)
    except Exception as exc:
        raise ModelUnavailableError(f"{path}: cannot load {WEIGHTS_FILE} ({exc}); retrain the model") from None
    return embedder.eval()


def load_trained_model(path: Path, runtime: str = "auto", **kwargs: Any) -> TorchBackbone:
    """Load a model folder written by ``lookalike train`` as a backbone giving (N, D, 1, 1) embeddings.

    The export is keyed by the weights files' hashes, so with it cached the weights are hashed but never loaded
    (no torch); a weights file that cannot be loaded is reported when the model is first exported or run eagerly."""
    path = Path(path).resolve()
    card = read_card(path)
    if "members" in card:
        weights_id = hashlib.blake2b(
            "".join(file_hash(path / m / WEIGHTS_FILE) for m in card["members"]).encode(), digest_size=16
        ).hexdigest()

        def embedder() -> Any:
            return build_ensemble([_load_embedder(path / m, read_card(path / m)) for m in card["members"]])

    else:
        weights_id = file_hash(path / WEIGHTS_FILE)

        def embedder() -> Any:
            return _load_embedder(path, card)

    return TrainedBackbone(
        str(path),
        embedder,
        feature_dim=int(card["embedding_dim"]),
        stride=32,
        weights_id=weights_id,
        mean=PIXEL_MEAN,
        std=PIXEL_STD,
        default_resolution=int(card["resolution"]),
        runtime=runtime,
        extra_config={"trained": True, "base": card["base_model"], "format_version": FORMAT_VERSION},
        **kwargs,
    )
