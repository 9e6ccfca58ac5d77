"""Index, inspect and describe: index, info, models, demo, map, vocab fit, plot vlad."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from lookalike.cli.common import (
    IndexOpt,
    JsonOpt,
    QuietOpt,
    app,
    err,
    human_bytes,
    open_index,
    out,
    plot_app,
    print_json,
    print_report,
    shown,
)
from lookalike.errors import LookalikeError


def pooling_spec(pooling: str | None, clusters: int | None = None, soft: bool = False) -> str | dict | None:
    """``--pooling``, ``--clusters`` and ``--soft`` -> a pooling setting: the last two make sense (and imply) VLAD."""
    if clusters is None and not soft:
        return pooling
    if pooling not in (None, "vlad"):
        raise LookalikeError(f"--clusters and --soft are VLAD options; they do not apply to --pooling {pooling}")
    return {"name": "vlad", "clusters": 32 if clusters is None else clusters, "soft": soft}


FeaturesOpt = Annotated[
    bool | None,
    typer.Option(
        "--features/--no-features",
        help="Also make each photo's local features (for cluster --verify, pairs, rerank) from the same read and "
        "decode: one pass instead of index, then features. Stored with the index (the vectors are made from "
        "that decode); default: as the index has it (off for a new one).",
    ),
]
PrecisionOpt = Annotated[
    str | None,
    typer.Option(
        help="Backbone arithmetic of a new index: int8 (quantized; the default on CPUs with VNNI, where it is "
        "about twice as fast) or fp32 (the default elsewhere, where int8 saturates)."
    ),
]


@app.command()
def index(
    photos: Annotated[Path, typer.Argument(help="Folder of photos (searched recursively).")],
    index_dir: Annotated[Path | None, typer.Option("--index", "-i", help="Index folder [PHOTOS/.lookalike].")] = None,
    labels: Annotated[
        str,
        typer.Option(help="folders: the first folder under PHOTOS is the class (nested folders belong to it); none."),
    ] = "folders",
    model: Annotated[str | None, typer.Option(help="Backbone name, or a folder from `lookalike train`.")] = None,
    pooling: Annotated[str | None, typer.Option(help="Pooling of dense features: mean, gem, vlad.")] = None,
    resolution: Annotated[int | None, typer.Option(help="Input size in pixels (long side).")] = None,
    clusters: Annotated[int | None, typer.Option(help="VLAD: vocabulary size [32].")] = None,
    soft: Annotated[bool, typer.Option("--soft", help="VLAD: soft assignment (else hard).")] = False,
    pca: Annotated[int | None, typer.Option(help="PCA-whiten vectors to this size (fitted on the index).")] = None,
    vocab: Annotated[Path | None, typer.Option(help="VLAD: reuse a saved vocabulary (from `vocab fit --out`).")] = None,
    weights: Annotated[Path | None, typer.Option(help="Checkpoint file for hub models (dinov2-*).")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per model call.")] = 8,
    workers: Annotated[int | None, typer.Option(help="Decoding threads.")] = None,
    rebuild: Annotated[bool, typer.Option(help="Re-embed everything (e.g. to change model).")] = False,
    engine: Annotated[
        str, typer.Option(help="local, or ray: decode + embed on Ray (pip install lookalike[ray]).")
    ] = "local",
    address: Annotated[
        str | None, typer.Option(help="Ray cluster to join (auto, ray://host:10001); default: start a local Ray.")
    ] = None,
    num_workers: Annotated[int | None, typer.Option(help="Ray: describing actors (default: one per CPU).")] = None,
    ann: Annotated[
        str | None, typer.Option(help="Search index: auto (exact until 100k images, then IVF), flat, ivf, hnsw.")
    ] = None,
    vectors: Annotated[
        str | None, typer.Option(help="Vector storage: float32 (default) or float16 (half size).")
    ] = None,
    checkpoint_every: Annotated[
        int, typer.Option(help="Save progress every N images (a killed run resumes from the last save).")
    ] = 256,
    precision: PrecisionOpt = None,
    calibration: Annotated[
        str,
        typer.Option(
            help="int8 calibrated on: samples (the bundled photos, cached; default) or photos (these, +10-15 s)."
        ),
    ] = "samples",
    features: FeaturesOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Index a folder of photos, or bring its index up to date (only new and changed files are embedded)."""
    from lookalike.index import Index

    idx = Index.build(
        photos,
        index_dir,
        labels=labels,
        model=model,
        pooling=pooling_spec(pooling, clusters, soft),
        resolution=resolution,
        batch_size=batch_size,
        workers=workers,
        progress=not quiet,
        rebuild=rebuild,
        pca=pca,
        vocab=vocab,
        weights=weights,
        engine=engine,
        address=address,
        num_workers=num_workers,
        ann=ann,
        vectors=vectors,
        checkpoint_every=checkpoint_every,
        precision=precision,
        calibration=calibration,
        features=features,
    )
    print_report(idx.report, quiet)
    err.print(f"index: {idx.folder}")


def _describe_head(head: dict[str, Any] | None) -> str:
    if not head:
        return "none fitted (kNN vote; `lookalike fit` stores one)"
    if "error" in head:
        return head["error"]
    state = "[yellow]stale: run `lookalike fit` again[/]" if head.get("stale") else "current"
    acc = (head.get("metrics") or {}).get("val_accuracy")
    acc_text = f", held-out accuracy {acc:.3f}" if isinstance(acc, (int, float)) else ""
    return f"{head.get('method')} on {head.get('n_train')} images{acc_text}, {state}"


@app.command()
def info(index: IndexOpt = Path(".lookalike"), as_json: JsonOpt = False) -> None:
    """What an index holds: images, model, pooling, vector size, labels, skipped files, disk size."""
    from lookalike.search import describe_ann

    data = open_index(index).info()
    if as_json:
        print_json(data)
        return
    t = Table(show_header=False, box=None)
    pooling = data["pooling"]
    pooling_text = ", ".join(f"{k}={v}" for k, v in pooling.items()) if isinstance(pooling, dict) else str(pooling)
    for key, value in [
        ("index", data["index"]),
        ("photos", data["root"]),
        ("images", data["images"]),
        ("model", data["model"]),
        ("pooling", pooling_text),
        ("resolution", data["resolution"]),
        ("vector size", data["dim"]),
        ("PCA-whitening", f"to {data['post']['out']} dims" if data.get("post") else "no"),
        ("labels", ", ".join(f"{k} {v}" for k, v in data["labels"].items()) or "none"),
        ("GPS-tagged", data["gps_tagged"]),
        ("disk size", human_bytes(data["disk_bytes"])),
        ("updated", data["updated"]),
        ("skipped", len(data["skipped"])),
        ("vectors", data.get("vectors", "float32")),
        (
            "precision",
            data.get("precision", "fp32")
            + (f", calibrated on {data['calibration']}" if data.get("calibration") else ""),
        ),
        ("search", describe_ann(data.get("search"))),
        ("classifier", _describe_head(data.get("classifier"))),
    ]:
        t.add_row(f"[bold]{key}[/]", str(value))
    out.print(t)
    for s in data["skipped"]:
        out.print(f"  [yellow]skipped[/] {shown(s['path'])}: {escape(s['reason'])}", highlight=False)
    if data.get("ignored"):
        out.print("  ignored (not images): " + ", ".join(f"{n} {shown(e)}" for e, n in data["ignored"].items()))
    for s in data.get("left_out", []):
        out.print(f"  left out {shown(s['path'])}/: {s['reason']}", highlight=False)
    if data["interrupted_parts"]:
        out.print(
            f"[yellow]an interrupted run left {data['interrupted_parts']} checkpoint(s); run `lookalike index` to finish[/]"
        )


@app.command()
def models() -> None:
    """List the backbones lookalike can use."""
    from lookalike.models import available_models

    for name, desc in sorted(available_models().items()):
        out.print(f"[bold]{name}[/]  {desc}")


@app.command()
def demo(
    photos: Annotated[Path | None, typer.Argument(help="Your own photo folder (default: generated samples).")] = None,
    work: Annotated[Path, typer.Option(help="Where samples, index and pictures go.")] = Path("out/demo"),
    k: Annotated[int, typer.Option("-k")] = 5,
    quiet: QuietOpt = False,
) -> None:
    """The main job end to end: index sample photos (or yours), search with a query, draw the result grid."""
    from lookalike.samples import run_demo

    demo_run = run_demo(photos, work, k=k, progress=not quiet)
    if photos is None:
        err.print(
            f"sample photos: {demo_run.photos} ({len(demo_run.index)} images made from photos shipped by dependencies)"
        )
    print_report(demo_run.index.report, quiet)
    for r in demo_run.results:
        out.print(f"[bold]{r.query}[/]")
        for m in r.matches:
            out.print(f"  #{m.rank} {m.score:.3f} {m.label or '':12} {shown(m.name)}")
    err.print(f"grid: {demo_run.grid}")


@app.command("map")
def map_cmd(
    index: IndexOpt = Path(".lookalike"),
    method: Annotated[
        str, typer.Option(help="umap (default), tsne (slow above ~20k images) or pca (instant).")
    ] = "umap",
    color: Annotated[
        str, typer.Option(help="What the page colours points by first: label, cluster, folder, time.")
    ] = "label",
    seed: Annotated[int, typer.Option(help="Random seed of the layout.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Recompute even if the stored map is current.")] = False,
    suspects: Annotated[
        bool | None, typer.Option("--suspects/--no-suspects", help="Store likely mislabelled images [auto].")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Lay out every image in 2-D (a map of the collection) and store it in the index folder for the Map tab."""
    from lookalike.explore import compute_map

    idx = open_index(index)
    with err.status(f"laying out {len(idx):,} images ({method}) ..."):
        result = compute_map(idx, method, color=color, seed=seed, suspects=suspects, force=force)
    summary = {"method": result.method, "images": len(result.xy), "suspects": len(result.suspects), **result.info}
    if as_json:
        print_json(summary)
    else:
        err.print(
            f"map: {len(result.xy):,} images by {result.method} in {result.info.get('seconds')}s, "
            f"{len(result.suspects)} suspect labels; open it with `lookalike serve --index {idx.folder}` (Map tab)"
        )


vocab_app = typer.Typer(no_args_is_help=True, help="VLAD vocabularies: fit one on an index's own images.")
app.add_typer(vocab_app, name="vocab")


@vocab_app.command("fit")
def vocab_fit(
    index: IndexOpt = Path(".lookalike"),
    clusters: Annotated[int, typer.Option(help="Vocabulary size.")] = 32,
    soft: Annotated[bool, typer.Option("--soft", help="Soft assignment (else hard).")] = False,
    out_file: Annotated[Path | None, typer.Option("--out", help="Also save the vocabulary here (for --vocab).")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Fit VLAD centres on the index's own images, then re-describe every image with them."""
    idx = open_index(index).refit_vocabulary(clusters, soft=soft, out=out_file, progress=not quiet)
    print_report(idx.report, quiet)
    err.print(f"vocabulary: {clusters} clusters, {idx.dim}-dim vectors; index: {idx.folder}")
    if out_file:
        err.print(f"saved vocabulary: {out_file}")


@plot_app.command("vlad")
def plot_vlad(
    image: Annotated[Path, typer.Argument(help="Image to map.")],
    index: IndexOpt = Path(".lookalike"),
    out_file: Annotated[Path, typer.Option("--out", "-o", help="PNG to write.")] = Path("vlad-map.png"),
) -> None:
    """Colour each patch of IMAGE by the VLAD cluster it is assigned to (legend: cluster colours)."""
    from lookalike.plots import vlad_map

    err.print(f"map: {vlad_map(open_index(index), image, out_file)}")
