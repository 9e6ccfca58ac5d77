"""DINOv2 ViTs (AnyLoc's backbone) in plain torch, loading the official checkpoints without the dinov2 package.

The module names match ``dinov2_vit{s,b,l}14_pretrain.pth`` (``patch_embed.proj``, ``blocks.N.attn.qkv``,
``blocks.N.ls1.gamma``, ...), so the released files load with ``strict=True``. Dense features are the patch tokens
(N, C, H/14, W/14) of a chosen ``layer`` (default: the last, after the final norm) and ``facet`` ("token", or
AnyLoc's "key" / "query" / "value" of that layer's attention); position embeddings are interpolated to any input
that is a multiple of 14.

Weights come from ``--weights FILE`` or the torch hub cache (``~/.cache/torch/hub/checkpoints/``); lookalike never
downloads them. These models run in eager torch: their position-embedding interpolation depends on the input size,
which a fixed-shape ONNX export would not follow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lookalike.errors import LookalikeError, ModelUnavailableError
from lookalike.models.base import TorchBackbone, file_hash
from lookalike.models.registry import register_model

_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
PATCH = 14
FACETS = ("token", "key", "query", "value")

# name -> (checkpoint file, embed dim, depth, heads)
HUB_MODELS: dict[str, tuple[str, int, int, int]] = {
    "dinov2-vits14": ("dinov2_vits14_pretrain.pth", 384, 12, 6),
    "dinov2-vitb14": ("dinov2_vitb14_pretrain.pth", 768, 12, 12),
    "dinov2-vitl14": ("dinov2_vitl14_pretrain.pth", 1024, 24, 16),
}
_URL = "https://dl.fbaipublicfiles.com/dinov2/{stem}/{file}"


def build_vit(dim: int, depth: int, heads: int, *, layer: int | None = None, facet: str = "token") -> Any:
    """A DINOv2-compatible ViT class returning dense (N, C, h, w) patch features (random weights until loaded); torch
    is imported only here, when a hub model is asked for."""
    import functools

    from lookalike.models.vit import DinoViT

    if facet not in FACETS:
        raise LookalikeError(f"unknown facet {facet!r}; use one of {', '.join(FACETS)}")
    layer = depth - 1 if layer is None else int(layer)
    if not 0 <= layer < depth:
        raise LookalikeError(f"layer must be between 0 and {depth - 1}, got {layer}")
    return functools.partial(DinoViT, dim, depth, heads, layer, facet)


def hub_checkpoint(file: str) -> Path:
    """Where torch hub keeps a checkpoint (``$TORCH_HOME/hub/checkpoints``), without importing anything heavy."""
    import os

    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch"
    )
    return Path(torch_home) / "hub" / "checkpoints" / file


def _load_state_dict(path: Path, name: str) -> dict[str, Any]:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, wrong format, pickle refused
        raise ModelUnavailableError(f"{name}: cannot read weights {path} ({type(exc).__name__}: {exc})") from None
    for key in ("teacher", "model", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ModelUnavailableError(f"{name}: {path} is not a state dict")
    return {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}


def create_dinov2(
    name: str,
    *,
    weights: str | None = None,
    layer: int | None = None,
    facet: str = "token",
    random_weights: bool = False,
    runtime: str = "auto",
    **kwargs: Any,
) -> TorchBackbone:
    """A DINOv2 backbone from ``weights`` or the torch hub cache; ``random_weights`` is for tests only."""
    file, dim, depth, heads = HUB_MODELS[name]
    cls = build_vit(dim, depth, heads, layer=layer, facet=facet)
    if random_weights:
        import torch

        torch.manual_seed(0)
        module, weights_id, path = cls(), "random-0", None
    else:
        path = Path(weights).expanduser() if weights else hub_checkpoint(file)
        if not path.is_file():
            stem = file.removesuffix("_pretrain.pth")
            raise ModelUnavailableError(
                f"{name}: weights not found at {path}; download {_URL.format(stem=stem, file=file)} "
                f"to {hub_checkpoint(file).parent}/ or pass --weights FILE"
            )
        state = _load_state_dict(path, name)
        pos = state.get("pos_embed")
        num_patches = int(pos.shape[1]) - 1 if pos is not None else 37 * 37
        module = cls(num_patches)
        try:
            missing, unexpected = module.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shapes differ: another model size
            first = str(exc).split("\n\t")[1] if "\n\t" in str(exc) else str(exc).splitlines()[0]
            raise ModelUnavailableError(
                f"{name}: {path} does not fit this architecture ({first.strip()}); is it a {name} checkpoint?"
            ) from None
        if missing or unexpected:
            raise ModelUnavailableError(
                f"{name}: {path} does not fit this architecture (missing {len(missing)} keys e.g. "
                f"{missing[:2]}, unexpected {len(unexpected)} e.g. {unexpected[:2]}); is it a {name} checkpoint?"
            )
        weights_id = file_hash(path)
    module.eval()
    extra: dict[str, Any] = {"layer": depth - 1 if layer is None else int(layer), "facet": facet}
    if path is not None:
        extra["weights_file"] = str(path.resolve())
    return TorchBackbone(
        name,
        module,
        feature_dim=dim,
        stride=PATCH,
        weights_id=weights_id,
        mean=_MEAN,
        std=_STD,
        default_resolution=224,
        runtime="torch" if runtime == "auto" else runtime,
        extra_config=extra,
        **kwargs,
    )


@register_model(
    "dinov2-vits14",
    "DINOv2 ViT-S/14 patch tokens (AnyLoc); weights from --weights or the torch hub cache",
    weights=True,
    torch_only=True,
)
def dinov2_vits14(**kwargs: Any) -> TorchBackbone:
    return create_dinov2("dinov2-vits14", **kwargs)


@register_model(
    "dinov2-vitb14",
    "DINOv2 ViT-B/14 patch tokens (AnyLoc); weights from --weights or the torch hub cache",
    weights=True,
    torch_only=True,
)
def dinov2_vitb14(**kwargs: Any) -> TorchBackbone:
    return create_dinov2("dinov2-vitb14", **kwargs)


@register_model(
    "dinov2-vitl14",
    "DINOv2 ViT-L/14 patch tokens (AnyLoc); weights from --weights or the torch hub cache",
    weights=True,
    torch_only=True,
)
def dinov2_vitl14(**kwargs: Any) -> TorchBackbone:
    return create_dinov2("dinov2-vitl14", **kwargs)
