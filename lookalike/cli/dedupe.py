"""``lookalike dedupe``: copies, as a group of subcommands (find, plan, apply, undo, new, decide, series), each with
its own options. The library checks the values (``ConfigError`` names the setting; ``main`` respells it as a flag)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from lookalike.cli.common import (
    IndexOpt,
    JsonOpt,
    QuietOpt,
    app,
    err,
    human_bytes,
    open_index,
    out,
    print_json,
    print_notes,
    shown,
)  # fmt: skip

dedupe_app = typer.Typer(
    no_args_is_help=True,
    help="Copies: find them (checked pixel for pixel), plan which to keep, apply or undo the plan, check new photos "
    "against the index, remember decisions, find burst series.",
)
app.add_typer(dedupe_app, name="dedupe")

ThresholdOpt = Annotated[float, typer.Option(help="Cosine at or above which two images are candidate copies.")]
PixelOpt = Annotated[
    float, typer.Option(help="Aligned pixel correlation a candidate needs to count as a copy (0 = cosine alone).")
]
KOpt = Annotated[int, typer.Option("-k", "--k", help="Neighbours looked at per image.")]
OrientationsOpt = Annotated[
    bool,
    typer.Option(
        "--orientations",
        help="Rotated (90/180/270°) and mirrored copies too: four more model passes per image, cached.",
    ),
]
PathOpt = Annotated[
    str | None,
    typer.Option("--path", help="Only photos whose path (relative to the photo folder) matches a glob: 'trips/**'."),
]
RawJpegOpt = Annotated[
    str, typer.Option("--raw-jpeg", help="RAW+JPEG siblings: pairs (one shot, never copies) or duplicates.")
]
PlanArg = Annotated[Path, typer.Argument(help="The plan file (JSON).", metavar="PLAN", show_default=False)]


@dedupe_app.command("find")
def dedupe_find(
    index: IndexOpt = Path(".lookalike"),
    threshold: ThresholdOpt = 0.8,
    pixel: PixelOpt = 0.9,
    k: KOpt = 10,
    orientations: OrientationsOpt = False,
    path: PathOpt = None,
    raw_jpeg: RawJpegOpt = "pairs",
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Report groups of near-identical images (resized, recompressed, cropped copies); nothing changes."""
    from lookalike.dedupe import DedupeSettings, index_duplicates

    settings = DedupeSettings.parse(path=path, raw_jpeg=raw_jpeg)
    idx = open_index(index)
    notes: list[str] = []
    progress = not quiet and not as_json
    groups = index_duplicates(
        idx, threshold, k, pixel=pixel, orientations=orientations, notes=notes, progress=progress, settings=settings
    )
    if as_json:
        print_json(
            {"threshold": threshold, "pixel": pixel, "orientations": orientations, "groups": groups, "notes": notes}
        )
        return
    print_notes(notes)
    for i, g in enumerate(groups, start=1):
        kept = " [cyan]keep all (decided)[/]" if g.get("decision") else ""
        out.print(f"[bold]group {i}[/] ({g['size']} images, cosine {g['min_score']:.3f}–{g['max_score']:.3f}){kept}")
        for p in g["paths"]:
            out.print(f"  {shown(p)}", highlight=False)
        for tp in g.get("turns", []):
            out.print(f"  ({shown(tp['b'])} is {shown(tp['a'])} turned {tp['turn']})", highlight=False)
    err.print(f"{len(groups)} groups, {sum(g['size'] for g in groups)} images of {len(idx)}")


@dedupe_app.command("plan")
def dedupe_plan(
    plan_file: PlanArg,
    index: IndexOpt = Path(".lookalike"),
    keep: Annotated[
        str,
        typer.Option(
            help="Which copy to keep: best (= original: unedited copies first), edited (edits first), oldest, "
            "newest, largest, path-order."
        ),
    ] = "best",
    threshold: ThresholdOpt = 0.8,
    pixel: PixelOpt = 0.9,
    k: KOpt = 10,
    orientations: OrientationsOpt = False,
    reference: Annotated[
        list[Path] | None,
        typer.Option(
            help="A folder never touched (the archive): only copies elsewhere are removed. Repeatable; remembered."
        ),
    ] = None,
    prefer: Annotated[
        list[Path] | None, typer.Option(help="A folder whose copies win the keeper choice; repeatable, first wins.")
    ] = None,
    prefer_formats: Annotated[
        str | None,
        typer.Option(
            help="File formats best first (camera originals before conversions): raw,heic,avif,png,jpeg,webp."
        ),
    ] = None,
    path: PathOpt = None,
    raw_jpeg: RawJpegOpt = "pairs",
    as_json: JsonOpt = False,
) -> None:
    """Write a plan: which copy of each group stays and why, what goes (a dry run: nothing moves)."""
    from lookalike.dedupe import DedupeSettings, make_plan, save_plan

    settings = DedupeSettings.parse(
        prefer_formats=prefer_formats, raw_jpeg=raw_jpeg, reference=reference or [], prefer=prefer or [], path=path
    )
    idx = open_index(index)
    notes: list[str] = []
    made = make_plan(
        idx, keep, threshold=threshold, pixel=pixel, k=k, notes=notes, orientations=orientations, settings=settings
    )
    save_plan(made, plan_file)
    print_notes(notes)
    if as_json:
        print_json(made)
        return
    for g in made["groups"]:
        if g["action"] == "reference-only":
            out.print(f"[bold]group {g['id']}[/] ({len(g['files'])} images) all in reference folders: not acted on")
            continue
        out.print(f"[bold]group {g['id']}[/] ({len(g['files'])} images) keep [green]{g['keeper']}[/] — {g['why']}")
        for f in g["files"][1:]:
            out.print(f"  {f['role']} {f['path']}", highlight=False)
    sm = made["summary"]
    err.print(
        f"plan {plan_file}: {sm['groups']} groups, {sm['remove']} files to remove ({human_bytes(sm['bytes'])})"
        + (f", {sm['kept_all']} groups kept whole by decision" if sm["kept_all"] else "")
        + "; nothing was moved. Apply with `lookalike dedupe apply PLAN --move-to DIR | --link | --delete --yes`"
    )


@dedupe_app.command("reference")
def dedupe_reference(
    folders: Annotated[
        list[Path] | None, typer.Argument(help="Folders to make reference folders (none: list them).", metavar="DIR")
    ] = None,
    index: IndexOpt = Path(".lookalike"),
    remove: Annotated[bool, typer.Option("--remove", help="Stop treating these folders as reference folders.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Reference folders of the index: plans never remove a file under them, and `dedupe apply` refuses a plan
    that would (also one made before the folder became a reference)."""
    from lookalike.dedupe import DedupeSettings
    from lookalike.dedupe.decisions import load_references, remember_references

    idx = open_index(index)
    given, _ = DedupeSettings.parse(reference=folders or []).folders(idx.root)
    if remove:
        now = remember_references(idx.folder, remove=given)
    else:
        now = remember_references(idx.folder, add=given) if given else load_references(idx.folder)
    if as_json:
        print_json({"reference": list(now)})
        return
    for r in now:
        out.print(r or ".", highlight=False)
    err.print(f"{len(now)} reference folder(s)")


@dedupe_app.command("apply")
def dedupe_apply(
    plan_file: PlanArg,
    index: IndexOpt = Path(".lookalike"),
    move_to: Annotated[Path | None, typer.Option(help="Move the copies here (outside the photos).")] = None,
    link: Annotated[
        bool,
        typer.Option("--link", help="Replace each copy by a link to its keeper (originals to --move-to if given)."),
    ] = False,
    delete: Annotated[bool, typer.Option("--delete", help="Delete the copies (needs --yes).")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm an action that cannot be undone.")] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Do what a plan says (or finish it after a crash): move the copies to --move-to DIR, replace them by links
    (--link), or delete them (--delete --yes). Journalled: `dedupe undo PLAN` puts moved and linked files back."""
    from lookalike.dedupe import apply_mode, apply_plan

    mode = apply_mode(link=link, delete=delete)
    idx = open_index(index)
    with _step_bar(quiet) as on_step:
        rep = apply_plan(idx, plan_file, mode, target=move_to, yes=yes, on_step=on_step)
    if as_json:
        print_json(rep)
        return
    verb = {"move": f"moved to {rep['target']}", "link": "linked to their keepers", "delete": "deleted"}[mode]
    if rep["already"]:
        out.print(f"this plan was already applied ({rep['done']} files {verb}); journal {rep['journal']}")
    else:
        out.print(f"{rep['done']} files {verb} ({human_bytes(rep['bytes'])}); journal {rep['journal']}")


@dedupe_app.command("undo")
def dedupe_undo(plan_file: PlanArg, index: IndexOpt = Path(".lookalike"), as_json: JsonOpt = False) -> None:
    """Put back what applying this plan moved or linked (the index follows)."""
    from lookalike.dedupe import undo_plan

    rep = undo_plan(open_index(index), plan_file)
    if as_json:
        print_json(rep)
        return
    out.print(
        f"{rep['undone']} files put back"
        + (f"; [yellow]{rep['lost']} could not be[/] (deleted or linked over)" if rep.get("lost") else "")
    )


@dedupe_app.command("new")
def dedupe_new(
    folder: Annotated[Path, typer.Argument(help="Folder of new photos (searched recursively).", metavar="FOLDER")],
    index: IndexOpt = Path(".lookalike"),
    threshold: ThresholdOpt = 0.8,
    pixel: PixelOpt = 0.9,
    path: PathOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Which photos of FOLDER the index already has (copies) and which are new; only FOLDER is embedded."""
    from lookalike.dedupe import DedupeSettings, check_new

    where = DedupeSettings.parse(path=path).path
    progress = not quiet and not as_json
    rep = check_new(open_index(index), folder, threshold=threshold, pixel=pixel, progress=progress, path=where)
    if as_json:
        print_json(rep)
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
        f"{s['photos']} photos: {s['copy']} already in the index, {s['new']} new, {s['skipped']} skipped "
        f"({rep['seconds']:.1f}s)"
    )


@dedupe_app.command("decide")
def dedupe_decide(
    kind: Annotated[
        str,
        typer.Argument(
            help="not-duplicates (different photos) or keep-all (copies, but keep them all).", metavar="KIND"
        ),
    ],
    files: Annotated[
        list[Path],
        typer.Argument(help="The photos (paths, or names relative to the photo folder).", metavar="FILES..."),
    ],
    index: IndexOpt = Path(".lookalike"),
    as_json: JsonOpt = False,
) -> None:
    """Remember a decision about FILES, by content hash: later runs, plans and the web page respect it."""
    from lookalike.dedupe import decide

    item = decide(open_index(index), kind, files)
    if as_json:
        print_json(item)
    else:
        out.print(f"remembered: {', '.join(item['names'])} — {kind}")


@dedupe_app.command("series")
def dedupe_series(
    index: IndexOpt = Path(".lookalike"),
    seconds: Annotated[float, typer.Option(help="Frames this close in capture time (EXIF).")] = 5.0,
    pixel: PixelOpt = 0.9,
    path: PathOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Burst series: look-alike frames of one moment (not copies), best frame first."""
    from lookalike.dedupe import DedupeSettings, burst_series
    from lookalike.filters import glob_regex

    where = DedupeSettings.parse(path=path).path
    idx = open_index(index)
    notes: list[str] = []
    times = idx.metadata().column("exif_time").to_pylist()
    regex = glob_regex(where) if where is not None else None
    rows = [i for i, n in enumerate(idx.names) if regex is None or regex.fullmatch(n)]
    names, paths = [idx.names[i] for i in rows], [idx.paths[i] for i in rows]
    groups = burst_series(
        idx.vectors[rows], names, [times[i] for i in rows], paths, seconds=seconds, pixel=pixel, notes=notes
    )
    if as_json:
        print_json({"seconds": seconds, "series": groups, "notes": notes})
        return
    print_notes(notes)
    for i, g in enumerate(groups, start=1):
        out.print(f"[bold]series {i}[/] ({g['size']} frames in {g['seconds']:g} s) best: {g['best']}")
        for f in g["frames"]:
            out.print(f"  {f['name']}  sharpness {f['sharpness']:.0f}, exposure {f['exposure']:.3f}")
    err.print(f"{len(groups)} series, {sum(g['size'] for g in groups)} frames of {len(idx)}")


@contextlib.contextmanager
def _step_bar(quiet: bool) -> Iterator[Any]:
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
