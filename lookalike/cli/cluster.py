"""Group and pair: pairs, features (local features), cluster."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from lookalike.cli.common import (
    AddressOpt,
    EngineOpt,
    IndexOpt,
    JsonOpt,
    NumWorkersOpt,
    QuietOpt,
    SkipDecidedOpt,
    app,
    err,
    feature_engine,
    human_bytes,
    open_index,
    out,
    print_json,
    print_notes,
    shown,
)
from lookalike.errors import LookalikeError

if TYPE_CHECKING:
    from lookalike.cluster import Suggestion


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
    engine: EngineOpt = "local",
    address: AddressOpt = None,
    num_workers: NumWorkersOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """hloc-style retrieval pairs: "name1 name2 score" per line, each unordered pair once (names relative to the
    photo folder); with --verify "name1 name2 score inliers", verified pairs only."""
    idx = open_index(index)
    if not verify:
        lines = [f"{a} {b} {s:.4f}\n" for a, b, s in idx.pairs(num_matched, min_score=min_score)]
        sys.stdout.write("".join(lines))
        err.print(f"{len(lines)} pairs of {len(idx)} images")
        return
    from lookalike.verify import MatchConf

    notes: list[str] = []
    conf = MatchConf(min_inliers=min_inliers)
    with feature_engine(engine, address, num_workers) as on:
        found = idx.pairs(
            num_matched, min_score=min_score, verify=conf, workers=workers, progress=not quiet, notes=notes,
            engine=on,
        )  # fmt: skip
    lines = [f"{p.name_a} {p.name_b} {p.score:.4f} {p.verdict.inliers}\n" for p in found if p.verdict.verified]
    sys.stdout.write("".join(lines))
    print_notes(notes)
    err.print(f"{len(lines)} verified pairs of {len(found)} candidates among {len(idx)} images")


@app.command()
def features(
    index: IndexOpt = Path(".lookalike"),
    max_keypoints: Annotated[
        int | None, typer.Option(help="Strongest keypoints kept per image [2048, or as stored].")
    ] = None,
    resolution: Annotated[int | None, typer.Option(help="Long side SIFT runs at, pixels [1024, or as stored].")] = None,
    decode: Annotated[
        str | None,
        typer.Option(help="pillow, or reduced: JPEGs straight to grey at libjpeg-turbo's reduced scale [as stored]."),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Threads extracting features [cores, at most 4].")] = None,
    engine: EngineOpt = "local",
    address: AddressOpt = None,
    num_workers: NumWorkersOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Compute and cache local features (RootSIFT) of every indexed image that has none yet."""
    idx = open_index(index)
    before = len(idx.features.missing())
    with feature_engine(engine, address, num_workers) as on:
        cache = idx.local_features(
            max_keypoints=max_keypoints, resolution=resolution, decode=decode, workers=workers, progress=not quiet,
            engine=on,
        )  # fmt: skip
    print_notes(cache.notes)
    for i, reason in sorted(cache.failed.items()):
        err.print(f"  [yellow]skipped[/] {idx.names[i]}: {reason}", highlight=False)
    conf = cache.conf
    err.print(
        f"local features: {len(idx) - len(cache.failed)} of {len(idx)} images ({before - len(cache.failed)} computed now), "
        f"{conf.max_keypoints} keypoints at {conf.resolution} px ({conf.decode} decoding), "
        f"{human_bytes(cache.disk_bytes())} on disk"
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
    skip_decided: SkipDecidedOpt = False,
    engine: EngineOpt = "local",
    address: AddressOpt = None,
    num_workers: NumWorkersOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Group an index's photos (one cluster per object/place); the result is saved as clusters.json in the index."""
    from lookalike.cluster import GraphParams, cluster_index, export_clusters, suggest
    from lookalike.verify import MatchConf

    if link and hardlink:
        raise LookalikeError("--link and --hardlink exclude each other")
    idx = open_index(index)
    if suggest_only:
        _print_suggestion(suggest(idx, k), k, as_json)
        return
    params = GraphParams(
        k=k, strong=strong, weak=weak, merge_links=merge_links, merge_ratio=merge_ratio, gps_count=gps_count,
        gps_distance=gps_distance, min_size=min_size, mutual=mutual, local_ratio=local_ratio,
    )  # fmt: skip
    match_conf = MatchConf(min_inliers=min_inliers) if verify else None
    with feature_engine(engine, address, num_workers) as on:
        result = cluster_index(
            idx, method, params=params, hdbscan_size=hdbscan_size, pca=pca, match=match_conf, workers=workers,
            progress=not quiet, engine=on, skip_decided=skip_decided,
        )  # fmt: skip
    print_notes(result.notes)
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
        print_json(data)
        return
    _print_clusters(data, method)


def _print_suggestion(s: Suggestion, k: int, as_json: bool) -> None:
    if as_json:
        print_json(s.to_dict())
        return
    out.print(f"[bold]kNN similarities[/] ({s.edges} edges, k={k}): " + _quantile_text(s.quantiles))
    out.print("[bold]nearest neighbour[/]: " + _quantile_text(s.nn_quantiles))
    out.print("[bold]random pairs[/]: " + _quantile_text(s.random_quantiles))
    top = max(c for _, _, c in s.histogram) or 1
    for lo, hi, c in s.histogram:
        out.print(f"  {lo:7.4f}–{hi:7.4f} {'█' * round(40 * c / top):40s} {c}")
    out.print(f"suggested: [bold]--strong {s.strong:.4f} --weak {s.weak:.4f}[/]")


def _print_clusters(data: dict[str, Any], method: str) -> None:
    table = Table(title=f"{len(data['clusters'])} clusters, {len(data['noise'])} unclustered ({method})")
    table.add_column("id", justify="right")
    table.add_column("size", justify="right")
    table.add_column("GPS")
    table.add_column("paths")
    for c in data["clusters"][:50]:
        gps = f"{c['gps']['lat']:.5f}, {c['gps']['lon']:.5f}" if c["gps"] else ""
        listed = ", ".join(shown(p) for p in c["paths"][:3]) + (f", … (+{c['size'] - 3})" if c["size"] > 3 else "")
        table.add_row(str(c["id"]), str(c["size"]), gps, listed)
    out.print(table)
    if len(data["clusters"]) > 50:
        out.print(f"… {len(data['clusters']) - 50} more clusters (--json or --export for all)")
    out.print(", ".join(f"{key} {v}" for key, v in data["metrics"].items()))


def _quantile_text(q: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.3f}" for k, v in q.items())
