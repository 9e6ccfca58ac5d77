"""Issue 24 figures: how long a command takes from the shell, against a 12-line script doing the same work.

Two indexes of the same 400 photos of ../shared/data/rooms (80 per class, 320 px) are built once, one at the default
precision (int8) and one fp32; then, in interleaved rounds so every command sees the same machine load, each of these
runs in a fresh interpreter: ``python -c pass``; the floor script (start Python, open the index's ONNX model in ONNX
Runtime, decode, embed, GeM, FAISS search over the same vectors), once per precision; ``lookalike search`` on each
index; ``lookalike info``; ``lookalike --help``; and, with ``--baseline SRC`` (a checkout of an earlier commit), that
checkout's ``lookalike search`` on the fp32 index. Wall time and CPU time
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
    ap.add_argument("--typer", type=Path, help="a folder holding another typer (a wheel unpacked) to time search with")
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
        floors, indexes = {}, {}
        for precision in ("int8", "fp32"):
            idx = Index.build(photos, work / f"index-{precision}", precision=precision)
            indexes[precision] = work / f"index-{precision}"
            model = idx.describer.model
            floors[precision] = model.int8_path if precision == "int8" else model.onnx_path
        n = len(idx)
        np.save(work / "vectors.npy", idx.vectors.astype(np.float32))  # the floor searches these for both
        (work / "names.txt").write_text("\n".join(idx.names) + "\n")
        (work / "floor.py").write_text(FLOOR)
        query = str(find_images(rooms / "Kitchen")[-1])  # not in the index
        py = sys.executable
        for src in [ROOT, *([args.baseline] if args.baseline else [])]:
            compileall.compile_dir(Path(src) / "lookalike", quiet=1)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cli = [py, "-m", "lookalike.cli"]
        floor_args = [str(work / "vectors.npy"), str(work / "names.txt"), query]
        commands = {
            "python -c pass": ([py, "-c", "pass"], env),
            "floor script (12 lines), int8 model": ([py, str(work / "floor.py"), str(floors["int8"]), *floor_args], env),
            "`lookalike search q.jpg`, int8 index (default)": (
                [*cli, "search", query, "--index", str(indexes["int8"])], env
            ),
            "floor script (12 lines), fp32 model": ([py, str(work / "floor.py"), str(floors["fp32"]), *floor_args], env),
            "`lookalike search q.jpg`, fp32 index": ([*cli, "search", query, "--index", str(indexes["fp32"])], env),
            "`lookalike info`": ([*cli, "info", "--index", str(indexes["int8"])], env),
            "`lookalike --help`": ([*cli, "--help"], env),
        }  # fmt: skip
        if args.baseline:
            commands["`lookalike search q.jpg`, fp32 index, before (baseline)"] = (
                [*cli, "search", query, "--index", str(indexes["fp32"])],
                {**os.environ, "PYTHONPATH": str(args.baseline.resolve())},
            )
        if args.typer:
            version = subprocess.run(
                [py, "-c", "import typer; print(typer.__version__)"],
                env={**env, "PYTHONPATH": f"{args.typer}{os.pathsep}{ROOT}"},
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            compileall.compile_dir(args.typer, quiet=1)
            commands[f"`lookalike search q.jpg`, int8 index, typer {version}"] = (
                [*cli, "search", query, "--index", str(indexes["int8"])],
                {**env, "PYTHONPATH": f"{args.typer}{os.pathsep}{ROOT}"},
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

        floor = {"int8": "floor script (12 lines), int8 model", "fp32": "floor script (12 lines), fp32 model"}
        rows = []
        for name in commands:
            walls = [t[0] for t in times[name]]
            own = floor["fp32"] if "fp32" in name else floor["int8"]  # each search against the floor on its model
            rows.append(
                [
                    name,
                    f"{med(name, 0):.2f}",
                    f"{min(walls):.2f}",
                    f"{med(name, 1):.2f}",
                    f"{med(name, 0) / med(own, 0):.2f}×",
                    f"{med(name, 1) / med(own, 1):.2f}×",
                ]
            )
            print(rows[-1], flush=True)
        search = {p: next(k for k in commands if k.startswith("`lookalike search") and p in k) for p in floor}
        help_ = "`lookalike --help`"
        body = (
            "### Start-up: a command from the shell (issue 24)\n\n"
            f"Two indexes of the same {n} photos of `../shared/data/rooms` ({args.per_class} per class), "
            "EfficientNet-Lite0 at 320 px: int8 (the default) and fp32; one query not in the index. The floor script "
            "runs the index's own ONNX model (the int8 copy in the index folder, or the cached fp32 export) and "
            "searches the same vectors. Each command in a fresh interpreter, "
            f"{args.rounds} interleaved rounds after one warm-up round; wall = elapsed, CPU = user + system of the "
            "child (the 2 cores are shared with other work, so wall includes waiting for a core). Ratios are "
            "against the floor on the same model (`info` and `--help` against the int8 floor).\n\n"
            + markdown_table(
                ["command", "wall s (median)", "wall s (min)", "CPU s (median)", "wall vs floor", "CPU vs floor"],
                rows,
            )
            + "\n\n"
            + "".join(
                f"- Cold `lookalike search`, {p} index, vs the floor on the same model: "
                f"**{med(search[p], 0) / med(floor[p], 0):.2f}×** wall, {med(search[p], 1) / med(floor[p], 1):.2f}× CPU "
                "(goal ≤ 1.5×).\n"
                for p in ("int8", "fp32")
            )
            + f"- Cold `lookalike search`, int8 index (the default), vs the fp32 floor the issue set: "
            f"**{med(search['int8'], 0) / med(floor['fp32'], 0):.2f}×** wall.\n"
            f"- `lookalike --help`: {med(help_, 0):.2f} s wall, {med(help_, 1):.2f} s CPU (goal ≤ 0.3 s).\n"
        )
        write_section(
            "startup",
            body,
            settings={"rounds": args.rounds, "photos": n, "per class": args.per_class, "resolution": 320,
                      "baseline": str(args.baseline) if args.baseline else "none",
                      "other typer": str(args.typer) if args.typer else "none"},
        )  # fmt: skip
        print(body)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
