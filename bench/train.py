"""Does learning from labels help? Trained embeddings vs the untrained backbone on rooms and products.

Rooms: a fixed, stratified held-out fifth (seed 0) is never seen by training (which makes its own validation split
from the other four fifths). kNN (k = 10, cosine, distance-weighted) and a logistic-regression linear probe are
fitted on the four fifths' embeddings and scored on the held-out fifth. Products: precision@1 and mAP@R of the
held-out fifth as queries against the rest. A λ sweep shows the compactness trade-off (mean cosine within and
between classes) and the training time. A products model with five ids never seen is saved for the packed-scenes
work. Results accumulate in bench/results/train.json (committed, so a fresh machine keeps the rows it did not rerun),
so ``--finetune`` (the slow unfreeze runs) can run separately; every run rewrites the whole section from it.

    flock /tmp/lookalike-bench.lock .venv/bin/python -m bench.train [--report | --readout | --finetune lite2@384:u8 ...]

``--readout`` adds the accuracy of `lookalike classify`'s own heads (and the kNN confusion matrix) to rows measured
before they were recorded.
"""

from __future__ import annotations

import os

os.environ.setdefault("LOOKALIKE_CACHE", "/tmp/lookalike-cache")

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from itertools import pairwise  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier  # noqa: E402

from bench.common import CACHE, dataset  # noqa: E402
from bench.report import commit_stamp, markdown_table, now_stamp, write_section  # noqa: E402

MODELS = CACHE / "models"
VECTORS = CACHE / "bench-train-vectors"
HEADS = ("knn", "linear", "mlp")
RESULTS = Path(__file__).parent / "results" / "train.json"  # in git: a new machine keeps the table
HELDOUT_IDS = 5
MIXED_ID = "MrlIsXerE3D"


def split(files: list[tuple[Path, str]]) -> tuple[list, list]:
    labels = [c for _, c in files]
    tr, te = train_test_split(np.arange(len(files)), test_size=0.2, stratify=labels, random_state=0)
    return [files[i] for i in sorted(tr)], [files[i] for i in sorted(te)]


def pooled(files: list[tuple[Path, str]], resolution: int, model: str = "efficientnet-lite0") -> np.ndarray:
    from lookalike.training import pooled_features

    x, bad = pooled_features([p for p, _ in files], model, resolution)
    if bad:
        print(f"  {len(bad)} unreadable files", file=sys.stderr)
    return x


def trained_vectors(model_dir: Path, files: list[tuple[Path, str]], x_pooled: np.ndarray) -> np.ndarray:
    """Embeddings by the saved model: the head on cached features (unfreeze 0) or ONNX Runtime on the images."""
    import torch

    from lookalike.models import create_model

    backbone = create_model(str(model_dir))
    card = json.loads((model_dir / "model.json").read_text())
    if card["unfreeze"] == 0:
        with torch.inference_mode():
            return backbone.module.module.embed_pooled(torch.from_numpy(np.nan_to_num(x_pooled))).numpy()
    from lookalike.aggregate import MeanPooling
    from lookalike.embed import Describer

    d = Describer(backbone, MeanPooling(), card["resolution"])
    out = np.zeros((len(files), card["embedding_dim"]), np.float32)
    pos = {p: i for i, (p, _) in enumerate(files)}
    for batch in d.describe_files([p for p, _ in files], batch_size=32):
        for item, v in zip(batch.described, batch.vectors, strict=True):
            out[pos[item.path]] = v
    return out


def onnx_check(model_dir: Path, files: list[tuple[Path, str]], x_pooled: np.ndarray) -> float:
    """Largest difference between the head-on-cache embedding and the full ONNX model on 32 images."""
    from lookalike.aggregate import MeanPooling
    from lookalike.embed import Describer
    from lookalike.models import create_model

    card = json.loads((model_dir / "model.json").read_text())
    d = Describer(create_model(str(model_dir)), MeanPooling(), card["resolution"])
    sub = files[:32]
    onnx = np.concatenate([b.vectors for b in d.describe_files([p for p, _ in sub])])
    return float(np.abs(onnx - trained_vectors(model_dir, sub, x_pooled[:32])).max())


def members_cost(model_dir: Path, files: list[tuple[Path, str]]) -> dict:
    """Indexing time of a --members model against its first member alone, side by side on the same 160 images
    (after a warm-up that exports both to ONNX): what the shared frozen layers save over N separate models."""
    from lookalike.aggregate import MeanPooling
    from lookalike.embed import Describer
    from lookalike.models import create_model

    card = json.loads((model_dir / "model.json").read_text())
    paths = [p for p, _ in files[:160]]
    out = {}
    for key, path in (("member", model_dir / card["members"][0]), ("members", model_dir)):
        d = Describer(create_model(str(path)), MeanPooling(), card["resolution"])
        list(d.describe_files(paths[:8], batch_size=8))
        t0 = time.perf_counter()
        list(d.describe_files(paths, batch_size=32))
        out[key] = time.perf_counter() - t0
    out["n"] = len(paths)
    out["ratio"] = out["members"] / out["member"]
    print("members cost", out, flush=True)
    return out


def _knn(xtr: np.ndarray, ytr: list[str]) -> KNeighborsClassifier:
    return KNeighborsClassifier(n_neighbors=10, metric="cosine", weights="distance").fit(xtr, ytr)


def classify(xtr: np.ndarray, ytr: list[str], xte: np.ndarray, yte: list[str]) -> tuple[float, float]:
    knn = _knn(xtr, ytr)
    lin = LogisticRegression(C=1.0, max_iter=3000).fit(xtr, ytr)
    return float(knn.score(xte, yte)), float(lin.score(xte, yte))


def heads(xtr: np.ndarray, ytr: list[str], xte: np.ndarray, yte: list[str]) -> dict[str, float]:
    """Held-out accuracy of `lookalike classify`'s own heads fitted on the four fifths: what a user of the tool gets
    (kNN vote with a temperature tuned leave-one-out, linear probe with C picked on a held-out part, MLP)."""
    from lookalike.classify import make_head

    return {m: float(np.mean(make_head(m).fit(xtr, ytr).predict(xte) == np.asarray(yte))) for m in HEADS}


def confusion(xtr: np.ndarray, ytr: list[str], xte: np.ndarray, yte: list[str]) -> dict:
    """The kNN vote's confusion matrix (rows: folder label, columns: predicted), to see which rooms it mixes up."""
    from lookalike.evaluate import classification_metrics

    return classification_metrics(yte, _knn(xtr, ytr).predict(xte), sorted(set(ytr)))["confusion"]


AUDIT = Path(__file__).parent / "results" / "rooms-errors-audit.json"


def _measured() -> str:
    """When and at which commit a row is measured, kept with the row (rows accumulate over runs)."""
    return f"{now_stamp()}, {commit_stamp()}"


def _untrained_key(model: str, res: int) -> str:
    return f"untrained@{res}" if model == "efficientnet-lite0" else f"untrained-{model}@{res}"


def readout(results: dict, only: list[str]) -> None:
    """Add the classify heads' accuracies (and the kNN confusion matrix) to rows that lack them (or the rows named
    in ``only``), from cached features, saved vectors or the model."""
    tr, te = split(_files("rooms"))
    ytr, yte = [c for _, c in tr], [c for _, c in te]
    rows = results.get("rooms", {})
    for model, res in dict.fromkeys(BASELINES):
        key = _untrained_key(model, res)
        if key in rows and "heads" not in rows[key] and (not only or key in only):
            rows[key]["heads"] = heads(pooled(tr, res, model), ytr, pooled(te, res, model), yte)
            rows[key]["readout_measured"] = _measured()
            print(key, rows[key]["heads"], flush=True)
            _save(results)
    for name, row in rows.items():
        if ("heads" in row and "confusion" in row) or name.startswith("untrained") or (only and name not in only):
            continue
        vec = VECTORS / f"{name}.npz"
        if not vec.exists():
            if not (MODELS / name / "complete").exists():
                print(f"{name}: no saved vectors or model; left without heads", flush=True)
                continue
            _save_vectors(name, trained_vectors(MODELS / name, tr, None), trained_vectors(MODELS / name, te, None))
        with np.load(vec) as z:
            if "heads" not in row:
                row["heads"] = heads(z["tr"], ytr, z["te"], yte)
            row["confusion"] = confusion(z["tr"], ytr, z["te"], yte)
            row["readout_measured"] = _measured()
        print(name, row["heads"], flush=True)
        _save(results)


def _save_vectors(name: str, vtr: np.ndarray, vte: np.ndarray) -> None:
    VECTORS.mkdir(parents=True, exist_ok=True)
    np.savez(VECTORS / f"{name}.npz", tr=vtr, te=vte)


def compactness(x: np.ndarray, y: list[str]) -> tuple[float, float]:
    y = np.asarray(y)
    sim = x @ x.T
    same = y[:, None] == y[None, :]
    np.fill_diagonal(same, False)
    other = y[:, None] != y[None, :]
    return float(sim[same].mean()), float(sim[other].mean())


def run_train(name: str, files: list[tuple[Path, str]], **opts: object) -> tuple[Path, float, dict]:
    from lookalike.training import TrainOptions, train

    out = MODELS / name
    t0 = time.perf_counter()
    # an unfinished run of the same options resumes (a killed bench loses at most an epoch); a finished one is redone
    done = (out / "complete").exists()
    result = train(None, out, TrainOptions(**opts), files=files, overwrite=done, log=lambda m: print(" ", m))
    card = json.loads((out / "model.json").read_text())
    print(f"{name}: {result.epochs_run} epochs, {time.perf_counter() - t0:.0f}s", flush=True)
    return out, card["training_seconds"], card


BASELINES = [("efficientnet-lite0", 224), ("efficientnet-lite0", 320), ("efficientnet-lite2", 320),
             ("efficientnet-lite2", 384), ("efficientnet-lite2", 416)]  # fmt: skip


def _short(model: str) -> str:
    return model.replace("efficientnet-lite", "EfficientNet-Lite")


def rooms(results: dict, finetune: list[str] | None) -> None:
    """Head-only runs and untrained baselines, or (``finetune``) the given ``lite2@384:u2``-style fine-tuning runs."""
    files = [(p, c) for p, c in _files("rooms")]
    tr, te = split(files)
    ytr, yte = [c for _, c in tr], [c for _, c in te]
    rows = results.setdefault("rooms", {})
    runs: list[tuple[str, dict]] = []
    if finetune:
        # lite2@384:u8, plus :c1 for another --crop, :cos for the cosine schedule, :e16 for at most 16 epochs,
        # :v0.05 for --val-split 0.05, :s1 for --seed 1, :n2 for --members 2, :d0.1 for --drop-suspects 0.1
        for spec in finetune:
            what, unfreeze, *more = spec.split(":")
            variant, res = what.split("@")
            opts = {"loss": "normsoftmax", "unfreeze": int(unfreeze.removeprefix("u")),
                    "model": f"efficientnet-{variant}", "resolution": int(res), "epochs": 24}  # fmt: skip
            name = f"rooms-{variant}-{res}-{unfreeze}"
            for m in more:
                if m == "cos":
                    opts["schedule"] = "cosine"
                    name += "-cos"
                elif m.startswith("c"):
                    opts["crop"] = float(m[1:])
                    name += f"-{m}"
                elif m.startswith("e"):  # not in the name: resuming a run with fewer epochs finishes it
                    opts["epochs"] = int(m[1:])
                elif m.startswith("v"):  # --val-split: a smaller one trains on more of the four fifths
                    opts["val_split"] = float(m[1:])
                    name += f"-{m}"
                elif m.startswith("n"):  # --members: that many seeds, embeddings concatenated
                    opts["members"] = int(m[1:])
                    name += f"-{m}"
                elif m.startswith("d"):  # --drop-suspects: leave out images whose label the others contradict
                    opts["drop_suspects"] = float(m[1:])
                    name += f"-{m}"
                elif m.startswith("s"):  # --seed: another initialisation, views and validation split
                    opts["seed"] = int(m[1:])
                    name += f"-{m}"
            runs.append((name, opts))
    baselines = BASELINES + [(o["model"], o["resolution"]) for _, o in runs]
    for model, res in dict.fromkeys(baselines):
        key = _untrained_key(model, res)
        if finetune and key in rows:  # a fine-tuning run only needs its baseline once
            continue
        xtr, xte = pooled(tr, res, model), pooled(te, res, model)
        knn, lin = classify(xtr, ytr, xte, yte)
        intra, inter = compactness(xte, yte)
        rows[key] = {
            "model": f"{_short(model)} GeM, untrained, {res} px", "knn": knn, "linear": lin, "intra": intra,
            "inter": inter, "seconds": 0.0, "heads": heads(xtr, ytr, xte, yte), "measured": _measured(),
        }  # fmt: skip
        print(rows[key], flush=True)
    xtr, xte = (None, None) if finetune else (pooled(tr, 224), pooled(te, 224))
    if not finetune:
        runs += [(f"rooms-normsoftmax-l{lam}", {"loss": "normsoftmax", "scale": lam}) for lam in (8, 16, 20, 32, 64)]
        runs += [("rooms-triplet", {"loss": "triplet"}), ("rooms-triplet-hard", {"loss": "triplet", "miner": "hard"})]
        runs += [("rooms-arcface", {"loss": "arcface"})]
    for name, opts in runs:
        model_dir, secs, card = run_train(name, tr, **opts)
        res = card["resolution"]
        a, b = (xtr, xte) if res == 224 and card["base_model"] == "efficientnet-lite0" else (None, None)
        vtr, vte = trained_vectors(model_dir, tr, a), trained_vectors(model_dir, te, b)
        _save_vectors(name, vtr, vte)
        knn, lin = classify(vtr, ytr, vte, yte)
        intra, inter = compactness(vte, yte)
        desc = f"{opts['loss']}" + (f" λ={card['scale']:g}" if card.get("scale") else "")
        desc += f", {card['miner']} miner" if card.get("miner") else ""
        desc += f", unfreeze {card['unfreeze']}, {res} px"
        if card["unfreeze"]:
            desc += f", crop {card['options'].get('crop', 1.0):g}"
            desc += ", cosine lr" if card["options"].get("schedule") == "cosine" else ""
            o = card["options"]
            desc += f", val split {o['val_split']:g}" if o.get("val_split", 0.15) != 0.15 else ""
            desc += f", seed {o['seed']}" if o.get("seed", 0) else ""
            desc += f", {o['members']} members" if o.get("members", 1) > 1 else ""
            desc += f", suspects < {o['drop_suspects']:g} left out" if o.get("drop_suspects") else ""
        if card["base_model"] != "efficientnet-lite0":
            desc = f"{_short(card['base_model'])}, {desc}"
        rows[name] = {"model": desc, "knn": knn, "linear": lin, "intra": intra, "inter": inter, "seconds": secs,
                      "epochs": card["epochs_run"], "best_epoch": card["best_epoch"], "heads": heads(vtr, ytr, vte, yte),
                      "confusion": confusion(vtr, ytr, vte, yte), "measured": _measured()}  # fmt: skip
        if name == "rooms-normsoftmax-l20":
            rows[name]["onnx_diff"] = onnx_check(model_dir, te, xte)
        if card.get("members"):
            rows[name]["members_cost"] = members_cost(model_dir, te)
            # each member alone: its slice of the joined embedding (the members' dims add up in order)
            cuts = np.cumsum([0] + [json.loads((model_dir / m / "model.json").read_text())["embedding_dim"]
                                    for m in card["members"]])  # fmt: skip
            unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
            rows[name]["member_scores"] = [
                dict(zip(("knn", "linear"), classify(unit(vtr[:, a:b]), ytr, unit(vte[:, a:b]), yte), strict=True))
                for a, b in pairwise(cuts)
            ]
        print(rows[name], flush=True)
        _save(results)


def _files(name: str) -> list[tuple[Path, str]]:
    from lookalike.images import labelled_files

    return labelled_files(dataset(name))


def retrieval(xq: np.ndarray, yq: list[str], xr: np.ndarray, yr: list[str]) -> dict:
    from lookalike.training import validation_metrics

    return validation_metrics(xq, np.asarray(yq), xr, np.asarray(yr))


def products(results: dict) -> None:
    files = _files("products")
    tr, te = split(files)
    ytr, yte = [c for _, c in tr], [c for _, c in te]
    xtr, xte = pooled(tr, 224), pooled(te, 224)
    rows = results.setdefault("products", {})
    rows["untrained"] = {"model": "EfficientNet-Lite0 GeM, untrained", **retrieval(xte, yte, xtr, ytr),
                         "measured": _measured()}  # fmt: skip
    model_dir, secs, _card = run_train("products-normsoftmax", tr, loss="normsoftmax")
    vtr, vte = trained_vectors(model_dir, tr, xtr), trained_vectors(model_dir, te, xte)
    rows["trained"] = {"model": "normsoftmax λ=20, unfreeze 0", **retrieval(vte, yte, vtr, ytr), "seconds": secs,
                       "measured": _measured()}  # fmt: skip
    # without the deliberately mixed id, where "same product" is ill-defined
    keep_q = [c != MIXED_ID for c in yte]
    keep_r = [c != MIXED_ID for c in ytr]
    for key, (q, r) in {"untrained": (xte, xtr), "trained": (vte, vtr)}.items():
        rows[key]["without_mixed"] = retrieval(
            q[keep_q], [c for c in yte if c != MIXED_ID], r[keep_r], [c for c in ytr if c != MIXED_ID]
        )
    print(rows, flush=True)

    # Held-out ids: train on 20 ids (all their images), measure retrieval among the 5 never seen.
    ids = sorted({c for _, c in files} - {MIXED_ID})
    held = sorted(np.random.default_rng(0).choice(ids, HELDOUT_IDS, replace=False).tolist())
    seen = [(p, c) for p, c in files if c not in held]
    unseen = [(p, c) for p, c in files if c in held]
    x_seen_unseen = pooled(unseen, 224)
    un_tr, un_te = split(unseen)
    pos = {p: i for i, (p, _) in enumerate(unseen)}
    xu_tr = x_seen_unseen[[pos[p] for p, _ in un_tr]]
    xu_te = x_seen_unseen[[pos[p] for p, _ in un_te]]
    yu_tr, yu_te = [c for _, c in un_tr], [c for _, c in un_te]
    model_dir, secs, _card = run_train("products-heldout", seen, loss="normsoftmax")
    vu_tr, vu_te = trained_vectors(model_dir, un_tr, xu_tr), trained_vectors(model_dir, un_te, xu_te)
    results["heldout"] = {
        "ids": held,
        "model_dir": str(model_dir),
        "untrained": retrieval(xu_te, yu_te, xu_tr, yu_tr),
        "trained": retrieval(vu_te, yu_te, vu_tr, yu_tr),
        "seconds": secs,
    }
    for key in ("untrained", "trained"):
        results["heldout"][key]["measured"] = _measured()
    print(results["heldout"], flush=True)
    _save(results)


def _save(results: dict) -> None:
    RESULTS.write_text(json.dumps(results, indent=1))


UNTRAINED, HEAD_ONLY, FINE_TUNED = 0, 1, 2


def _kind(v: dict) -> int:
    """Which of the three groups a rooms row is in; also the table's order (insertion order within each)."""
    return UNTRAINED if "untrained" in v["model"] else HEAD_ONLY if "unfreeze 0," in v["model"] else FINE_TUNED


def _best(v: dict) -> float:
    return max(v["knn"], v["linear"], *v.get("heads", {}).values())


def report(results: dict) -> None:
    parts = []
    r = results.get("rooms", {})
    if r:
        rows = [
            [v["model"], f"{v['knn']:.3f}", f"{v['linear']:.3f}",
             " / ".join(f"{v['heads'][m]:.3f}" for m in HEADS) if "heads" in v else "",
             f"{v['intra']:.3f}", f"{v['inter']:.3f}", f"{v['intra'] - v['inter']:.3f}", f"{v['seconds']:.0f}",
             " + ".join(map(str, v["epochs"])) if isinstance(v.get("epochs"), list) else v.get("epochs", "")]
            for v in sorted(r.values(), key=_kind)
        ]  # fmt: skip
        parts.append(
            "### Rooms: held-out fifth (727 images, stratified, seed 0), trained on the other 2,906\n\n"
            + markdown_table(
                [
                    "embedding",
                    "kNN acc (k=10)",
                    "linear-probe acc",
                    "`classify` knn / linear / mlp",
                    "mean cos intra",
                    "mean cos inter",
                    "intra − inter",
                    "train s",
                    "epochs",
                ],
                rows,
            )
        )
        lam = {
            int(k.removeprefix("rooms-normsoftmax-l")): v for k, v in r.items() if k.startswith("rooms-normsoftmax-l")
        }
        head = [_best(v) for v in r.values() if _kind(v) == HEAD_ONLY]
        tuned = [_best(v) for v in r.values() if _kind(v) == FINE_TUNED]
        if lam:
            lo, hi = min(lam), max(lam)
            best = max(head + tuned)
            accs = [a for v in lam.values() for a in (v["knn"], v["linear"])]
            parts.append(
                f"λ sweep (normalised softmax, unfreeze 0): the rows `normsoftmax λ=…`. Smaller λ spreads the classes "
                f"apart (mean cosine between classes falls from {lam[hi]['inter']:.2f} at λ={hi} to "
                f"{lam[lo]['inter']:.2f} at λ={lo}) while accuracy hardly moves ({min(accs):.3f}–{max(accs):.3f}). "
                f"Target ≥ 0.92 accuracy: **{'reached' if best >= 0.92 else 'not reached'}**; the best head-only "
                f"embedding scores {max(head):.3f}"
                + (f", the best fine-tuned one {max(tuned):.3f}" if tuned else "")
                + ". A head on frozen pooled features barely moves the untrained features' accuracy: the features "
                "themselves have to change (`--unfreeze`, the fine-tuned rows). `train s` is the wall-clock time of "
                "the training epochs (for fine-tuned rows without the one pass through the frozen layers). Rows "
                "accumulate over runs (bench/results/train.json); a table below says when and at which commit each "
                "was measured."
            )
        for v in r.values():
            if "member_scores" in v:
                each = ", ".join(f"{m['knn']:.3f} / {m['linear']:.3f}" for m in v["member_scores"])
                c = v["members_cost"]
                parts.append(
                    f"{v['model']}: each member alone (its slice of the joined embedding) scores kNN / linear {each}; "
                    f"together {v['knn']:.3f} / {v['linear']:.3f}. Indexing the same {c['n']} held-out photos took "
                    f"{c['members']:.1f} s with all members against {c['member']:.1f} s with one "
                    f"({c['ratio']:.2f}×; the layers no member fine-tuned run once)."
                )
        audit = json.loads(AUDIT.read_text()) if AUDIT.exists() else None
        with_cm = {k: v for k, v in r.items() if "confusion" in v}
        if with_cm:  # the audited row's errors, else the best row's
            v = with_cm.get(audit["row"]) if audit else None
            v = v or max(with_cm.values(), key=lambda v: v["knn"])
            cm = v["confusion"]
            text = (
                f"Where a fine-tuned embedding's kNN vote errs ({v['model']}; rows: folder label, columns: "
                "predicted):\n\n"
                + markdown_table(
                    ["label \\ predicted", *cm["labels"]],
                    [[c, *m] for c, m in zip(cm["labels"], cm["matrix"], strict=True)],
                )
            )
            if audit and r.get(audit["row"]) is v:
                n = Counter(e["verdict"] for e in audit["errors"])
                text += (
                    f"\n\nEach of its {len(audit['errors'])} wrong held-out images looked at by eye (`bench/results/"
                    f"{AUDIT.name}`, one reviewer): the folder label is wrong (another room type, or not a room) "
                    f"for {n['label wrong']}, the photo shows two room types (open plan; either label defensible) "
                    f"for {n['both rooms shown']}, and the model is plainly wrong for {n['model wrong']}."
                )
            parts.append(text)
        if "rooms-normsoftmax-l20" in r and "onnx_diff" in r["rooms-normsoftmax-l20"]:
            parts.append(
                "The head-only models' held-out embeddings were computed as head(cached backbone features); the "
                "saved model run through ONNX Runtime on 32 of the same images differs from that by at most "
                f"{r['rooms-normsoftmax-l20']['onnx_diff']:.1e} (cosine units)."
            )
        parts.append(
            "Where each row comes from (rows accumulate over runs; 'measured' is when the row was written and the "
            "commit checked out then; rows from before this was recorded carry the footer of the BENCHMARKS.md "
            "version that first showed them, and the commit that added them to this file):\n\n"
            + markdown_table(
                ["embedding", "measured", "`classify` heads / confusion read out later"],
                [
                    [v["model"], v.get("measured", "not recorded"), v.get("readout_measured", "")]
                    for v in sorted(r.values(), key=_kind)
                ],
            )
        )
    p = results.get("products", {})
    if p:
        rows = []
        for v in p.values():
            w = v.get("without_mixed", {})
            rows.append([v["model"], f"{v['precision_at_1']:.3f}", f"{v['map_at_r']:.3f}",
                         f"{w.get('precision_at_1', float('nan')):.3f}", f"{w.get('map_at_r', float('nan')):.3f}",
                         v.get("measured", "not recorded")])  # fmt: skip
        parts.append(
            "### Products: held-out fifth as queries against the other four fifths (25 ids)\n\n"
            + markdown_table(
                ["embedding", "precision@1", "mAP@R", f"p@1 without {MIXED_ID}", "mAP@R without", "measured"], rows
            )
        )
    h = results.get("heldout")
    if h:
        parts.append(
            f"### Products never seen in training\n\nA model trained on 20 ids (`{h['model_dir']}`), evaluated on the "
            f"5 held-out ids {', '.join(h['ids'])} (their own fifth as queries against the rest of them):\n\n"
            + markdown_table(
                ["embedding", "precision@1", "mAP@R", "measured"],
                [
                    [
                        label,
                        f"{h[key]['precision_at_1']:.3f}",
                        f"{h[key]['map_at_r']:.3f}",
                        h[key].get("measured", "not recorded"),
                    ]
                    for key, label in (("untrained", "untrained"), ("trained", "trained on the other 20 ids"))
                ],
            )
            + "\n\nTrained on the 25 ids, the embedding gathers each product's crops (mAP@R up sharply); on ids it "
            "never saw it ranks worse than the untrained backbone: it specialises to the products it was taught."
        )
    settings = {
        "rooms": "held-out fifth (727 of 3,633, stratified, seed 0); kNN k=10 cosine distance-weighted; logistic "
        "regression C=1; model, resolution, loss and options as each row says",
        "products": "held-out fifth as queries, 25 ids; EfficientNet-Lite0 at 224 px",
    }
    measured = "--report" not in sys.argv  # --report only rewrites the text from bench/results/train.json
    write_section("train", "## Learned embeddings (`lookalike train`)\n\n" + "\n\n".join(parts), settings,
                  measured=measured)  # fmt: skip


def main() -> None:
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if "--readout" in sys.argv:
        readout(results, sys.argv[sys.argv.index("--readout") + 1 :])
    elif "--report" not in sys.argv:
        if "--finetune" in sys.argv:
            rooms(results, finetune=sys.argv[sys.argv.index("--finetune") + 1 :])
        else:
            rooms(results, finetune=None)
            products(results)
        _save(results)
    report(results)


if __name__ == "__main__":
    main()
