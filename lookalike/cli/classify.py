"""Classify and evaluate: fit, classify, evaluate (with the leak check), leaks, suspects, plot tsne."""

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
    open_index,
    out,
    plot_app,
    print_json,
    shown,
)

MethodOpt = Annotated[
    str | None, typer.Option("--method", "-m", help="knn, linear or mlp (default: the fitted head, else knn).")
]
KOpt = Annotated[int | None, typer.Option("--k", "-k", help="Neighbours that vote (kNN; default 10).")]
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


@app.command()
def fit(
    index: IndexOpt = Path(".lookalike"),
    method: Annotated[str, typer.Option("--method", "-m", help="knn, linear or mlp.")] = "knn",
    k: Annotated[int, typer.Option("--k", "-k", help="Neighbours that vote (kNN).")] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Fit a classification head on the index's labelled vectors and store it in the index folder."""
    from lookalike.classify import fit_index

    idx = open_index(index)
    info = fit_index(idx, method, k=k)
    if as_json:
        print_json(info)
        return
    m = info["metrics"]
    err.print(
        f"fitted [bold]{info['method']}[/] head on {info['n_train']} images ({', '.join(info['classes'])}) in "
        f"{info['fit_seconds']:.1f}s; {m.get('validation', 'validation')}: accuracy {m.get('val_accuracy', 0):.3f}, "
        f"ECE {m.get('val_ece', 0):.3f} (uncalibrated {m.get('val_ece_uncalibrated', 0):.3f})"
    )
    err.print(f"head: {idx.folder / 'head.json'}")


@app.command()
def classify(
    images: Annotated[list[Path], typer.Argument(help="Image(s) to classify.")],
    index: IndexOpt = Path(".lookalike"),
    method: MethodOpt = None,
    k: KOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The class of each image, with the probability of every class of the index."""
    idx = open_index(index)
    preds = idx.classify([str(p) for p in images], k, method=method)
    for path, p in zip(images, preds, strict=True):
        if as_json:
            print_json({"image": str(path), **p.to_dict()})
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

    idx = open_index(index)
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
        print_json(m)
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
            f"  {shown(x['path'])} ~ {shown(t['name'])}  {how}, cosine {t['cosine']:.3f}{pix}",
            highlight=False,
            soft_wrap=True,
        )
    if len(report.leaks) > rows:
        err.print(f"  … and {len(report.leaks) - rows} more (--json lists them all)")
    for w in report.within_test[:rows]:
        err.print(
            f"  inside the test set: {shown(w['a'])} ~ {shown(w['b'])}  {w['kind']}", highlight=False, soft_wrap=True
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

    report = check_leaks(open_index(index), test, orientations=orientations, progress=not quiet)
    if as_json:
        print_json(report.to_dict())
    else:
        _print_leaks(report)


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

    found = index_suspects(open_index(index), below=below)
    if as_json:
        print_json(found)
        return
    for s in found:
        out.print(f"{s['p_label']:.3f}  {s['label']} → {s['predicted']}  {shown(s['path'])}", highlight=False)
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

    err.print(f"t-SNE: {tsne_of_index(open_index(index), out_file, test_dir=test, max_points=max_points)}")
