"""The pixel check for copies: is one image of a candidate near-duplicate pair a rescaled, recompressed or cropped
copy of the other? (It compares aligned pixels only; it is not a geometric verification with local features.)

WHY: a global descriptor cannot tell a copy from another photo of the same subject. On flowers, a photo and its 80%
crop score 0.82–0.89 while a different photo of the same species often scores 0.87 or more, so no cosine threshold
finds copies without also grouping the species. Pixels can: a copy is the original, up to scale, a crop and
compression noise, so after aligning the two, their normalised cross-correlation (NCC) is close to 1; for a
different photo it is not. Retrieval proposes the pairs (a FAISS kNN graph), pixels decide, as in the
retrieve-then-verify pipelines of image retrieval.

How: grey thumbnails squashed to squares (so a crop that keeps the aspect ratio is a uniform scale, and one that
changes it is a scale per axis). A coarse search at ``COARSE`` px tries every horizontal and vertical crop fraction
in ``FRACTIONS`` in both directions (which image is the crop of which) at every offset, as one grouped convolution
per hypothesis over all pairs at once; the best alignment is then re-scored at ``FINE`` px within ±``REFINE`` px,
where different photos of a similar scene stop lining up.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from lookalike.errors import ImageError
from lookalike.images import decode, read_file

COARSE = 32
FINE = 96
REFINE = 2
FRACTIONS = (1.0, 0.9, 0.8, 0.7)  # fraction of the other image's width/height that a crop keeps (coarse grid)
STEP = 0.05  # the fine check also tries fractions this far either side of the coarse hit
BATCH = 2048


def thumbnails(paths: Sequence[str | os.PathLike[str]]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(coarse, fine, unreadable): grey squashed thumbnails (N, COARSE, COARSE) and (N, FINE, FINE) float32;
    rows of files that cannot be read are zero and listed, so callers can drop pairs that touch them."""
    coarse = np.zeros((len(paths), COARSE, COARSE), np.float32)
    fine = np.zeros((len(paths), FINE, FINE), np.float32)
    bad: list[int] = []

    def one(i: int) -> None:
        try:
            img, _ = decode(read_file(paths[i]), str(paths[i]), target=FINE)  # JPEG draft mode: decodes small
        except ImageError:
            bad.append(i)
            return
        g = img.convert("L")
        fine[i] = np.asarray(g.resize((FINE, FINE), Image.Resampling.BOX), np.float32)
        coarse[i] = np.asarray(g.resize((COARSE, COARSE), Image.Resampling.BOX), np.float32)

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        list(pool.map(one, range(len(paths))))
    return coarse, fine, sorted(bad)


def _unit_template(t):  # noqa: ANN001, ANN202
    t = t - t.mean(dim=(-2, -1), keepdim=True)
    return t / t.flatten(-2).norm(dim=-1).clamp_min(1e-6)[..., None, None]


def _ncc_maps(a, t):  # noqa: ANN001, ANN202
    """NCC of each template t[p] (P, th, tw), zero-mean and unit-norm, at every offset inside a[p] (P, H, W)."""
    import torch.nn.functional as F  # noqa: N812

    p, th, tw = t.shape
    a4 = a[None]
    num = F.conv2d(a4, t[:, None], groups=p)[0]
    m1 = F.avg_pool2d(a4, (th, tw), stride=1)[0]
    m2 = F.avg_pool2d(a4 * a4, (th, tw), stride=1)[0]
    # a flat window (no texture) has no meaningful correlation: its norm floor keeps its NCC near 0
    den = ((m2 - m1 * m1).clamp_min(0) * (th * tw)).sqrt().clamp_min(1.0 * (th * tw) ** 0.5)
    return num / den


def _search(a, b):  # noqa: ANN001, ANN202
    """Best coarse alignment of b as a crop of a: (score (P,), fy, fx, y, x) per pair."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    p = a.shape[0]
    best = torch.full((p,), -2.0)
    arg = torch.zeros((p, 4))
    for fy in FRACTIONS:
        for fx in FRACTIONS:
            th, tw = round(COARSE * fy), round(COARSE * fx)
            t = _unit_template(F.interpolate(b[:, None], size=(th, tw), mode="area")[:, 0])
            v, pos = _ncc_maps(a, t).flatten(1).max(dim=1)
            ow = COARSE - tw + 1
            cand = torch.stack(
                [torch.full_like(v, fy), torch.full_like(v, fx), (pos // ow).float(), (pos % ow).float()], 1
            )
            better = v > best
            best = torch.where(better, v, best)
            arg = torch.where(better[:, None], cand, arg)
    return best, arg


def _refine(a, b, arg):  # noqa: ANN001, ANN202
    """NCC at FINE px of b inside a, around the coarse alignment: crop fractions within ±STEP of the found ones (the
    coarse grid is ``FRACTIONS``) and offsets within ±REFINE px of the found one, same centre."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    out = torch.full((a.shape[0],), -2.0)
    pad = F.pad(a[:, None], (REFINE, REFINE, REFINE, REFINE), mode="replicate")[:, 0]
    f = FINE / COARSE
    for fy in FRACTIONS:
        for fx in FRACTIONS:
            sel = torch.nonzero((arg[:, 0] == fy) & (arg[:, 1] == fx)).flatten()
            if not len(sel):
                continue
            cth, ctw = round(FINE * fy), round(FINE * fx)  # the coarse hit, at fine scale
            cy = arg[sel, 2] * f + cth / 2
            cx = arg[sel, 3] * f + ctw / 2
            for gy in {min(1.0, fy + d) for d in (-STEP, 0.0, STEP)}:
                for gx in {min(1.0, fx + d) for d in (-STEP, 0.0, STEP)}:
                    th, tw = round(FINE * gy), round(FINE * gx)
                    t = _unit_template(F.interpolate(b[sel, None], size=(th, tw), mode="area")[:, 0])
                    y0 = (cy - th / 2).round().long().clamp(0, FINE - th)
                    x0 = (cx - tw / 2).round().long().clamp(0, FINE - tw)
                    ys = y0[:, None] + torch.arange(th + 2 * REFINE)[None]  # rows of the padded a around the offset
                    xs = x0[:, None] + torch.arange(tw + 2 * REFINE)[None]
                    win = pad[sel[:, None, None], ys[:, :, None], xs[:, None, :]]
                    out[sel] = torch.maximum(out[sel], _ncc_maps(win, t).flatten(1).max(dim=1).values)
    return out


def pixel_scores(coarse: np.ndarray, fine: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Aligned NCC in [-1, 1] for each pair (i, j) of rows of the thumbnails: ~1 when one is a copy of the other."""
    import torch

    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    out = np.empty(len(pairs), np.float32)
    c, f = torch.from_numpy(coarse), torch.from_numpy(fine)
    with torch.inference_mode():
        for s in range(0, len(pairs), BATCH):
            i = torch.from_numpy(pairs[s : s + BATCH, 0])
            j = torch.from_numpy(pairs[s : s + BATCH, 1])
            s1, a1 = _search(c[i], c[j])  # j a crop of i
            s2, a2 = _search(c[j], c[i])  # i a crop of j
            fwd = s1 >= s2
            big = torch.where(fwd[:, None, None], f[i], f[j])
            small = torch.where(fwd[:, None, None], f[j], f[i])
            out[s : s + BATCH] = _refine(big, small, torch.where(fwd[:, None], a1, a2)).numpy()
    return out
