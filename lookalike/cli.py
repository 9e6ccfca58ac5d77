"""The ``lookalike`` command. Each command parses flags, calls the library, and prints; no logic lives here."""

from __future__ import annotations

import contextlib
import copy
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lookalike.errors import LookalikeError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Find, classify and group similar images.",
)
out = Console()
err = Console(stderr=True)
plot_app = typer.Typer(no_args_is_help=True, help="Draw pictures: t-SNE of an index, VLAD assignment maps, ...")
app.add_typer(plot_app, name="plot")

IndexOpt = Annotated[
    Path, typer.Option("--index", "-i", help="Index folder (default: .lookalike here, or PHOTOS_DIR/.lookalike).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _print_json(obj: Any) -> None:
    """One JSON document per line, valid UTF-8 whatever the file names (undecodable bytes show as U+FFFD)."""
    from lookalike.io import shown_json

    sys.stdout.write(json.dumps(shown_json(obj), ensure_ascii=False, default=str) + "\n")


def _shown(name: Any) -> str:
    """A path or name for the terminal: readable, with U+FFFD for bytes that are not UTF-8, and no rich markup."""
    from lookalike.io import shown

    return escape(shown(str(name)))


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def pooling_spec(pooling: str | None, clusters: int | None = None, soft: bool = False) -> str | dict | None:
    """``--pooling``, ``--clusters`` and ``--soft`` -> a pooling setting: the last two make sense (and imply) VLAD."""
    if clusters is None and not soft:
        return pooling
    if pooling not in (None, "vlad"):
        raise LookalikeError(f"--clusters and --soft are VLAD options; they do not apply to --pooling {pooling}")
    return {"name": "vlad", "clusters": 32 if clusters is None else clusters, "soft": soft}


def _open_index(index: Path):
    from lookalike.index import Index

    return Index.open(index)


def _print_report(report, quiet: bool) -> None:
    r = report
    if r.calibration:
        err.print(escape(r.calibration))
    err.print(
        f"[bold green]indexed[/] {r.total} image files in {r.seconds:.1f}s: {r.added} added, {r.updated} updated, "
        f"{r.unchanged} unchanged"
        + (f", {r.resumed} resumed from an interrupted run" if r.resumed else "")
        + (f", [yellow]{len(r.skipped)} skipped[/]" if r.skipped else "")
        + f"; {r.removed} removed",
        highlight=False,
    )
    for path, reason in r.skipped[:20]:
        err.print(f"  [yellow]skipped[/] {_shown(path)}: {escape(reason)}", highlight=False)
    if len(r.skipped) > 20:
        err.print(f"  … and {len(r.skipped) - 20} more (see `lookalike info`)")
    if r.ignored:
        err.print("  ignored (not images): " + ", ".join(f"{n} {_shown(ext)}" for ext, n in r.ignored.items()))
    for path, why in r.left_out:
        err.print(f"  left out {_shown(path)}/: {why}", highlight=False)


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
    precision: Annotated[
        str | None,
        typer.Option(help="Backbone arithmetic of a new index: int8 (default; quantized, twice as fast) or fp32."),
    ] = None,
    calibration: Annotated[
        str,
        typer.Option(
            help="int8 calibrated on: samples (the bundled photos, cached; default) or photos (these, +10-15 s)."
        ),
    ] = "samples",
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
    )
    _print_report(idx.report, quiet)
    err.print(f"index: {idx.store.path}")


@app.command()
def search(
    queries: Annotated[list[Path], typer.Argument(help="Query image(s).")],
    index: IndexOpt = Path(".lookalike"),
    k: Annotated[int, typer.Option("-k", "--k", help="Matches per query.")] = 5,
    same_class: Annotated[bool, typer.Option("--same-class", help="Only the query's class.")] = False,
    other_classes: Annotated[bool, typer.Option("--other-classes", help="Only the other classes.")] = False,
    label: Annotated[
        str | None, typer.Option("--class", help="The query's class (else label, folder, prediction).")
    ] = None,
    after: Annotated[str | None, typer.Option(help="Only photos taken on or after this date (EXIF time).")] = None,
    before: Annotated[str | None, typer.Option(help="Only photos taken on or before this date.")] = None,
    near: Annotated[
        str | None, typer.Option(help="Only photos within RADIUS km of a point (EXIF GPS): LAT,LON,RADIUS_KM.")
    ] = None,
    path: Annotated[
        str | None, typer.Option(help="Only paths (relative to the photo folder) matching a glob: 'site-a/**'.")
    ] = None,
    with_label: Annotated[str | None, typer.Option("--label", help="Only images with this label.")] = None,
    min_score: Annotated[float | None, typer.Option(help="Leave out matches scoring below this cosine.")] = None,
    as_json: JsonOpt = False,
    grid: Annotated[Path | None, typer.Option(help="Write a PNG of the queries and their matches.")] = None,
    rerank: Annotated[
        bool, typer.Option("--rerank", help="Re-order the top results by geometric verification (local features).")
    ] = False,
    rerank_depth: Annotated[int, typer.Option(help="--rerank: how many of the top results are verified.")] = 100,
    min_inliers: Annotated[int, typer.Option(help="--rerank: inliers a result needs to count as verified.")] = 15,
) -> None:
    """The k indexed images most similar to each query, best first; the filters act inside the search."""
    from lookalike.filters import SearchFilter

    if same_class and other_classes:
        raise LookalikeError("--same-class and --other-classes exclude each other")
    mode = "same-class" if same_class else "other-classes" if other_classes else "all"
    where = SearchFilter.parse(after=after, before=before, near=near, path=path, label=with_label, min_score=min_score)
    idx = _open_index(index)
    verify = None
    if rerank:
        from lookalike.index import RERANK_KEYPOINTS
        from lookalike.verify import MatchConf

        verify = MatchConf(min_inliers=min_inliers, keypoints=RERANK_KEYPOINTS)
        missing = len(idx.features.missing())
        if missing:  # the first re-ranked search computes what it needs; say why it is slow
            err.print(f"{missing} indexed image(s) have no local features yet; `lookalike features` computes them all")
    results = idx.search_many(
        [str(q) for q in queries],
        k,
        mode=mode,
        label=label,
        where=where or None,
        rerank=rerank_depth if rerank else 0,
        verify=verify,
    )
    if as_json:
        for r in results:
            _print_json(r.to_dict())
    else:
        for r in results:
            title = _shown(r.query) + (f"  [{r.mode}: {r.query_class} ({r.class_source})]" if r.query_class else "")
            table = Table(title=title, title_justify="left")
            table.add_column("#", justify="right")
            table.add_column("score", justify="right")
            if rerank:
                table.add_column("inliers", justify="right")
            table.add_column("label")
            table.add_column("path")
            for m in r.matches:
                extra = [("–" if m.inliers is None else str(m.inliers))] if rerank else []
                table.add_row(str(m.rank), f"{m.score:.4f}", *extra, escape(m.label or ""), _shown(m.name))
            out.print(table)
            if r.note:
                err.print(f"[yellow]{escape(r.note)}[/]", soft_wrap=True)
    if grid:
        from lookalike.plots import result_grid

        err.print(f"grid: {result_grid(results, grid)}")


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

    data = _open_index(index).info()
    if as_json:
        _print_json(data)
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
        ("disk size", _human_bytes(data["disk_bytes"])),
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
        out.print(f"  [yellow]skipped[/] {_shown(s['path'])}: {escape(s['reason'])}", highlight=False)
    if data.get("ignored"):
        out.print("  ignored (not images): " + ", ".join(f"{n} {_shown(e)}" for e, n in data["ignored"].items()))
    for s in data.get("left_out", []):
        out.print(f"  left out {_shown(s['path'])}/: {s['reason']}", highlight=False)
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
    _print_report(demo_run.index.report, quiet)
    for r in demo_run.results:
        out.print(f"[bold]{r.query}[/]")
        for m in r.matches:
            out.print(f"  #{m.rank} {m.score:.3f} {m.label or '':12} {_shown(m.name)}")
    err.print(f"grid: {demo_run.grid}")


# --- server ---


@app.command()
def serve(
    index: IndexOpt = Path(".lookalike"),
    host: Annotated[
        str, typer.Option(help="Address to bind; 0.0.0.0 exposes the server to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    max_upload_mb: Annotated[float, typer.Option(help="Largest accepted upload, in MB.")] = 20,
    workers: Annotated[int | None, typer.Option(help="Searches run at once (default: CPU cores).")] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="LOOKALIKE_TOKEN",
            show_envvar=True,
            help="Secret every API call needs (Bearer header, or typed once on the page); required off loopback.",
        ),
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Serve a non-loopback --host without a token (anyone on the network).")
    ] = False,
    cors_origin: Annotated[
        list[str] | None, typer.Option(help="Allow browser pages from this origin to call the API (repeatable).")
    ] = None,
) -> None:
    """Serve the web page and JSON API (OpenAPI docs at /docs) over an index."""
    from lookalike.server.app import serve as run_server

    err.print(f"loading the index at {index} and its model …")
    run_server(
        index,
        host=host,
        port=port,
        max_upload_mb=max_upload_mb,
        workers=workers,
        token=token,
        insecure=insecure,
        cors_origins=cors_origin or (),
    )


# --- packed scenes ---


@app.command()
def scene(
    image: Annotated[Path, typer.Argument(help="Photo of a packed shelf (or any scene with many objects).")],
    detections: Annotated[
        Path,
        typer.Option("--detections", "-d", help="JSON boxes: {id: {x1, y1, x2, y2}} or a list of \\[x1, y1, x2, y2]."),
    ],
    fmt: Annotated[
        str, typer.Option("--format", help="auto | dict | xyxy | coco (\\[x, y, w, h]; auto reads 4-lists as corners).")
    ] = "auto",
    model: Annotated[str | None, typer.Option(help="Backbone name, or a folder from `lookalike train`.")] = None,
    resolution: Annotated[int | None, typer.Option(help="Crop input size in pixels (default: the model's).")] = None,
    min_size: Annotated[int, typer.Option(help="HDBSCAN minimum cluster size (then a second pass with 2).")] = 3,
    gap: Annotated[
        float, typer.Option(help="Closing element as a fraction of the median box size: gaps narrower than it join.")
    ] = 0.5,
    out_png: Annotated[Path | None, typer.Option("--out", "-o", help="Overlay PNG [./<image name>-scene.png].")] = None,
    max_side: Annotated[int, typer.Option(help="Long side of the overlay in pixels (plus the legend).")] = 1600,
    as_json: JsonOpt = False,
) -> None:
    """Cluster the detected objects on a photo by appearance and draw where each product congregates."""
    from lookalike.scenes import run_scene

    result = run_scene(
        image,
        detections,
        fmt=fmt,
        model=model,
        resolution=resolution,
        min_size=min_size,
        gap=gap,
        out=out_png or Path(f"{image.stem}-scene.png"),
        max_side=max_side,
    )
    for s in result.skipped:
        err.print(f"[yellow]skipped box[/] {s['id']}: {s['reason']}", highlight=False)
    for a in result.adjusted:
        err.print(f"[yellow]adjusted box[/] {a['id']}: {a['note']}", highlight=False)
    for note in result.notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False)
    if as_json:
        _print_json(result.to_dict())
    else:
        table = Table(title=f"{image.name}: {len(result.clusters)} clusters of {len(result.boxes)} boxes")
        table.add_column("cluster", justify="right")
        table.add_column("boxes", justify="right")
        table.add_column("regions", justify="right")
        table.add_column("box numbers")
        numbers = {b.id: b.number for b in result.boxes}
        for c in result.clusters:
            table.add_row(
                str(c.id + 1), str(len(c.boxes)), str(len(c.regions)), " ".join(str(numbers[i]) for i in c.boxes)
            )
        if result.noise:
            table.add_row("noise", str(len(result.noise)), "", " ".join(str(numbers[i]) for i in result.noise))
        out.print(table)
    err.print(f"overlay: {result.overlay}")


# --- train ---


@app.command("train")
def train_cmd(
    data: Annotated[Path, typer.Argument(help="Labelled folder: DATA/<class>/<image>.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Model folder to write.")],
    loss: Annotated[str, typer.Option(help="normsoftmax, triplet or arcface.")] = "normsoftmax",
    scale: Annotated[
        float | None, typer.Option(help="λ: softmax scale (temperature 1/λ) [normsoftmax 20, arcface 30].")
    ] = None,
    margin: Annotated[float | None, typer.Option(help="Triplet margin [0.2]; ArcFace, degrees [28.6].")] = None,
    miner: Annotated[str, typer.Option(help="Triplet miner: semihard or hard (batch-hard).")] = "semihard",
    unfreeze: Annotated[int, typer.Option(help="Backbone blocks to fine-tune (0: head only).")] = 0,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs [40]; early stopping may end sooner.")] = None,
    val_split: Annotated[float, typer.Option(help="Fraction of each class held out for validation.")] = 0.15,
    resolution: Annotated[int | None, typer.Option(help="Input size in pixels [model default].")] = None,
    model: Annotated[str, typer.Option(help="Base backbone.")] = "efficientnet-lite0",
    dim: Annotated[int, typer.Option(help="Embedding size.")] = 128,
    head: Annotated[str, typer.Option(help="Projection head: mlp or linear.")] = "mlp",
    batch_size: Annotated[int, typer.Option(help="Images per training step.")] = 64,
    lr: Annotated[float | None, typer.Option(help="Learning rate [1e-3 head only, 3e-4 fine-tuning].")] = None,
    patience: Annotated[int, typer.Option(help="Stop after this many epochs without a better validation.")] = 5,
    seed: Annotated[int, typer.Option(help="Random seed (split, sampling, initialisation).")] = 0,
    crop: Annotated[
        float, typer.Option(help="Fine-tuning: smallest fraction of a side kept by the random crop each step (1: off).")
    ] = 0.75,
    schedule: Annotated[
        str, typer.Option(help="Learning rate over the epochs: constant, or cosine (decays to 1/100 by --epochs).")
    ] = "constant",
    members: Annotated[
        int,
        typer.Option(help="Train N models (seeds seed..seed+N-1) used as one: N× the training, more accurate."),
    ] = 1,
    drop_suspects: Annotated[
        float,
        typer.Option(
            help="Leave out images whose folder label a probe fitted on the other images gives less than this "
            "probability (0: keep all; 0.1 catches mostly wrong labels)."
        ),
    ] = 0.0,
    resume: Annotated[
        bool | None, typer.Option("--resume/--restart", help="Require resuming / discard an unfinished run [auto].")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a finished model in --out.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Learn an embedding from labelled folders; use it with `lookalike index PHOTOS --model OUT`."""
    from lookalike.training import TrainOptions, train

    options = TrainOptions(
        loss=loss, scale=scale, margin=margin, miner=miner, unfreeze=unfreeze, epochs=epochs, val_split=val_split,
        resolution=resolution, model=model, dim=dim, head=head, batch_size=batch_size, lr=lr, patience=patience,
        seed=seed, crop=crop, schedule=schedule, members=members, drop_suspects=drop_suspects,
    )  # fmt: skip
    result = train(
        data, out_dir, options, overwrite=overwrite, resume=resume, progress=not quiet,
        log=None if quiet else (lambda line: err.print(line, highlight=False)),
    )  # fmt: skip
    for path, reason in result.skipped[:20]:
        err.print(f"  [yellow]skipped[/] {_shown(path)}: {escape(reason)}", highlight=False)
    if len(result.skipped) > 20:
        err.print(f"  … and {len(result.skipped) - 20} more (listed in model.json)")
    if result.dropped_classes:
        err.print(f"[yellow]classes with one image left out[/]: {', '.join(result.dropped_classes)}")
    for r in result.members or [result]:
        b, a = r.metrics["before"], r.metrics["after"]
        who = f"member {r.out.name}: " if result.members else ""
        err.print(
            f"[bold green]trained[/] {who}{len(r.classes)} classes, {r.n_train} train / {r.n_val} validation "
            f"images, {r.epochs_run} epochs (best {r.best_epoch}); validation "
            f"precision@1 {b['precision_at_1']:.3f} → {a['precision_at_1']:.3f}, mAP@R {b['map_at_r']:.3f} → "
            f"{a['map_at_r']:.3f}",
            highlight=False,
        )
    leaks = result.leaks or (result.members[0].leaks if result.members else [])
    if leaks:
        err.print(
            f"[yellow]warning: {len(leaks)} validation images are copies of training images[/] (first: "
            f"{_shown(leaks[0]['held_out'])} ~ {_shown(leaks[0]['train'])}); validation figures are optimistic "
            "(all pairs in model.json, held_out_leaks)",
            highlight=False,
        )
    err.print(f"in {result.seconds:.0f}s" + (f", {len(result.members)} members used as one" if result.members else ""))
    err.print(f"model: {result.out} (use: lookalike index PHOTOS --model {result.out})")


# --- cluster ---


@app.command()
def pairs(
    index: IndexOpt = Path(".lookalike"),
    num_matched: Annotated[int, typer.Option("--num-matched", "-n", help="Neighbours per image.")] = 10,
    min_score: Annotated[float | None, typer.Option(help="Drop pairs with a lower cosine similarity.")] = None,
    verify: Annotated[
        bool, typer.Option("--verify", help="Keep only pairs whose local features agree geometrically.")
    ] = False,
    min_inliers: Annotated[int, typer.Option(help="--verify: inliers a pair needs to be kept.")] = 15,
    workers: Annotated[int | None, typer.Option(help="--verify: threads matching pairs [cores, at most 4].")] = None,
    quiet: QuietOpt = False,
) -> None:
    """hloc-style retrieval pairs: "name1 name2 score" per line, each unordered pair once (names relative to the
    photo folder); with --verify "name1 name2 score inliers", verified pairs only."""
    idx = _open_index(index)
    if not verify:
        lines = [f"{a} {b} {s:.4f}\n" for a, b, s in idx.pairs(num_matched, min_score=min_score)]
        sys.stdout.write("".join(lines))
        err.print(f"{len(lines)} pairs of {len(idx)} images")
        return
    from lookalike.verify import MatchConf

    notes: list[str] = []
    found = idx.pairs(
        num_matched,
        min_score=min_score,
        verify=MatchConf(min_inliers=min_inliers),
        workers=workers,
        progress=not quiet,
        notes=notes,
    )
    lines = [f"{p.name_a} {p.name_b} {p.score:.4f} {p.verdict.inliers}\n" for p in found if p.verdict.verified]
    sys.stdout.write("".join(lines))
    for note in notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False)
    err.print(f"{len(lines)} verified pairs of {len(found)} candidates among {len(idx)} images")


@app.command()
def features(
    index: IndexOpt = Path(".lookalike"),
    max_keypoints: Annotated[
        int | None, typer.Option(help="Strongest keypoints kept per image [2048, or as stored].")
    ] = None,
    resolution: Annotated[int | None, typer.Option(help="Long side SIFT runs at, pixels [1024, or as stored].")] = None,
    workers: Annotated[int | None, typer.Option(help="Threads extracting features [cores, at most 4].")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Compute and cache local features (RootSIFT) of every indexed image that has none yet."""
    idx = _open_index(index)
    before = len(idx.features.missing())
    cache = idx.local_features(max_keypoints=max_keypoints, resolution=resolution, workers=workers, progress=not quiet)
    for note in cache.notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False)
    for i, reason in sorted(cache.failed.items()):
        err.print(f"  [yellow]skipped[/] {idx.names[i]}: {reason}", highlight=False)
    conf = cache.conf
    err.print(
        f"local features: {len(idx) - len(cache.failed)} of {len(idx)} images ({before - len(cache.failed)} computed now), "
        f"{conf.max_keypoints} keypoints at {conf.resolution} px, {_human_bytes(cache.disk_bytes())} on disk"
    )


@app.command()
def cluster(
    index: IndexOpt = Path(".lookalike"),
    method: Annotated[str, typer.Option(help="graph (kNN similarity graph) or hdbscan.")] = "graph",
    k: Annotated[int, typer.Option("-k", "--k", help="Neighbours per image in the similarity graph.")] = 10,
    strong: Annotated[
        float | None, typer.Option(help="Cosine for strong edges (cluster cores) [from the similarity distribution].")
    ] = None,
    weak: Annotated[
        float | None, typer.Option(help="Cosine for weak edges (growing, merging) [from the similarity distribution].")
    ] = None,
    merge_links: Annotated[int, typer.Option(help="Weak edges needed to merge two clusters.")] = 3,
    merge_ratio: Annotated[
        float, typer.Option(help="... and at least this fraction of the smaller cluster's size.")
    ] = 0.5,
    gps_count: Annotated[int, typer.Option(help="GPS-tagged photos a cluster needs for GPS merging.")] = 4,
    gps_distance: Annotated[float, typer.Option(help="Merge clusters whose GPS centres are this close (metres).")] = 30,
    min_size: Annotated[int, typer.Option(help="Smallest cluster kept; smaller groups are noise.")] = 2,
    mutual: Annotated[
        bool, typer.Option("--mutual/--no-mutual", help="Strong edges only between mutual k-nearest neighbours.")
    ] = True,
    local_ratio: Annotated[
        float,
        typer.Option(help="Keep an edge only if it scores ≥ this × its endpoints' best match (0 = off)."),
    ] = 0.95,
    hdbscan_size: Annotated[int, typer.Option(help="hdbscan: minimum cluster size of the first pass.")] = 5,
    pca: Annotated[int | None, typer.Option(help="hdbscan: reduce to this many dimensions first.")] = None,
    suggest_only: Annotated[
        bool,
        typer.Option("--suggest", help="Print the similarity distribution and suggested thresholds; no clustering."),
    ] = False,
    as_json: JsonOpt = False,
    export: Annotated[Path | None, typer.Option(help="Write cluster folders, contact sheets, index.html here.")] = None,
    link: Annotated[bool, typer.Option(help="--export: symbolic links instead of copies.")] = False,
    hardlink: Annotated[bool, typer.Option(help="--export: hard links instead of copies.")] = False,
    verify: Annotated[
        bool, typer.Option("--verify", help="Geometric verification of the kNN pairs decides the edges (graph).")
    ] = False,
    min_inliers: Annotated[int, typer.Option(help="--verify: inliers a pair needs to be one place.")] = 15,
    workers: Annotated[int | None, typer.Option(help="--verify: threads matching pairs [cores, at most 4].")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Group an index's photos (one cluster per object/place); the result is saved as clusters.json in the index."""
    from lookalike.cluster import GraphParams, cluster_index, export_clusters, suggest

    if link and hardlink:
        raise LookalikeError("--link and --hardlink exclude each other")
    idx = _open_index(index)
    if suggest_only:
        s = suggest(idx, k)
        if as_json:
            _print_json(s.to_dict())
            return
        out.print(f"[bold]kNN similarities[/] ({s.edges} edges, k={k}): " + _quantile_text(s.quantiles))
        out.print("[bold]nearest neighbour[/]: " + _quantile_text(s.nn_quantiles))
        out.print("[bold]random pairs[/]: " + _quantile_text(s.random_quantiles))
        top = max(c for _, _, c in s.histogram) or 1
        for lo, hi, c in s.histogram:
            out.print(f"  {lo:7.4f}–{hi:7.4f} {'█' * round(40 * c / top):40s} {c}")
        out.print(f"suggested: [bold]--strong {s.strong:.4f} --weak {s.weak:.4f}[/]")
        return
    params = GraphParams(
        k, strong, weak, merge_links, merge_ratio, gps_count, gps_distance, min_size, mutual, local_ratio
    )
    match_conf = None
    if verify:
        from lookalike.verify import MatchConf

        match_conf = MatchConf(min_inliers=min_inliers)
    result = cluster_index(
        idx,
        method,
        params=params,
        hdbscan_size=hdbscan_size,
        pca=pca,
        verify=match_conf,
        workers=workers,
        progress=not quiet,
    )
    for note in result.notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False)
    data = result.to_dict()
    if export:
        mode = "symlink" if link else "hardlink" if hardlink else "copy"
        rep = export_clusters(data, idx.root, export, mode=mode)
        err.print(
            f"export: {rep['out']} — {rep['files']} files ({rep['written']} written, {rep['unchanged']} unchanged, "
            f"{rep['removed']} removed), {rep['sheets']} contact sheets, index.html"
            + (f"; {len(rep['missing'])} photos no longer on disk" if rep["missing"] else "")
        )
    if as_json:
        _print_json(data)
        return
    table = Table(title=f"{len(data['clusters'])} clusters, {len(data['noise'])} unclustered ({method})")
    table.add_column("id", justify="right")
    table.add_column("size", justify="right")
    table.add_column("GPS")
    table.add_column("paths")
    for c in data["clusters"][:50]:
        gps = f"{c['gps']['lat']:.5f}, {c['gps']['lon']:.5f}" if c["gps"] else ""
        shown = ", ".join(_shown(p) for p in c["paths"][:3]) + (f", … (+{c['size'] - 3})" if c["size"] > 3 else "")
        table.add_row(str(c["id"]), str(c["size"]), gps, shown)
    out.print(table)
    if len(data["clusters"]) > 50:
        out.print(f"… {len(data['clusters']) - 50} more clusters (--json or --export for all)")
    out.print(", ".join(f"{key} {v}" for key, v in data["metrics"].items()))


def _quantile_text(q: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.3f}" for k, v in q.items())


@app.command()
def dedupe(
    files: Annotated[
        list[Path] | None, typer.Argument(help="Photos for --not-duplicates / --keep-all.", show_default=False)
    ] = None,
    index: IndexOpt = Path(".lookalike"),
    threshold: Annotated[float, typer.Option(help="Cosine at or above which two images are candidate copies.")] = 0.8,
    pixel: Annotated[
        float,
        typer.Option(help="Aligned pixel correlation a candidate needs to count as a copy (0 = cosine alone)."),
    ] = 0.9,
    k: Annotated[int, typer.Option("-k", "--k", help="Neighbours looked at per image.")] = 10,
    keep: Annotated[str, typer.Option(help="Which copy to keep: best, oldest, newest, largest, path-order.")] = "best",
    plan: Annotated[Path | None, typer.Option(help="Write a plan (a dry run: nothing moves) to this file.")] = None,
    apply: Annotated[Path | None, typer.Option(help="Do what this plan says (or resume it).")] = None,
    move_to: Annotated[Path | None, typer.Option(help="--apply: move the copies here (outside the photos).")] = None,
    link: Annotated[bool, typer.Option(help="--apply: replace each copy by a link to its keeper.")] = False,
    delete: Annotated[bool, typer.Option(help="--apply: delete the copies (needs --yes).")] = False,
    yes: Annotated[bool, typer.Option(help="Confirm an action that cannot be undone.")] = False,
    undo: Annotated[Path | None, typer.Option(help="Put back what this plan moved or linked.")] = None,
    new: Annotated[Path | None, typer.Option(help="Which photos of this folder are already in the index.")] = None,
    not_duplicates: Annotated[bool, typer.Option(help="Remember that FILES are not duplicates of each other.")] = False,
    keep_all: Annotated[bool, typer.Option(help="Remember to keep all of FILES (never planned for removal).")] = False,
    series: Annotated[bool, typer.Option(help="Burst series: frames of one moment, best frame first.")] = False,
    orientations: Annotated[
        bool,
        typer.Option(help="Rotated (90/180/270°) and mirrored copies too: four more model passes per image, cached."),
    ] = False,
    seconds: Annotated[float, typer.Option(help="--series: frames this close in capture time (EXIF).")] = 5.0,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Near-identical images (resized, recompressed, cropped copies), checked pixel for pixel; plan what to keep,
    apply or undo the plan, check new photos against the index, remember decisions, find burst series."""
    from lookalike import cluster as cl

    actions = [x for x in (plan, apply, undo, new) if x is not None] + [
        x for x in (not_duplicates, keep_all, series) if x
    ]
    if len(actions) > 1:
        raise LookalikeError("give one of --plan, --apply, --undo, --new, --not-duplicates, --keep-all, --series")
    if (link or delete or move_to) and apply is None:
        raise LookalikeError("--move-to, --link and --delete go with --apply PLAN")
    if orientations and (apply or undo or new or not_duplicates or keep_all or series):
        raise LookalikeError("--orientations goes with the copy report or --plan")
    if files and not (not_duplicates or keep_all):
        raise LookalikeError("photos are given only with --not-duplicates or --keep-all")
    idx = _open_index(index)
    if not_duplicates or keep_all:
        kind = "not-duplicates" if not_duplicates else "keep-all"
        item = cl.decide(idx, kind, files or [])
        if as_json:
            _print_json(item)
        else:
            out.print(f"remembered: {', '.join(item['names'])} — {kind}")
        return
    if apply is not None:
        if sum((move_to is not None and not link, link, delete)) != 1:
            raise LookalikeError("--apply needs one of --move-to DIR, --link (optionally with --move-to), --delete")
        mode = "link" if link else "delete" if delete else "move"
        with _step_bar(quiet) as on_step:
            rep = cl.apply_plan(idx, apply, mode, target=move_to, yes=yes, on_step=on_step)
        if as_json:
            _print_json(rep)
            return
        verb = {"move": f"moved to {rep['target']}", "link": "linked to their keepers", "delete": "deleted"}[mode]
        if rep["already"]:
            out.print(f"this plan was already applied ({rep['done']} files {verb}); journal {rep['journal']}")
        else:
            out.print(f"{rep['done']} files {verb} ({_human_bytes(rep['bytes'])}); journal {rep['journal']}")
        return
    if undo is not None:
        rep = cl.undo_plan(idx, undo)
        if as_json:
            _print_json(rep)
            return
        out.print(
            f"{rep['undone']} files put back"
            + (f"; [yellow]{rep['lost']} could not be[/] (deleted or linked over)" if rep.get("lost") else "")
        )
        return
    if new is not None:
        rep = cl.check_new(idx, new, threshold=threshold, pixel=pixel, progress=not quiet and not as_json)
        if as_json:
            _print_json(rep)
            return
        for p in rep["photos"]:
            if p["status"] == "copy":
                out.print(f"[yellow]copy[/] {p['path']} = {', '.join(h['name'] for h in p['copy_of'])}")
            elif p["status"] == "new":
                out.print(f"[green]new[/]  {p['path']}")
            else:
                err.print(f"[yellow]skipped[/] {p['path']}: {p['reason']}")
        s = rep["summary"]
        err.print(
            f"{s['photos']} photos: {s['copy']} already in the index, {s['new']} new, {s['skipped']} skipped ({rep['seconds']:.1f}s)"
        )
        return
    notes: list[str] = []
    if series:
        meta = idx.store.metadata()
        groups = cl.burst_series(
            idx.vectors,
            idx.names,
            meta.column("exif_time").to_pylist(),
            idx.paths,
            seconds=seconds,
            pixel=pixel,
            notes=notes,
        )
        if as_json:
            _print_json({"seconds": seconds, "series": groups, "notes": notes})
            return
        for note in notes:
            err.print(f"[yellow]note:[/] {note}", highlight=False)
        for i, g in enumerate(groups, start=1):
            out.print(f"[bold]series {i}[/] ({g['size']} frames in {g['seconds']:g} s) best: {g['best']}")
            for f in g["frames"]:
                out.print(f"  {f['name']}  sharpness {f['sharpness']:.0f}, exposure {f['exposure']:.3f}")
        err.print(f"{len(groups)} series, {sum(g['size'] for g in groups)} frames of {len(idx)}")
        return
    if plan is not None:
        made = cl.make_plan(idx, keep, threshold=threshold, pixel=pixel, k=k, notes=notes, orientations=orientations)
        cl.save_plan(made, plan)
        for note in notes:
            err.print(f"[yellow]note:[/] {note}", highlight=False)
        if as_json:
            _print_json(made)
            return
        for g in made["groups"]:
            out.print(f"[bold]group {g['id']}[/] ({len(g['files'])} images) keep [green]{g['keeper']}[/] — {g['why']}")
            for f in g["files"][1:]:
                out.print(f"  {'keep' if g['action'] == 'keep-all' else 'remove'} {f['path']}")
        sm = made["summary"]
        err.print(
            f"plan {plan}: {sm['groups']} groups, {sm['remove']} files to remove ({_human_bytes(sm['bytes'])})"
            + (f", {sm['kept_all']} groups kept whole by decision" if sm["kept_all"] else "")
            + "; nothing was moved. Apply with --apply PLAN --move-to DIR | --link | --delete --yes"
        )
        return
    groups = cl.near_duplicates(
        idx.vectors, idx.names, threshold, k, paths=idx.paths, pixel=pixel, notes=notes,
        hashes=idx.store.column("hash"), decisions=cl.Decisions.load(idx.store.path),
        turned=idx.orientation_vectors(progress=not quiet and not as_json, notes=notes) if orientations else None,
        features=idx.features if orientations else None,
    )  # fmt: skip
    if as_json:
        _print_json(
            {"threshold": threshold, "pixel": pixel, "orientations": orientations, "groups": groups, "notes": notes}
        )
        return
    for note in notes:
        err.print(f"[yellow]note:[/] {note}", highlight=False)
    for i, g in enumerate(groups, start=1):
        kept = " [cyan]keep all (decided)[/]" if g.get("decision") else ""
        out.print(f"[bold]group {i}[/] ({g['size']} images, cosine {g['min_score']:.3f}–{g['max_score']:.3f}){kept}")
        for p in g["paths"]:
            out.print(f"  {_shown(p)}", highlight=False)
        for tp in g.get("turns", []):
            out.print(f"  ({_shown(tp['b'])} is {_shown(tp['a'])} turned {tp['turn']})", highlight=False)
    err.print(f"{len(groups)} groups, {sum(g['size'] for g in groups)} images of {len(idx)}")


@contextlib.contextmanager
def _step_bar(quiet: bool):  # noqa: ANN202
    from lookalike.progress import bar

    state: dict[str, Any] = {}

    def on_step(done: int, total: int) -> None:
        if quiet:
            return
        if "tick" not in state:
            state["cm"] = bar("applying", total, True)
            state["tick"] = state["cm"].__enter__()
            state["tick"].advance(done - 1)
        state["tick"].advance(1)

    try:
        yield on_step
    finally:
        if "cm" in state:
            state["cm"].__exit__(None, None, None)


# --- descriptors (VLAD vocabularies, PCA-whitening) ---

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
    idx = _open_index(index).refit_vocabulary(clusters, soft=soft, out=out_file, progress=not quiet)
    _print_report(idx.report, quiet)
    err.print(f"vocabulary: {clusters} clusters, {idx.store.meta['dim']}-dim vectors; index: {idx.store.path}")
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

    err.print(f"map: {vlad_map(_open_index(index), image, out_file)}")


# --- classify and evaluate ---

MethodOpt = Annotated[
    str | None, typer.Option("--method", "-m", help="knn, linear or mlp (default: the fitted head, else knn).")
]
KOpt = Annotated[int | None, typer.Option("--k", "-k", help="Neighbours that vote (kNN; default 10).")]


@app.command()
def fit(
    index: IndexOpt = Path(".lookalike"),
    method: Annotated[str, typer.Option("--method", "-m", help="knn, linear or mlp.")] = "knn",
    k: Annotated[int, typer.Option("--k", "-k", help="Neighbours that vote (kNN).")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Fit a classification head on the index's labelled vectors and store it in the index folder."""
    from lookalike.classify import fit_index

    idx = _open_index(index)
    info = fit_index(idx, method, k=k)
    if as_json:
        _print_json(info)
        return
    m = info["metrics"]
    err.print(
        f"fitted [bold]{info['method']}[/] head on {info['n_train']} images ({', '.join(info['classes'])}) in "
        f"{info['fit_seconds']:.1f}s; {m.get('validation', 'validation')}: accuracy {m.get('val_accuracy', 0):.3f}, "
        f"ECE {m.get('val_ece', 0):.3f} (uncalibrated {m.get('val_ece_uncalibrated', 0):.3f})"
    )
    err.print(f"head: {idx.store.path / 'head.json'}")


@app.command()
def classify(
    images: Annotated[list[Path], typer.Argument(help="Image(s) to classify.")],
    index: IndexOpt = Path(".lookalike"),
    method: MethodOpt = None,
    k: KOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The class of each image, with the probability of every class of the index."""
    idx = _open_index(index)
    preds = idx.classify([str(p) for p in images], k, method=method)
    for path, p in zip(images, preds, strict=True):
        if as_json:
            _print_json({"image": str(path), **p.to_dict()})
            continue
        others = sorted(p.probabilities.items(), key=lambda kv: -kv[1])
        out.print(
            f"[bold]{p.label}[/] {p.probability:.3f}  {path}  "
            + "  ".join(f"{c} {v:.3f}" for c, v in others[1:4])
            + f"  [dim]({p.method})[/]"
        )


@app.command()
def evaluate(
    index: IndexOpt = Path(".lookalike"),
    test: Annotated[Path, typer.Option("--test", "-t", help="Test folder, one sub-folder per class.")] = Path("test"),
    method: MethodOpt = None,
    k: KOpt = None,
    as_json: JsonOpt = False,
    report: Annotated[Path | None, typer.Option(help="Write PNGs and an HTML page into this folder.")] = None,
    leak_check: LeakCheckOpt = True,
    orientations: OrientationsOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Classification and retrieval metrics of a labelled test folder against the index."""
    from lookalike.evaluate import run_evaluation, write_report

    idx = _open_index(index)
    ev = run_evaluation(idx, test, method, k=k, leak_check=leak_check, orientations=orientations, progress=not quiet)
    m = ev.metrics
    if ev.leaks is not None:
        _print_leaks(ev.leaks, rows=10)
    if m["unknown_classes"]:
        err.print(
            "[yellow]left out[/] test classes the index does not know: "
            + ", ".join(f"{c} ({n} images)" for c, n in m["unknown_classes"].items()),
            soft_wrap=True,
        )
    if m["overlap"]:
        err.print(f"[yellow]{m['overlap']} test images are also in the index[/]; excluded from their own rankings")
    if m["unreadable"]:
        err.print(f"[yellow]{len(m['unreadable'])} test files could not be read[/] (first: {m['unreadable'][0]})")
    if as_json:
        _print_json(m)
    else:
        out.print(
            f"{m['n']} test images, method {m['method']}: accuracy [bold]{m['accuracy']:.3f}[/], macro-F1 "
            f"{m['macro_f1']:.3f}, MAP@R {m['map_at_r']:.3f}, ECE {m['ece']:.3f}"
        )
        t = Table("class", "precision", "recall", "F1", "n")
        for c, v in m["per_class"].items():
            t.add_row(c, f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1']:.3f}", str(v["support"]))
        out.print(t)
        r = Table("k", "R@k", "P@k", "top-k class acc.")
        for kk in m["recall_at"]:
            r.add_row(kk, f"{m['recall_at'][kk]:.3f}", f"{m['precision_at'][kk]:.3f}", f"{m['top_k_accuracy'][kk]:.3f}")
        out.print(r)
        if "leak_free" in m:
            _print_leak_free(m)
    if report:
        err.print(f"report: {write_report(idx, ev, report)}")


@app.command()
def suspects(
    index: IndexOpt = Path(".lookalike"),
    below: Annotated[
        float, typer.Option(help="Flag images whose own label gets less than this out-of-fold probability.")
    ] = 0.1,
    as_json: JsonOpt = False,
) -> None:
    """Images whose folder label the rest of the index contradicts: the ones to check for a wrong label."""
    from lookalike.evaluate import index_suspects

    found = index_suspects(_open_index(index), below=below)
    if as_json:
        _print_json(found)
        return
    for s in found:
        out.print(f"{s['p_label']:.3f}  {s['label']} → {s['predicted']}  {_shown(s['path'])}", highlight=False)
    n = len(found)
    err.print(f"{n} suspect label{'' if n == 1 else 's'} (probability of their own label below {below:g})")


@plot_app.command("tsne")
def plot_tsne(
    index: IndexOpt = Path(".lookalike"),
    out_file: Annotated[Path, typer.Option("--out", "-o", help="PNG to write.")] = Path("tsne.png"),
    test: Annotated[Path | None, typer.Option("--test", help="Also a labelled test folder (crosses).")] = None,
    max_points: Annotated[int, typer.Option(help="Subsample to at most this many points.")] = 3000,
) -> None:
    """t-SNE of the index's vectors, coloured by class."""
    from lookalike.evaluate import tsne_of_index

    err.print(f"t-SNE: {tsne_of_index(_open_index(index), out_file, test_dir=test, max_points=max_points)}")


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

    idx = _open_index(index)
    with err.status(f"laying out {len(idx):,} images ({method}) ..."):
        result = compute_map(idx, method, color=color, seed=seed, suspects=suspects, force=force)
    summary = {"method": result.method, "images": len(result.xy), "suspects": len(result.suspects), **result.info}
    if as_json:
        _print_json(summary)
    else:
        err.print(
            f"map: {len(result.xy):,} images by {result.method} in {result.info.get('seconds')}s, "
            f"{len(result.suspects)} suspect labels; open it with `lookalike serve --index {idx.store.path}` (Map tab)"
        )


# --- leaks and uniqueness -------------------------------------------------------------------------------------------

LeakCheckOpt = Annotated[
    bool,
    typer.Option(
        "--leak-check/--no-leak-check",
        help="Find test images that are copies of indexed ones; figures given again without them [on].",
    ),
]
OrientationsOpt = Annotated[
    bool, typer.Option("--orientations", help="Leak check: also rotated copies (3 more model passes per test image).")
]


def _print_leaks(report: Any, rows: int = 50) -> None:
    counts = ", ".join(f"{n} {k}" for k, n in report.counts().items() if n)
    colour = "yellow" if report.leaks else "green"
    err.print(
        f"[{colour}]leak check: {len(report.leaks)} of {report.checked} test images have a copy in the index[/]"
        + (f" ({counts})" if counts else "")
        + (f"; {len(report.within_test)} copy pairs inside the test set" if report.within_test else ""),
        highlight=False,
        soft_wrap=True,
    )
    for x in report.leaks[:rows]:
        t = x["twins"][0]
        how = t["kind"] + (f" {t['turn']}" if "turn" in t else "")
        pix = f" pixel {t['pixel']:.3f}" if t.get("pixel") is not None else ""
        err.print(
            f"  {_shown(x['path'])} ~ {_shown(t['name'])}  {how}, cosine {t['cosine']:.3f}{pix}",
            highlight=False,
            soft_wrap=True,
        )
    if len(report.leaks) > rows:
        err.print(f"  … and {len(report.leaks) - rows} more (--json lists them all)")
    for w in report.within_test[:rows]:
        err.print(
            f"  inside the test set: {_shown(w['a'])} ~ {_shown(w['b'])}  {w['kind']}", highlight=False, soft_wrap=True
        )
    for n in report.notes:
        err.print(f"  [dim]{escape(n)}[/]", highlight=False, soft_wrap=True)


def _print_leak_free(m: dict[str, Any]) -> None:
    t = Table("test images", "n", "accuracy", "macro-F1", "R@1", "MAP@R")
    for name, x in (("all", m), ("leak-free", m["leak_free"])):
        if "accuracy" in x:
            t.add_row(name, str(x["n"]), f"{x['accuracy']:.3f}", f"{x['macro_f1']:.3f}",
                      f"{x['recall_at']['1']:.3f}", f"{x['map_at_r']:.3f}")  # fmt: skip
        else:
            t.add_row(name, str(x["n"]), "–", "–", "–", "–")
    out.print(t)


@app.command()
def leaks(
    index: IndexOpt = Path(".lookalike"),
    test: Annotated[Path, typer.Option("--test", "-t", help="Test folder (labelled or not).")] = Path("test"),
    orientations: OrientationsOpt = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Test images that are copies of indexed images (and copies inside the test set): the leak check alone."""
    from lookalike.leaks import check_leaks

    report = check_leaks(_open_index(index), test, orientations=orientations, progress=not quiet)
    if as_json:
        _print_json(report.to_dict())
    else:
        _print_leaks(report)


@app.command()
def unique(
    index: IndexOpt = Path(".lookalike"),
    top: Annotated[int, typer.Option(help="How many of the most redundant and most isolated to list.")] = 20,
    sheets: Annotated[
        Path | None, typer.Option(help="Write most-redundant.png and most-isolated.png into this folder.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Recompute even if the stored scores are current.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Uniqueness of every image from its nearest neighbours' distances: the most redundant and the most isolated."""
    from lookalike.uniqueness import uniqueness, uniqueness_sheets

    result = uniqueness(_open_index(index), force=force)
    if sheets is not None:
        for p in uniqueness_sheets(result, sheets, top=top):
            err.print(f"sheet: {_shown(p)}", highlight=False)
    if as_json:
        _print_json(result.to_dict(top))
        return
    d = result.to_dict(top)
    for title, key in (("most redundant", "most_redundant"), ("most isolated", "most_isolated")):
        t = Table("uniqueness", "raw", "path", title=title)
        for r in d[key]:
            t.add_row(f"{r['uniqueness']:.3f}", f"{r['raw']:.3f}", _shown(r["path"]))
        out.print(t)
    q = d["quantiles"]
    err.print(
        f"{d['images']:,} images; uniqueness median {q['0.5']:.3f}, 10% below {q['0.1']:.3f}, 90% below "
        f"{q['0.9']:.3f}; stored in the index folder",
        highlight=False,
    )


def _stand_in(info: Any) -> Any:
    """A command's entry with the same name and help but no options, so that typer builds it for nothing."""

    def stand_in() -> None:  # never run: only the command being run is built in full
        raise AssertionError

    stand_in.__name__, stand_in.__doc__ = info.callback.__name__, info.callback.__doc__
    entry = copy.copy(info)
    entry.callback = stand_in
    return entry


def _lean(typer_app: typer.Typer, args: list[str]) -> typer.Typer:
    """``typer_app`` with only the command ``args`` name built in full, the others as stand-ins with the same name
    and help: typer builds every command's options before parsing (a tenth of a second for ~20 commands), which
    ``--help`` and a one-off ``search`` would pay. The help, the errors and what runs are those of ``typer_app``."""
    name = args[0] if args and not args[0].startswith("-") else None
    lean = copy.copy(typer_app)
    lean.registered_commands = [
        info if (info.name or typer.main.get_command_name(info.callback.__name__)) == name else _stand_in(info)
        for info in typer_app.registered_commands
    ]
    lean.registered_groups = []
    for info in typer_app.registered_groups:
        group = copy.copy(info)
        group.typer_instance = _lean(info.typer_instance, args[1:] if info.name == name else [])
        lean.registered_groups.append(group)
    return lean


def main() -> None:
    import codecs

    from lookalike.io import shown

    # A safety net under the explicit _shown calls: any name with undecodable bytes that still reaches the terminal
    # is printed readably instead of ending the command with a UnicodeEncodeError.
    # (as bytes: the UTF-8 encoder takes only ASCII text from an error handler)
    codecs.register_error("lookalike-shown", lambda e: (shown(e.object[e.start : e.end]).encode(), e.end))  # type: ignore[attr-defined]
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="lookalike-shown")  # type: ignore[union-attr]
    try:
        _lean(app, sys.argv[1:])()
    except LookalikeError as exc:
        message = str(exc)
        setting = getattr(exc, "setting", None)
        if setting and message.startswith(setting):  # the library names settings; here they are flags
            message = "--" + setting.replace("_", "-") + message[len(setting) :]
        err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print(
            "[yellow]interrupted[/]: what was embedded is saved; run the same command again to resume", soft_wrap=True
        )
        sys.exit(130)


if __name__ == "__main__":
    main()
