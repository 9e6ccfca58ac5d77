"""Packed scenes (issue 7): the shelf photo's clusters and overlay, and how well crops cluster into products.

1. ``../shared/data/shelf/shelf.jpeg`` with its 63 detected boxes: ``run_scene`` with the defaults (GeM over
   EfficientNet-Lite0 at 224 px, HDBSCAN min size 3 + second pass, gap 0.5); the overlay is saved reduced to
   ``docs/scene_overlay.png`` (< 1 MB) for the README, with the number of clusters found and the wall time.
2. ``../shared/data/products`` (3,792 crops of 25 product ids): ``hdbscan_labels`` on the crops' vectors, scored
   against the ids with ARI (noise counted as one more group, which penalises it), ARI over the clustered crops only,
   and NMI, for several minimum sizes, with and without the second pass. The default backbone's vectors come from the
   shared benchmark index of products (same describer as ``lookalike scene``).
3. When ``lookalike train`` has left a model trained on products in ``/tmp/lookalike-cache/models/products-heldout``,
   the same on its vectors, over all crops and over the ids it did not see in training (if it records them), beside
   the default backbone on the same crops.

Run: ``flock /tmp/lookalike-bench.lock .venv/bin/python -m bench.scenes``.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import numpy as np
from PIL import Image
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from bench.common import CACHE, dataset, shared_index
from bench.report import ROOT, index_settings, markdown_table, write_section

TRAINED = CACHE / "models" / "products-heldout"
DOCS_OVERLAY = ROOT / "docs" / "scene_overlay.png"
SETTINGS = [(3, True), (5, True), (10, True), (5, False)]


def _scene_table(scene: Any) -> str:
    numbers = {b.id: b.number for b in scene.boxes}
    rows = [
        [f"cluster {c.id + 1}", len(c.boxes), len(c.regions), " ".join(str(numbers[i]) for i in c.boxes)]
        for c in scene.clusters
    ]
    if scene.noise:
        rows.append(["noise", len(scene.noise), "", " ".join(str(numbers[i]) for i in scene.noise)])
    return markdown_table(["cluster", "boxes", "regions", "box numbers (as on the overlay)"], rows)


def shelf() -> str:
    from lookalike.images import load_image
    from lookalike.scenes import draw_scene, run_scene

    folder = dataset("shelf")
    texts = []
    models: list[tuple[str, str | None]] = [("default backbone (efficientnet-lite0, GeM)", None)]
    if (TRAINED / "complete").is_file():
        ids = {d.name for d in dataset("products").iterdir() if d.is_dir()}
        held = held_out_ids(ids) or []
        models.append(
            (f"trained model `{TRAINED.name}` ({len(held)} of {len(ids)} product ids held out)", str(TRAINED))
        )
    for title, model in models:
        t0 = time.perf_counter()
        scene = run_scene(folder / "shelf.jpeg", folder / "shelf.json", model=model)
        seconds = time.perf_counter() - t0
        extra = ""
        if model is None:
            DOCS_OVERLAY.parent.mkdir(parents=True, exist_ok=True)
            draw_scene(scene, load_image(folder / "shelf.jpeg"), DOCS_OVERLAY, max_side=1000)
            if DOCS_OVERLAY.stat().st_size > 950_000:  # a photo in PNG is big; a 256-colour palette keeps it readable
                with Image.open(DOCS_OVERLAY) as img:
                    img.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(DOCS_OVERLAY, optimize=True)
            extra = f" Overlay: `docs/scene_overlay.png` ({DOCS_OVERLAY.stat().st_size / 1024:.0f} KB)."
        texts.append(
            f"**Shelf photo, {title}** (`shelf/shelf.jpeg`, {scene.width}×{scene.height} px, {len(scene.boxes)} "
            f"boxes, min size {scene.settings['min_size']}, gap {scene.settings['gap']}): "
            f"**{len(scene.clusters)} clusters**, {sum(len(c.regions) for c in scene.clusters)} regions, "
            f"{len(scene.noise)} noise boxes, {len(scene.skipped)} skipped; {seconds:.1f} s wall for the whole run "
            f"(model load, decode, crop, embed, cluster, regions, overlay).{extra}\n\n" + _scene_table(scene)
        )
    return "\n\n".join(texts)


def scores(vectors: np.ndarray, truth: np.ndarray, min_size: int, second: bool) -> dict[str, float]:
    from lookalike.cluster import hdbscan_labels

    t0 = time.perf_counter()
    labels = hdbscan_labels(vectors, min_size, second_pass=second)
    seconds = time.perf_counter() - t0
    clustered = labels >= 0
    return {
        "clusters": int(labels.max() + 1),
        "noise": float(1 - clustered.mean()),
        "ari": adjusted_rand_score(truth, labels),
        "ari_clustered": adjusted_rand_score(truth[clustered], labels[clustered]) if clustered.sum() > 1 else 0.0,
        "nmi": normalized_mutual_info_score(truth, labels),
        "seconds": seconds,
    }


def default_vectors() -> tuple[np.ndarray, np.ndarray, list[str], dict[str, Any]]:
    index = shared_index("products")
    cfg = index.describer.config()
    if cfg["pooling"]["name"] != "gem" or cfg["resolution"] != 224:
        index = shared_index("products", pooling="gem", resolution=224)
        cfg = index.describer.config()
    return np.asarray(index.vectors, np.float32), np.array(index.labels), list(index.names), cfg


def trained_vectors(names: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """The trained model's vectors of the same files, in the same order; cached by the model's weights."""
    from lookalike.scenes import scene_describer

    describer = scene_describer(str(TRAINED))
    cfg = describer.config()
    key = hashlib.blake2b(json.dumps(cfg, sort_keys=True, default=str).encode(), digest_size=8).hexdigest()
    cache = CACHE / f"scenes-products-trained-{key}.npy"
    if cache.is_file():
        return np.load(cache), cfg
    root = dataset("products")
    out = []
    for batch in describer.describe_files([root / n for n in names]):
        if len(batch.described) != len(batch.items):
            raise SystemExit("a products crop failed to decode; cannot align vectors")
        out.append(batch.vectors)
    vectors = np.concatenate(out)
    np.save(cache, vectors)
    return vectors, cfg


def held_out_ids(all_ids: set[str]) -> list[str] | None:
    """Ids the trained model never saw: the products ids missing from its model card's classes."""
    try:
        card = json.loads((TRAINED / "model.json").read_text())
        seen = {str(c["name"]) for c in card["classes"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    held = sorted(all_ids - seen)
    return held or None


def table(results: list[tuple[str, str, int, bool, dict[str, float]]]) -> str:
    rows = [
        [
            model,
            crops,
            min_size,
            "yes" if second else "no",
            r["clusters"],
            f"{100 * r['noise']:.1f} %",
            f"{r['ari']:.3f}",
            f"{r['ari_clustered']:.3f}",
            f"{r['nmi']:.3f}",
            f"{r['seconds']:.1f}",
        ]
        for model, crops, min_size, second, r in results
    ]
    return markdown_table(
        ["model", "crops", "min size", "2nd pass", "clusters", "noise", "ARI", "ARI (clustered)", "NMI", "s"], rows
    )


def main() -> None:
    shelf_text = shelf()
    vectors, truth, names, cfg = default_vectors()
    n_ids = len(set(truth.tolist()))
    results = [("default", f"all {len(truth)}", m, s, scores(vectors, truth, m, s)) for m, s in SETTINGS]
    trained_text = (
        f"**Trained model:** pending: no model in `{TRAINED}` when this ran (the embedding-learning issue's "
        "`lookalike train` writes it there)."
    )
    if (TRAINED / "complete").is_file():
        tv, tcfg = trained_vectors(names)
        held = held_out_ids(set(truth.tolist()))
        results += [("trained", f"all {len(truth)}", m, s, scores(tv, truth, m, s)) for m, s in SETTINGS[:2]]
        if held:
            mask = np.isin(truth, held)
            sub = f"held-out {mask.sum()} ({len(held)} ids)"
            for m, s in SETTINGS[:2]:
                results.append(("default", sub, m, s, scores(vectors[mask], truth[mask], m, s)))
                results.append(("trained", sub, m, s, scores(tv[mask], truth[mask], m, s)))
        trained_text = (
            f"**Trained model:** `{TRAINED}` (`lookalike train` on products, {n_ids - len(held or [])} ids; "
            f"pooling {tcfg['pooling']['name']}). "
            + (
                f"Held-out ids (never seen in training): {', '.join(sorted(held))}. Its rows over all crops include "
                "the ids it was trained on, which flatters it; the held-out rows compare the two models fairly."
                if held
                else "Its folder does not say which ids it held out, so only all crops are scored; ids seen in "
                "training flatter it."
            )
        )
    body = (
        shelf_text
        + "\n\n"
        + f"**Crop clustering on `products/`** ({len(truth)} crops, {n_ids} product ids, 6–200 crops each; one id, "
        "MrlIsXerE3D, mixes several products by the data set's own account, which caps any score). Default model: "
        f"{cfg['model']['name']}, pooling {cfg['pooling']['name']}, {cfg['resolution']} px. ARI counts noise as one "
        "more group; *ARI (clustered)* scores only the crops that got a cluster; *noise* is the share left out. "
        "`s` is the clustering time alone.\n\n" + table(results) + "\n\n" + trained_text
    )
    settings = {
        **index_settings(cfg),
        "data": f"shelf/shelf.jpeg; products ({len(truth)} crops)",
        "HDBSCAN (min size, second pass)": ", ".join(f"{m} {'yes' if s else 'no'}" for m, s in SETTINGS),
    }
    write_section("scenes", body, settings)
    print(body)


if __name__ == "__main__":
    main()
