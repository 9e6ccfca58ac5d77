"""Keepers by format: camera originals over their exports, RAW+JPEG siblings, edited copies, reference folders, and
the time of ``dedupe plan`` with and without ``--path``. Writes the ``dedupe_formats`` section of BENCHMARKS.md.

1. Quality (load-independent): generated groups from real photos (../shared/data places, interiors, rooms), each
   photo one of (``lookalike.samples.write_format_group``): a HEIC original + its JPEG export at quality 85–95 (the
   bigger file), an AVIF original + its JPEG export, a DNG + its JPEG sibling (one shot, no other copy), a JPEG +
   its Lightroom edit (cropped 2%, Software tag, later mtime, same capture time); every group but the DNG ones also
   gets the dedupe_actions copies of the original's pixels (downscaled, recompressed q50–70, cropped 80–95%). One
   index, one near-duplicate run, then plans: the keeper must be the camera original (the unedited JPEG for edits);
   sibling pairs must never be grouped; plans with reference folders must never remove a file under them.
2. Timing: ``dedupe plan`` (find + keeper choice) on a collection of ``--collection`` photos (bench.dedupe_actions'
   collection: rooms, products, flowers12 with copies, vectors from cached indexes) and with ``--path`` narrowing it
   to ~10% of the photos (whole folders, in path order).

``--quick``: 20 groups and a 1,000-photo collection, to check the bench runs. ``--part quality|timing|all``.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import CACHE, dataset  # noqa: E402
from bench.dedupe_actions import alter  # noqa: E402
from bench.report import markdown_table, write_section  # noqa: E402

WORK = CACHE / "dedupe-formats"
KINDS = ("heic", "avif", "dng", "edited")
MAX_SIDE = 2048  # multi-megapixel sources are capped here (AVIF/HEIC encoding of 8 MP photos takes seconds each)


def sources(n_places: int, n_interiors: int, n_rooms: int, seed: int) -> list[Path]:
    rng = random.Random(seed)
    out = []
    for name, n in (("places", n_places), ("interiors", n_interiors), ("rooms", n_rooms)):
        files = sorted(p for p in dataset(name).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        out += rng.sample(files, min(n, len(files)))
    return out


def make_tree(root: Path, files: list[Path], seed: int) -> list[dict]:
    """The photo tree and its manifest: one group per source photo (see the module docstring)."""
    from lookalike.samples import write_format_group

    shutil.rmtree(root, ignore_errors=True)
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    groups = []
    for n, src in enumerate(files):
        img = Image.open(src).convert("RGB")
        img.thumbnail((MAX_SIDE, MAX_SIDE))
        kind = KINDS[n % len(KINDS)]
        when = f"2024:{1 + n // 28 % 12:02d}:{1 + n % 28:02d} {10 + n % 9:02d}:00:00"
        g = write_format_group(img, root, f"IMG_{n:05d}", kind, rng=nrng, when=when)
        g["source"] = str(src)
        if kind != "dng":
            for k in ("down", "recompress", "crop"):
                copy, quality = alter(img, k, rng)
                name = f"copies/IMG_{n:05d}-{k}.jpg"
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                copy.save(root / name, quality=quality)
                g["copies"].append(name)
        groups.append(g)
    return groups


def quality_bench(n_places: int, n_interiors: int, n_rooms: int, seed: int = 0) -> dict:
    from lookalike.dedupe import DedupeSettings, index_duplicates, make_plan
    from lookalike.index import Index

    root = WORK / "photos"
    t0 = time.perf_counter()
    manifest = make_tree(root, sources(n_places, n_interiors, n_rooms, seed), seed)
    t_make = time.perf_counter() - t0
    index = Index.build(root, labels="none")
    t_index = time.perf_counter() - t0 - t_make
    notes: list[str] = []
    groups = index_duplicates(index, notes=notes)
    kept_apart = sum(int(n.split()[0]) for n in notes if "RAW+JPEG sibling pair" in n)
    plan = make_plan(index, groups=groups, notes=notes)
    where = {f["path"]: g for g in plan["groups"] for f in g["files"]}
    out: dict = {"groups": len(manifest), "kinds": {}, "index_seconds": round(t_index, 1), "files": len(index)}
    for kind in KINDS:
        mine = [g for g in manifest if g["kind"] == kind]
        if kind == "dng":
            grouped = sum(any(s in where and g["original"] in where and where[s] is where[g["original"]]
                              for s in g["siblings"]) for g in mine)  # fmt: skip
            out["kinds"][kind] = {"groups": len(mine), "siblings_grouped": grouped, "kept_apart": kept_apart}
            continue
        found = [g for g in mine if g["original"] in where]
        kept = [g for g in found if where[g["original"]]["keeper"] == g["original"]]
        misses = [(g["original"], where[g["original"]]["keeper"], where[g["original"]]["why"])
                  for g in found if g not in kept][:5]  # fmt: skip
        out["kinds"][kind] = {"groups": len(mine), "found": len(found), "kept": len(kept), "misses": misses}
    out["reference"] = {}
    for label, folders in (("originals", ("phone", "camera")), ("exports", ("exports",))):
        settings = DedupeSettings.parse(reference=[root / f for f in folders if (root / f).is_dir()])
        ref_plan = make_plan(index, groups=groups, settings=settings)
        files = [(f, g) for g in ref_plan["groups"] for f in g["files"]]
        under = [f for f, _ in files if f["path"].split("/")[0] in folders]
        removed = [f["path"] for f, g in files if f["role"] == "remove" and g["action"] == "remove-others"
                   and f["path"].split("/")[0] in folders]  # fmt: skip
        out["reference"][label] = {"folders": list(folders), "files_in_groups": len(under), "removed": len(removed)}
    from lookalike.dedupe.decisions import remember_references

    remember_references(index.folder, remove=("phone", "camera", "exports"))
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def collection(target: int):  # noqa: ANN201
    """bench.dedupe_actions' collection (rooms, products, flowers12 with copies; vectors from cached indexes); for a
    target the rooms photos cover, a link index of the first ``target`` rooms photos only (no other index built)."""
    from bench.common import shared_index
    from bench.dedupe_actions import collection_index
    from lookalike.index import Index
    from lookalike.store import Store, make_table

    rooms = shared_index("rooms")
    if target > len(rooms):
        return collection_index(target, set())
    coll = WORK / f"collection-{target}"
    shutil.rmtree(coll, ignore_errors=True)
    order = sorted(range(len(rooms)), key=rooms.names.__getitem__)[:target]
    table = rooms.store.table
    cols = [c for c in table.column_names if c not in ("vector", "path_bytes", "path")]
    rows = []
    for i, r in zip(order, table.take(order).select(cols).to_pylist(), strict=True):
        new = f"rooms/{rooms.names[i]}"
        (coll / new).parent.mkdir(parents=True, exist_ok=True)
        (coll / new).symlink_to(rooms.root / rooms.names[i])
        rows.append({**r, "path": new})
    meta = {k: v for k, v in rooms.store.meta.items() if k not in ("root", "created")}
    store = Store.create(coll / ".lookalike", {**meta, "root": ".."})
    vectors = rooms.vectors[order]
    store.commit(make_table(rows, vectors, vectors.shape[1]), [])
    return Index.open(coll / ".lookalike"), {"rooms": len(rows)}


def timing_bench(target: int, share: float = 0.1) -> dict:
    """``make_plan`` on the whole collection and with ``--path`` over whole folders holding ~``share`` of it."""
    from lookalike.dedupe import DedupeSettings, make_plan

    index, counts = collection(target)
    folders: dict[str, int] = {}
    for n in index.names:
        top = "/".join(n.split("/")[:2])
        folders[top] = folders.get(top, 0) + 1
    chosen, total = [], 0
    for f in sorted(folders):
        if total >= share * len(index):
            break
        chosen.append(f)
        total += folders[f]
    glob = "{" + ",".join(chosen) + "}/**" if len(chosen) > 1 else f"{chosen[0]}/**"
    out = {"photos": len(index), "sources": counts}
    for label, settings in (("all", DedupeSettings()), ("path", DedupeSettings(path=glob))):
        t0 = time.perf_counter()
        plan = make_plan(index, settings=settings)
        out[label] = {"seconds": round(time.perf_counter() - t0, 1), "groups": plan["summary"]["groups"],
                      "photos": total if label == "path" else len(index)}  # fmt: skip
    out["glob"] = glob if len(glob) < 120 else f"{len(chosen)} folders"
    return out


def report(q: dict | None, t: dict | None, quick: bool) -> str:
    lines = ["## Keepers by format: camera originals, RAW+JPEG, reference folders", ""]
    if q:
        k = q["kinds"]
        rows = []
        for kind, what in (("heic", "HEIC original + JPEG export (q85–95, bigger)"),
                           ("avif", "AVIF original + JPEG export"), ("edited", "JPEG + Lightroom edit (original kept)")):  # fmt: skip
            r = k[kind]
            rows.append([what, r["groups"], r["found"], f"{r['kept']} of {r['found']}"])
        lines += [
            f"{q['groups']} generated groups from real photos (places, interiors, rooms; multi-megapixel ones capped at "
            f"{MAX_SIDE} px), {q['files']} files; every group but the DNG ones also has a downscaled, a recompressed "
            f"(q50–70) and a cropped copy. One `dedupe find`, then plans (default settings, `--keep best`).",
            "",
            markdown_table(["group", "groups", "found as a group", "keeper = the original"], rows),
            "",
            f"- **RAW+JPEG siblings** (DNG + its JPEG, same folder and stem, no other copy): grouped as duplicates in "
            f"**{k['dng']['siblings_grouped']} of {k['dng']['groups']}**; {k['dng']['kept_apart']} of those pairs "
            "line up pixel for pixel, so `--raw-jpeg duplicates` would have grouped them.",
        ]
        for label, r in q["reference"].items():
            lines.append(
                f"- **Reference folders** {', '.join(r['folders'])} ({'holding the best copies' if label == 'originals' else 'holding the exports'}): "  # noqa: E501
                f"{r['files_in_groups']} of their files in groups, **{r['removed']} planned for removal**."
            )
        misses = [m for kk in ("heic", "avif", "edited") for m in k[kk]["misses"]]
        if misses:
            lines.append("- Misses (first few): " + "; ".join(f"{o} lost to {w} ({why})" for o, w, why in misses))
        lines += ["", f"Quality run: {q['seconds']} s in all (index {q['index_seconds']} s)."]
    if t:
        lines += [
            "",
            f"**Time of `dedupe plan`** on {t['photos']:,} photos ({', '.join(f'{k} {v:,}' for k, v in t['sources'].items())}):",
            "",
            markdown_table(
                ["run", "photos looked at", "groups", "seconds"],
                [
                    ["whole collection", f"{t['all']['photos']:,}", t["all"]["groups"], t["all"]["seconds"]],
                    [f"`--path` {t['glob']}", f"{t['path']['photos']:,}", t["path"]["groups"], t["path"]["seconds"]],
                ],
            ),
        ]
    if not t:
        lines += ["", "Time of `dedupe plan` with and without `--path`: not measured yet (`--part timing`)."]
    if quick:
        lines += ["", "_A `--quick` run: too small to quote._"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20 groups and a 1,000-photo collection")
    ap.add_argument("--part", choices=("quality", "timing", "all"), default="all")
    ap.add_argument("--places", type=int, default=43)
    ap.add_argument("--interiors", type=int, default=39)
    ap.add_argument("--rooms", type=int, default=218)
    ap.add_argument("--collection", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.quick:
        a.places, a.interiors, a.rooms, a.collection = 4, 4, 12, 1000
    import json

    stored = WORK / f"results{'-quick' if a.quick else ''}.json"
    before = json.loads(stored.read_text()) if stored.is_file() else {}
    q = quality_bench(a.places, a.interiors, a.rooms, a.seed) if a.part in ("quality", "all") else before.get("q")
    print(json.dumps({"quality": q}, indent=1), flush=True)
    t = timing_bench(a.collection) if a.part in ("timing", "all") else before.get("t")
    print(json.dumps({"quality": q, "timing": t}, indent=1))
    WORK.mkdir(parents=True, exist_ok=True)
    stored.write_text(json.dumps({"q": q, "t": t}))  # a run of one part keeps the other's last results
    settings = {"places": a.places, "interiors": a.interiors, "rooms": a.rooms, "collection": a.collection}
    write_section("dedupe_formats", report(q, t, a.quick), settings)


if __name__ == "__main__":
    main()
