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

import math
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
    """A DINOv2-compatible ViT returning dense (N, C, h, w) patch features (random weights until loaded)."""
    import torch
    from torch import nn

    if facet not in FACETS:
        raise LookalikeError(f"unknown facet {facet!r}; use one of {', '.join(FACETS)}")
    layer = depth - 1 if layer is None else int(layer)
    if not 0 <= layer < depth:
        raise LookalikeError(f"layer must be between 0 and {depth - 1}, got {layer}")

    class PatchEmbed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Conv2d(3, dim, PATCH, PATCH)

    class LayerScale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gamma = nn.Parameter(torch.full((dim,), 1e-5))

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, n, c = x.shape
            q, k, v = self.qkv(x).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
            y = nn.functional.scaled_dot_product_attention(q, k, v)
            return self.proj(y.transpose(1, 2).reshape(b, n, c))

    class Mlp(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(dim, 4 * dim)
            self.fc2 = nn.Linear(4 * dim, dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(nn.functional.gelu(self.fc1(x)))

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm1 = nn.LayerNorm(dim, eps=1e-6)
            self.attn = Attention()
            self.ls1 = LayerScale()
            self.norm2 = nn.LayerNorm(dim, eps=1e-6)
            self.mlp = Mlp()
            self.ls2 = LayerScale()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x + self.ls1.gamma * self.attn(self.norm1(x))
            return x + self.ls2.gamma * self.mlp(self.norm2(x))

    class DinoViT(nn.Module):
        def __init__(self, num_patches: int = 37 * 37) -> None:
            super().__init__()
            self.patch_embed = PatchEmbed()
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
            self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
            self.mask_token = nn.Parameter(torch.zeros(1, dim))
            self.blocks = nn.ModuleList(Block() for _ in range(depth))
            self.norm = nn.LayerNorm(dim, eps=1e-6)
            for p in (self.cls_token, self.pos_embed):
                nn.init.trunc_normal_(p, std=0.02)

        def _pos(self, h: int, w: int) -> torch.Tensor:
            cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
            side = math.isqrt(patch_pos.shape[1])
            if (h, w) == (side, side):
                return self.pos_embed
            grid = patch_pos.reshape(1, side, side, dim).permute(0, 3, 1, 2)
            # as DINOv2 does: bicubic with a 0.1 offset on the scale factor (the output is still h × w)
            scale = ((h + 0.1) / side, (w + 0.1) / side)
            grid = nn.functional.interpolate(grid, scale_factor=scale, mode="bicubic", align_corners=False)
            return torch.cat([cls_pos, grid.permute(0, 2, 3, 1).reshape(1, h * w, dim)], dim=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n, _, hh, ww = x.shape
            h, w = hh // PATCH, ww // PATCH
            t = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
            t = torch.cat([self.cls_token.expand(n, -1, -1), t], dim=1) + self._pos(h, w)
            for i, blk in enumerate(self.blocks):
                if i == layer and facet != "token":
                    b, m, c = t.shape
                    qkv = blk.attn.qkv(blk.norm1(t)).reshape(b, m, 3, c)
                    t = qkv[:, :, ("query", "key", "value").index(facet)]
                    break
                t = blk(t)
                if i == layer:
                    if layer == depth - 1:
                        t = self.norm(t)
                    break
            return t[:, 1:].transpose(1, 2).reshape(n, -1, h, w)

    return DinoViT


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
