"""Issue 24 figures: how long a command takes from the shell, against a 12-line script doing the same work.

A 400-photo index of ../shared/data/rooms (80 per class, 320 px, the cached ONNX export) is built once; then, in
interleaved rounds so every command sees the same machine load, each of these runs in a fresh interpreter:
``python -c pass``; the floor script (start Python, open the cached ONNX model in ONNX Runtime, decode, embed, GeM,
FAISS search over the same vectors); ``lookalike search``; ``lookalike info``; ``lookalike --help``; and, with
``--baseline SRC`` (a checkout of an earlier commit), that checkout's ``lookalike search``. Wall time and CPU time
(user + system of the child) are both reported: on a shared machine wall time includes waiting for a core.

The sources are byte-compiled first (``compileall``), as ``pip install`` does: with ``PYTHONDONTWRITEBYTECODE`` set
(as on this machine) every command would otherwise compile the ~26 modules a search imports, about 0.15 s of CPU that
no installed copy pays.

    flock /tmp/lookalike-bench.lock .venv/bin/python -m bench.startup [--rounds 9] [--baseline /tmp/old-src]
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import dataset
from bench.report import ROOT, markdown_table, write_section

FLOOR = """\
import sys, numpy as np, onnxruntime as ort, faiss
from PIL import Image
model, vectors, names, query = sys.argv[1:5]
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
img = Image.open(query); img.draft("RGB", (320, 320)); img = img.convert("RGB").resize((320, 320))
f = session.run(None, {"pixels": np.asarray(img, np.float32)[None]})[0]
v = (np.clip(f, 1e-6, None) ** 3).mean(axis=(2, 3)) ** (1 / 3)
v = (v / np.linalg.norm(v)).astype(np.float32)
index = faiss.IndexFlatIP(v.shape[1]); index.add(np.load(vectors))
scores, ids = index.search(v, 5)
lines = open(names).read().splitlines()
print([(lines[i], float(s)) for i, s in zip(ids[0], scores[0])])
"""


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--per-class", type=int, default=80)
    ap.add_argument("--baseline", type=Path, help="source checkout of an earlier commit to time its search too")
    args = ap.parse_args()
    from lookalike import Index
    from lookalike.images import find_images

    rooms = dataset("rooms")
    work = Path(tempfile.mkdtemp(prefix="lookalike-startup-"))
    try:
        photos = work / "photos"
        for cls in sorted(p for p in rooms.iterdir() if p.is_dir()):
            for p in find_images(cls)[: args.per_class]:
                (photos / cls.name).mkdir(parents=True, exist_ok=True)
                shutil.copy(p, photos / cls.name / p.name)
        idx = Index.build(photos, work / "index")
        n = len(idx)
        model = idx.describer.model
        np.save(work / "vectors.npy", idx.vectors.astype(np.float32))
        (work / "names.txt").write_text("\n".join(idx.names) + "\n")
        (work / "floor.py").write_text(FLOOR)
        query = str(find_images(rooms / "Kitchen")[-1])  # not in the index
        py = sys.executable
        for src in [ROOT, *([args.baseline] if args.baseline else [])]:
            compileall.compile_dir(Path(src) / "lookalike", quiet=1)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cli = [py, "-m", "lookalike.cli"]
        commands = {
            "python -c pass": ([py, "-c", "pass"], env),
            "floor script (12 lines)": (
                [py, str(work / "floor.py"), str(model.onnx_path), str(work / "vectors.npy"), str(work / "names.txt"),
                 query],
                env,
            ),
            "`lookalike search q.jpg`": ([*cli, "search", query, "--index", str(work / "index")], env),
            "`lookalike info`": ([*cli, "info", "--index", str(work / "index")], env),
            "`lookalike --help`": ([*cli, "--help"], env),
        }  # fmt: skip
        if args.baseline:
            commands["`lookalike search q.jpg`, before (baseline)"] = (
                [*cli, "search", query, "--index", str(work / "index")],
                {**os.environ, "PYTHONPATH": str(args.baseline.resolve())},
            )
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in commands}
        for cmd, e in commands.values():  # warm the page cache and .pyc files
            run(cmd, e, work)
        for r in range(args.rounds):
            for name, (cmd, e) in commands.items():
                times[name].append(run(cmd, e, work))
            print(f"round {r + 1}/{args.rounds}", flush=True)

        def med(name: str, i: int) -> float:
            return statistics.median(t[i] for t in times[name])

        floor = "floor script (12 lines)"
        rows = []
        for name in commands:
            walls = [t[0] for t in times[name]]
            rows.append(
                [
                    name,
                    f"{med(name, 0):.2f}",
                    f"{min(walls):.2f}",
                    f"{med(name, 1):.2f}",
                    f"{med(name, 0) / med(floor, 0):.2f}×",
                    f"{med(name, 1) / med(floor, 1):.2f}×",
                ]
            )
            print(rows[-1], flush=True)
        search = "`lookalike search q.jpg`"
        help_ = "`lookalike --help`"
        body = (
            "### Start-up: a command from the shell (issue 24)\n\n"
            f"Index of {n} photos of `../shared/data/rooms` ({args.per_class} per class), EfficientNet-Lite0 at 320 "
            "px, fp32, ONNX export cached; one query not in the index. Each command in a fresh interpreter, "
            f"{args.rounds} interleaved rounds after one warm-up round; wall = elapsed, CPU = user + system of the "
            "child (the 2 cores are shared with other work, so wall includes waiting for a core).\n\n"
            + markdown_table(
                ["command", "wall s (median)", "wall s (min)", "CPU s (median)", "wall vs floor", "CPU vs floor"],
                rows,
            )
            + f"\n\n- Cold `lookalike search` vs the floor script: **{med(search, 0) / med(floor, 0):.2f}×** wall, "
            f"{med(search, 1) / med(floor, 1):.2f}× CPU (goal ≤ 1.5×).\n"
            f"- `lookalike --help`: {med(help_, 0):.2f} s wall, {med(help_, 1):.2f} s CPU (goal ≤ 0.3 s).\n"
        )
        write_section(
            "startup",
            body,
            settings={"rounds": args.rounds, "photos": n, "per class": args.per_class, "resolution": 320,
                      "baseline": str(args.baseline) if args.baseline else "none"},
        )  # fmt: skip
        print(body)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
