"""Acting on duplicates: keeper choice on generated copy groups, ``dedupe --new`` against an index, and SIGKILL
safety of ``--apply``. Writes the ``dedupe_actions`` section of BENCHMARKS.md.

1. Keeper: each group is a real photo (rooms, flowers12) plus a downscaled, a recompressed, a cropped and a blurred
   copy (random strengths); the original must be chosen.
2. ``--new``: an index of the rooms photos minus 500 held out (its vectors taken from the cached full rooms index, so
   nothing is re-embedded), then 1,000 incoming photos: 500 altered copies of indexed photos and the 500 held-out
   photos (new, same domain: hard negatives). Precision and recall of "copy", and its time against a full ``dedupe``
   of the collection.
3. Safety: ``--apply --move-to`` killed with SIGKILL at random moments, 20 times, each followed by a resume or an undo;
   after each, every file's bytes must exist exactly once (checksums) and the journal must say where each file is.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import CACHE, dataset, shared_index  # noqa: E402
from bench.report import ROOT, markdown_table, write_section  # noqa: E402

WORK = CACHE / "dedupe-actions"
ROOM_CLASSES = {"Bathroom", "Bedroom", "Dinning", "Kitchen", "Livingroom"}


def alter(img: Image.Image, kind: str, rng: random.Random) -> tuple[Image.Image, int]:
    """One altered copy and the JPEG quality to save it at."""
    w, h = img.size
    if kind == "down":
        f = rng.uniform(0.5, 0.9)
        return img.resize((max(16, int(w * f)), max(16, int(h * f))), Image.Resampling.LANCZOS), 90
    if kind == "recompress":
        return img, rng.randint(50, 70)  # below the sources' quality (rooms and flowers12 are saved at 75)
    if kind == "crop":
        f = rng.uniform(0.8, 0.95)
        cw, ch = int(w * f), int(h * f)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        return img.crop((x, y, x + cw, y + ch)), 90
    if kind == "blur":
        return img.filter(ImageFilter.GaussianBlur(rng.uniform(0.6, 1.5))), 90
    raise ValueError(kind)


KINDS = ("down", "recompress", "crop", "blur")


def keeper_bench(n_rooms: int, n_flowers: int, seed: int = 0) -> dict:
    from lookalike.dedupe import choose_keeper, facts_of

    rng = random.Random(seed)
    rooms = sorted(dataset("rooms").rglob("*.jpg"))
    flowers = sorted(dataset("flowers12").rglob("*.jpg"))
    sources = [("rooms", p) for p in rng.sample(rooms, n_rooms)] + [
        ("flowers12", p) for p in rng.sample(flowers, n_flowers)
    ]
    out = WORK / "keeper"
    shutil.rmtree(out, ignore_errors=True)
    wrong: list[str] = []
    losses = {k: 0 for k in KINDS}
    stages: dict[str, int] = {}
    pairwise: dict[str, dict[str, int]] = {}
    started = time.perf_counter()
    for g, (_, src) in enumerate(sources):
        folder = out / f"g{g:04d}"
        folder.mkdir(parents=True)
        orig = folder / "original.jpg"
        shutil.copy(src, orig)
        img = Image.open(src).convert("RGB")
        paths, names = [orig], ["original"]
        for kind in KINDS:
            copy, q = alter(img, kind, rng)
            p = folder / f"{kind}.jpg"
            copy.save(p, quality=q)
            paths.append(p)
            names.append(kind)
        facts = facts_of(paths, names)
        order, why = choose_keeper(facts)
        for k, kind in enumerate(KINDS, 1):  # which stage tells the original from each kind of copy, one to one
            stage = choose_keeper([facts[0], facts[k]])[1].split(":")[0]
            pairwise.setdefault(kind, {}).setdefault(stage, 0)
            pairwise[kind][stage] += 1
        first_stage = why.split(":")[0]
        stages[first_stage] = stages.get(first_stage, 0) + 1
        if names[order[0]] != "original":
            wrong.append(f"{src.parent.name}/{src.name}: kept {names[order[0]]} ({why})")
            losses[names[order[0]]] += 1
    seconds = time.perf_counter() - started
    return {
        "groups": len(sources),
        "rooms": n_rooms,
        "flowers": n_flowers,
        "correct": len(sources) - len(wrong),
        "wrong": wrong,
        "losses": losses,
        "stages": stages,
        "pairwise": pairwise,
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "seconds": seconds,
    }


def collection_index(target: int, held: set[str]):  # noqa: ANN201
    """An index of about ``target`` photos made from cached indexes (nothing re-embedded): the rooms photos minus
    ``held``, then products (320 px) and flowers12 with generated copies (bench.cluster's ``flowers12-dups``) in
    path order until ``target`` rows. Names are ``<source>/<name>``; each file is a symlink to the real one. Returns
    (index, rows per source)."""
    import numpy as np

    from bench.cluster import dups_index
    from lookalike.index import Index
    from lookalike.store import Store, make_table

    rooms = shared_index("rooms")
    sources = [("rooms", rooms), ("products", shared_index("products", resolution=320)), ("flowers12-dups", None)]
    coll = WORK / f"collection-{target}"
    shutil.rmtree(coll, ignore_errors=True)
    same = ("model", "resolution", "pooling", "post", "aggregation")
    rows: list[dict] = []
    vecs: list[np.ndarray] = []
    counts: dict[str, int] = {}
    for name, idx in sources:
        if len(rows) >= target:
            break
        idx = idx if idx is not None else dups_index(320)
        if any(idx.store.meta.get(k) != rooms.store.meta.get(k) for k in same):
            continue  # other vectors: not comparable
        table = idx.store.table
        names = idx.names
        order = [i for i in sorted(range(len(names)), key=names.__getitem__) if name != "rooms" or names[i] not in held]
        order = order[: target - len(rows)]
        cols = [c for c in table.column_names if c not in ("vector", "path_bytes", "path")]
        part = table.take(order).select(cols).to_pylist()
        for i, r in zip(order, part, strict=True):
            new = f"{name}/{names[i]}"
            (coll / new).parent.mkdir(parents=True, exist_ok=True)
            (coll / new).symlink_to(idx.root / names[i])
            rows.append({**r, "path": new})
        vecs.append(idx.vectors[order])
        counts[name] = len(order)
    meta = {k: v for k, v in rooms.store.meta.items() if k not in ("root", "created")}
    store = Store.create(coll / ".lookalike", {**meta, "root": ".."})
    vectors = np.concatenate(vecs)
    store.commit(make_table(rows, vectors, vectors.shape[1]), [])
    return Index.open(coll / ".lookalike"), counts


def new_bench(n_copies: int, n_new: int, target: int, sample_pairs: int, seed: int = 0) -> dict:
    """``--new`` against a ~``target``-photo index, and what re-running ``dedupe`` on the whole collection (the
    indexed photos plus the new ones) would cost instead, in the same run."""
    import numpy as np

    from lookalike.dedupe import check_new
    from lookalike.dedupe.copies import candidate_pairs
    from lookalike.dedupe.pixels import pixel_scores, thumbnails

    rng = random.Random(seed)
    rooms = shared_index("rooms")
    names = rooms.names
    held = set(rng.sample(names, n_new))
    index, parts = collection_index(target, held)
    incoming = WORK / "incoming"
    shutil.rmtree(incoming, ignore_errors=True)
    incoming.mkdir(parents=True)
    truth: dict[str, str | None] = {}
    for c, n in enumerate(rng.sample([n for n in names if n not in held], n_copies)):
        img = Image.open(rooms.root / n).convert("RGB")
        kind = KINDS[c % len(KINDS)]
        copy, q = alter(img, kind, rng)
        name = f"copy_{c:04d}_{kind}.jpg"
        copy.save(incoming / name, quality=q)
        truth[name] = f"rooms/{n}"
    for h, n in enumerate(sorted(held)):
        name = f"new_{h:04d}.jpg"
        shutil.copy(rooms.root / n, incoming / name)
        truth[name] = None
    # the incoming photos' vectors, as --new computes them, for the whole-collection alternative below
    describer = index.describer
    plain = describer.describe_files
    seen: dict[str, np.ndarray] = {}

    def capture(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        for batch in plain(*a, **kw):
            for item, vec in zip(batch.described, batch.vectors, strict=True):
                seen[str(item.path)] = vec
            yield batch

    describer.describe_files = capture  # type: ignore[method-assign]
    t0 = time.perf_counter()
    rep = check_new(index, incoming)
    new_seconds = time.perf_counter() - t0
    tp = fp = fn = wrong_target = 0
    for p in rep["photos"]:
        said = p["status"] == "copy"
        real = truth[p["path"]]
        if said and real is not None:
            tp += 1
            if real not in {h["name"] for h in p["copy_of"]}:
                wrong_target += 1
        elif said:
            fp += 1
        elif real is not None:
            fn += 1
    fps = [p for p in rep["photos"] if p["status"] == "copy" and truth[p["path"]] is None]
    # The alternative: put the new photos in the index (the same embeddings) and run dedupe over everything.
    paths = list(index.paths) + [Path(k) for k in seen]
    vectors = np.concatenate([index.vectors, np.stack(list(seen.values()))])
    t0 = time.perf_counter()
    cand = candidate_pairs(vectors, paths=None)
    knn_seconds = time.perf_counter() - t0
    pick = np.asarray(sorted(random.Random(seed).sample(range(len(cand.pairs)), min(sample_pairs, len(cand.pairs)))))
    sample = cand.pairs[pick] if len(pick) else cand.pairs[:0]
    t0 = time.perf_counter()
    used = np.unique(sample)
    coarse, fine, _ = thumbnails([paths[u] for u in used])
    row = np.full(len(paths), -1)
    row[used] = np.arange(len(used))
    pixel_scores(coarse, fine, row[sample])
    sample_seconds = time.perf_counter() - t0
    per_pair = sample_seconds / max(1, len(sample))
    return {
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "indexed": len(index),
        "parts": parts,
        "incoming": len(rep["photos"]),
        "copies": n_copies,
        "new": n_new,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "wrong_target": wrong_target,
        "precision": tp / max(1, tp + fp),
        "recall": tp / max(1, tp + fn),
        "new_seconds": new_seconds,
        "embed_seconds": rep["embed_seconds"],
        "new_pairs": rep["summary"]["checked_pairs"],
        "fp_pixel_099": sum(p["copy_of"][0]["pixel"] >= 0.99 for p in fps),
        "false_positive_examples": [(p["path"], p["copy_of"][0]) for p in fps[:5]],
        "union": len(paths),
        "union_pairs": len(cand.pairs),
        "knn_seconds": knn_seconds,
        "sample_pairs": len(sample),
        "sample_seconds": sample_seconds,
        "union_pixel_seconds": per_pair * len(cand.pairs),
        "full": len(sample) == len(cand.pairs),
        "resolution": index.store.meta.get("resolution"),
        "model": index.store.meta.get("model"),
    }


KILLER = """
import sys, time
from lookalike import Index
from lookalike.dedupe import actions
real = actions.fsync_dir
def slow(folder):
    time.sleep(0.01)  # widen every window between journal writes and file operations (as the test does)
    real(folder)
actions.fsync_dir = slow
index = Index.open(sys.argv[1])
print("ready", flush=True)
actions.apply_plan(index, sys.argv[2], "move", target=sys.argv[3])
"""


def checksums(*folders: Path) -> dict[str, int]:
    seen: dict[str, int] = {}
    for folder in folders:
        if folder.exists():
            for p in folder.rglob("*"):
                if p.is_file() and not p.is_symlink() and ".lookalike" not in p.parts:
                    h = hashlib.sha256(p.read_bytes()).hexdigest()
                    seen[h] = seen.get(h, 0) + 1
    return seen


def kill_bench(kills: int, n_groups: int, seed: int = 0) -> dict:
    from lookalike.dedupe import load_plan, make_plan, save_plan, undo_plan
    from lookalike.index import Index

    rng = random.Random(seed)
    base = WORK / "kill"
    shutil.rmtree(base, ignore_errors=True)
    root, trash = base / "photos", base / "trash"
    root.mkdir(parents=True)
    for g, src in enumerate(rng.sample(sorted(dataset("rooms").rglob("*.jpg")), n_groups)):
        img = Image.open(src).convert("RGB")
        shutil.copy(src, root / f"p{g:03d}.jpg")
        for kind in ("down", "recompress", "crop"):
            copy, q = alter(img, kind, rng)
            (root / kind).mkdir(exist_ok=True)
            copy.save(root / kind / f"p{g:03d}.jpg", quality=q)
    Index.build(root, labels="none", progress=False)
    before = checksums(root)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    plan_file = base / "plan.json"
    save_plan(make_plan(Index.open(root)), plan_file)
    steps = load_plan(plan_file).summary.remove

    def start_apply() -> subprocess.Popen:
        """``--apply`` in a child that says when it is ready (its imports done), so kills land in the work."""
        p = subprocess.Popen(
            [sys.executable, "-c", KILLER, str(root), str(plan_file), str(trash)],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        p.stdout.readline()
        return p

    # how long a whole apply takes, to spread the kills over it
    p = start_apply()
    t_ready = time.perf_counter()
    p.wait()
    apply_seconds = time.perf_counter() - t_ready
    undo_plan(Index.open(root), plan_file)
    assert checksums(root) == before
    rounds = []
    for r in range(kills):
        save_plan(make_plan(Index.open(root)), plan_file)
        plan = load_plan(plan_file)
        p = start_apply()
        delay = rng.uniform(0, apply_seconds)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        jpath = root / ".lookalike" / "journals" / f"{plan.id}.json"
        journal = json.loads(jpath.read_text()) if jpath.exists() else None
        done_at_kill = sum(s["state"] == "done" for s in journal["steps"]) if journal else 0
        started_at_kill = sum(s["state"] == "started" for s in journal["steps"]) if journal else 0
        how = "resume" if r % 2 == 0 else "undo"
        index = Index.open(root)
        if how == "resume":
            from lookalike.dedupe import apply_plan

            apply_plan(index, plan_file, "move", target=trash)
        elif journal is not None:
            undo_plan(index, plan_file)
        ok = checksums(root, trash) == before
        accounted = True
        if journal is not None:
            journal = json.loads(jpath.read_text())
            for s in journal["steps"]:
                here, there = (root / s["path"]).exists(), (trash / s["path"]).exists()
                accounted &= (here != there) and there == (s["state"] == "done")
        rounds.append(
            {
                "delay": delay,
                "done_at_kill": done_at_kill,
                "started_at_kill": started_at_kill,
                "how": how,
                "ok": ok,
                "accounted": accounted,
            }
        )
        if how == "resume":
            undo_plan(Index.open(root), plan_file)
        ok_after = checksums(root) == before
        rounds[-1]["ok"] &= ok_after
    return {
        "kills": kills,
        "files": len(before),
        "steps": steps,
        "apply_seconds": apply_seconds,
        "rounds": rounds,
        "slow_fsync": True,
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rooms", type=int, default=300)
    ap.add_argument("--flowers", type=int, default=200)
    ap.add_argument("--copies", type=int, default=500)
    ap.add_argument("--new", type=int, default=500)
    ap.add_argument("--collection", type=int, default=10000, help="photos in the index --new checks against")
    ap.add_argument(
        "--sample-pairs", type=int, default=2000, help="whole-collection dedupe: pairs pixel-checked to time it"
    )
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--kill-groups", type=int, default=15)
    ap.add_argument("--only", choices=("keeper", "new", "kill", "report"))
    args = ap.parse_args()
    folder = ROOT / "bench" / "results"
    folder.mkdir(parents=True, exist_ok=True)
    parts = {
        "keeper": lambda: keeper_bench(args.rooms, args.flowers),
        "new": lambda: new_bench(args.copies, args.new, args.collection, args.sample_pairs),
        "kill": lambda: kill_bench(args.kills, args.kill_groups),
    }
    for name, run in parts.items():
        if args.only in (None, name):
            result = run()
            print(json.dumps(result)[:2000])
            (folder / f"dedupe_actions-{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    # each part is its own file, so parts can be re-run separately (and at the same time)
    results = {
        n: json.loads((folder / f"dedupe_actions-{n}.json").read_text())
        for n in parts
        if (folder / f"dedupe_actions-{n}.json").exists()
    }
    write_section("dedupe_actions", report(results))


def report(r: dict) -> str:
    lines = ["## Acting on duplicates (`dedupe --plan/--apply/--new`)", ""]
    if "keeper" in r:
        k = r["keeper"]
        lines += [
            f"**Keeper choice** (`--keep best`{', measured ' + k['measured'] if 'measured' in k else ''}): "
            f"{k['groups']} generated groups ({k['rooms']} rooms + {k['flowers']} "
            "flowers12 photos, each with a downscaled ×0.5–0.9, a recompressed q50–70 (below the sources' quality 75), a cropped 80–95% and a "
            f"blurred σ 0.6–1.5 copy): the original was kept in **{k['correct']} / {k['groups']} = "
            f"{100 * k['correct'] / k['groups']:.1f}%** of groups. Wrong keepers by kind: "
            + ", ".join(f"{a} {b}" for a, b in k["losses"].items())
            + ". First deciding stage: "
            + ", ".join(f"{a} {b}" for a, b in sorted(k["stages"].items()))
            + f". Misses from rooms groups: {sum(w.split('/')[0] in ROOM_CLASSES for w in k['wrong'])}, from flowers12 "
            f"groups: {sum(w.split('/')[0] not in ROOM_CLASSES for w in k['wrong'])}"
            + f". Ranking took {1000 * k['seconds'] / k['groups']:.0f} ms per 5-photo group (writing the copies included)."
            + (
                " The original against each copy alone, the stage that decided: "
                + "; ".join(
                    f"{kind}: " + ", ".join(f"{st} {c}" for st, c in sorted(d.items(), key=lambda x: -x[1]))
                    for kind, d in k["pairwise"].items()
                )
                + "."
                if "pairwise" in k
                else ""
            ),
            "",
        ]
    if "new" in r and "union_pairs" in r["new"]:
        n = r["new"]
        check = n["new_seconds"] - n["embed_seconds"]
        union_dedupe = n["knn_seconds"] + n["union_pixel_seconds"]
        made = ", ".join(f"{v:,} {k}" for k, v in n["parts"].items())
        lines += [
            f"**`--new`** (measured {n['measured']}): {n['incoming']} incoming photos ({n['copies']} altered copies of "
            "indexed rooms photos — downscaled, recompressed, cropped, blurred in turn — and "
            f"{n['new']} rooms photos held out of the index, same domain) against an index of {n['indexed']:,} photos "
            f"({made}; vectors taken from the cached indexes, {n['model']['name']}, {n['resolution']} px):",
            "",
            markdown_table(
                ["precision", "recall", "copies found", "false copies", "missed", "wrong original named"],
                [[f"{n['precision']:.3f}", f"{n['recall']:.3f}", n["tp"], n["fp"], n["fn"], n["wrong_target"]]],
            ),
            "",
            f"Cost, side by side in this run. Both ways embed the {n['incoming']:,} new photos (re-running `dedupe` needs them in "
            "the index first); after that, both costs are the pixel check of candidate pairs, so they grow with the "
            "number of pairs:",
            "",
            markdown_table(
                ["", "embedding", "candidate pairs pixel-checked", "after embedding"],
                [
                    ["`dedupe --new`", f"{n['embed_seconds']:.0f} s", f"{n['new_pairs']:,}", f"{check:.0f} s"],
                    [
                        f"`dedupe` over all {n['union']:,} photos",
                        f"{n['embed_seconds']:.0f} s (the same)",
                        f"{n['union_pairs']:,}",
                        f"{union_dedupe:.0f} s"
                        + (
                            ""
                            if n["full"]
                            else f" (kNN {n['knn_seconds']:.0f} s + pairs at the rate measured on "
                            f"{n['sample_pairs']:,} of them: {n['sample_seconds']:.0f} s)"
                        ),
                    ],
                ],
            ),
            "",
            f"After embedding, `--new` took {check / max(union_dedupe, 1e-9):.2f}× the time of a whole-collection "
            f"`dedupe` ({n['new_pairs']:,} vs {n['union_pairs']:,} pairs; whole run with embedding "
            f"{n['new_seconds'] / max(n['embed_seconds'] + union_dedupe, 1e-9):.2f}×). "
            + (
                ""
                if n["full"]
                else "The whole-collection pixel check was timed on a random sample of its pairs and "
                "scaled by the pair count (thumbnails included; the check costs the same per pair; a full run here would take an estimated "
                f"{n['union_pixel_seconds'] / 60:.0f} min on this shared machine). "
            )
            + "Why the earlier measurement (3,133 rooms photos) found `--new` no faster: it timed `dedupe` on the "
            "stored vectors alone, without the embeddings it needs for the new photos, and the rooms set holds few "
            "look-alikes, so its own candidate pairs (724) were fewer than those of 1,000 incoming photos, half of "
            "them copies. `--new`'s pairs grow with the incoming photos; the whole collection's grow with the "
            "collection (products crops and flowers copies are look-alikes).",
            "",
            f"{n['fp_pixel_099']} of the {n['fp']} false copies line up pixel for pixel at ≥ 0.99: held-out photos "
            "that the rooms set itself holds twice (the same photo under two names), i.e. real copies the ground truth "
            "does not know about.",
            "",
        ]
        if n["false_positive_examples"]:
            lines += [
                "False copies (held-out photo → indexed photo, cosine, pixel): "
                + "; ".join(f"{a} → {b['name']} ({b['cosine']}, {b['pixel']})" for a, b in n["false_positive_examples"])
                + ".",
                "",
            ]
    if "kill" in r:
        kb = r["kill"]
        ok = sum(x["ok"] and x["accounted"] for x in kb["rounds"])
        mids = sum(0 < x["done_at_kill"] < kb["steps"] or x["started_at_kill"] for x in kb["rounds"])
        lines += [
            f"**SIGKILL safety**{' (measured ' + kb['measured'] + ')' if 'measured' in kb else ''}: "
            f"`--apply --move-to` on {kb['files']} files ({kb['steps']} to move; a whole run takes "
            f"{kb['apply_seconds']:.2f} s after start-up"
            + (", every directory fsync slowed by 10 ms" if kb.get("slow_fsync") else "")
            + f") killed at a random moment {kb['kills']} times ({mids} of them "
            "mid-run, with some steps done and others not), then resumed (even rounds) or undone (odd rounds): "
            f"**{ok} / {kb['kills']}** rounds left every file's bytes exactly once (SHA-256 of every file before and "
            "after) with the journal naming where each file is. The test suite kills `--apply` 20 times on every run, on "
            "its sample photos (`test_sigkill_during_apply_then_resume_or_undo`, see docs/cluster-and-dedupe.md).",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
