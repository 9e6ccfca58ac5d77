"""Fine-tuning step time with glibc's default allocator settings and with ``keep_freed_memory``
(:mod:`lookalike.training.loop`), side by side.

Each configuration runs in a fresh process (allocator settings and glibc's adaptive mmap threshold are per
process): Lite2 at 384 px, the last N blocks trained on batches of 64 frozen maps of the size the random crop
draws on average, forward + backward + Adam step, as in ``lookalike train --unfreeze N``. Reports the median step
time after one warm-up step and the share of CPU time spent in the kernel.

    python -m bench.train_step [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import nullcontext

from bench.report import write_section

MODEL, RES, BATCH, SIDE = "efficientnet-lite2", 384, 64, 21  # 21 of 24 cells: the mean side of --crop 0.75


def one(unfreeze: int, keep: bool, steps: int) -> dict[str, float]:
    import numpy as np
    import torch

    from lookalike.models.trained import build_embedder
    from lookalike.training.loop import keep_freed_memory

    torch.manual_seed(0)
    e = build_embedder(MODEL, {"type": "mlp", "in": 1280, "hidden": 512, "dim": 128, "dropout": 0.1})
    start = len(e.net._blocks) - unfreeze
    for p in e.net.parameters():
        p.requires_grad = False
    tuned = [*e.net._blocks[start:], e.net._conv_head, e.net._bn1]
    params = [p for m in tuned for p in m.parameters()]
    for p in params:
        p.requires_grad = True
    opt = torch.optim.Adam([*params, *e.head.parameters()], 1e-4)
    with torch.no_grad():
        channels = e.stem(torch.zeros(1, 3, RES, RES), start).shape[1]
    e.eval()
    e.head.train()
    times = []
    t_cpu = os.times()
    with keep_freed_memory() if keep else nullcontext():
        for _ in range(steps + 1):
            h = torch.randn(BATCH, channels, SIDE, SIDE)
            t = time.perf_counter()
            loss = e.embed_pooled(e.pool(e.top(h, start))).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t)
    cpu = os.times()
    user, system = cpu.user - t_cpu.user, cpu.system - t_cpu.system
    return {"step_s": float(np.median(times[1:])), "system_share": system / max(user + system, 1e-9)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--one", nargs=2, metavar=("UNFREEZE", "KEEP"))
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(int(args.one[0]), args.one[1] == "keep", args.steps)))
        return
    rows = []
    for unfreeze in (8, 13):
        got = {}
        for keep in ("default", "keep"):
            cmd = [sys.executable, "-m", "bench.train_step", "--one", str(unfreeze), keep, "--steps", str(args.steps)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            got[keep] = json.loads(out.strip().splitlines()[-1])
            print(unfreeze, keep, got[keep], flush=True)
        d, k = got["default"], got["keep"]
        rows.append(
            f"| {unfreeze} | {d['step_s']:.2f} | {d['system_share']:.0%} | {k['step_s']:.2f} | "
            f"{k['system_share']:.0%} | **{d['step_s'] / k['step_s']:.2f}×** |"
        )
    body = "\n".join(
        [
            "## Fine-tuning step time: glibc defaults vs kept heap memory (`train_step`)",
            "",
            f"{MODEL} at {RES} px, batch {BATCH} frozen maps of {SIDE}×{SIDE} cells, forward + backward + Adam, "
            f"median of {args.steps} steps after a warm-up, each configuration in its own process. `kept` is "
            "`lookalike.training.loop.keep_freed_memory` (no mmap for large blocks, no heap trimming), which "
            "`lookalike train` uses around its fine-tuning steps.",
            "",
            "| --unfreeze | default s/step | default kernel share | kept s/step | kept kernel share | speed-up |",
            "|---|---|---|---|---|---|",
            *rows,
        ]
    )
    settings = {"model": MODEL, "resolution": f"{RES} px", "batch": BATCH, "feature map": f"{SIDE}×{SIDE}",
                "steps": args.steps}  # fmt: skip
    write_section("train_step", body, settings)


if __name__ == "__main__":
    main()
