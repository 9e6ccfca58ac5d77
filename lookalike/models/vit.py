"""The DINOv2 ViT in plain torch (module names as in the released checkpoints); built by ``hub.build_vit``.

Imports torch at the top: only ``hub.build_vit`` imports this module, when a DINOv2 model is asked for.
"""

from __future__ import annotations

import math

import torch
from torch import nn

PATCH = 14  # pixels per patch side; hub.PATCH, which checks resolutions without importing torch


class PatchEmbed(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, PATCH, PATCH)


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), 1e-5))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        y = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(nn.functional.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim)
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1.gamma * self.attn(self.norm1(x))
        return x + self.ls2.gamma * self.mlp(self.norm2(x))


class DinoViT(nn.Module):
    """Patch tokens of ``layer`` (after the final norm when it is the last), or AnyLoc's key/query/value ``facet``."""

    def __init__(self, dim: int, depth: int, heads: int, layer: int, facet: str, num_patches: int = 37 * 37) -> None:
        super().__init__()
        self.dim, self.depth, self.layer, self.facet = dim, depth, layer, facet
        self.patch_embed = PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        for p in (self.cls_token, self.pos_embed):
            nn.init.trunc_normal_(p, std=0.02)

    def _pos(self, h: int, w: int) -> torch.Tensor:
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        side = math.isqrt(patch_pos.shape[1])
        if (h, w) == (side, side):
            return self.pos_embed
        grid = patch_pos.reshape(1, side, side, self.dim).permute(0, 3, 1, 2)
        # as DINOv2 does: bicubic with a 0.1 offset on the scale factor (the output is still h × w)
        scale = ((h + 0.1) / side, (w + 0.1) / side)
        grid = nn.functional.interpolate(grid, scale_factor=scale, mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, grid.permute(0, 2, 3, 1).reshape(1, h * w, self.dim)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, hh, ww = x.shape
        h, w = hh // PATCH, ww // PATCH
        t = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(n, -1, -1), t], dim=1) + self._pos(h, w)
        for i, blk in enumerate(self.blocks):
            if i == self.layer and self.facet != "token":
                b, m, c = t.shape
                qkv = blk.attn.qkv(blk.norm1(t)).reshape(b, m, 3, c)
                t = qkv[:, :, ("query", "key", "value").index(self.facet)]
                break
            t = blk(t)
            if i == self.layer:
                if self.layer == self.depth - 1:
                    t = self.norm(t)
                break
        return t[:, 1:].transpose(1, 2).reshape(n, -1, h, w)
