"""How results look in a notebook: ``_repr_html_`` for search results, predictions, clusters, duplicate plans, leak
reports, evaluation figures and uniqueness scores.

Jupyter calls ``_repr_html_`` on the last value of a cell; everything here returns plain HTML strings, so nothing of
Jupyter is imported (at import time or ever). Thumbnails are small JPEG data URIs (``THUMB`` px on the long side,
quality ``QUALITY``, at most ``MAX_THUMBS`` per display, so a result costs tens of KB in the notebook file), with
the scores and labels beside them and a link to each file. An image that cannot be read shows as a grey box with
its name; an empty result says so in a line.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

THUMB = 128
QUALITY = 70
MAX_THUMBS = 40
MAX_ROWS = 50

_STYLE = (
    "<style>.lk-grid{display:flex;flex-wrap:wrap;gap:6px;margin:4px 0}"
    ".lk-tile{width:136px;font:11px/1.3 sans-serif;text-align:center;overflow-wrap:anywhere}"
    ".lk-tile img,.lk-miss{width:128px;height:128px;object-fit:contain;background:#eee;display:block;margin:auto}"
    ".lk-miss{display:flex;align-items:center;justify-content:center;color:#777}"
    ".lk-h{font:bold 13px sans-serif;margin:8px 0 2px}.lk-note{font:12px sans-serif;color:#555}"
    ".lk-t td,.lk-t th{padding:1px 8px;font:12px sans-serif;text-align:left}</style>"
)


def thumb_uri(path: str | Path, size: int = THUMB) -> str | None:
    """A ``data:image/jpeg;base64,...`` thumbnail of an image file (EXIF orientation applied), None if unreadable."""
    from PIL import Image

    from lookalike.errors import ImageError
    from lookalike.images import decode, read_file

    try:
        img, _ = decode(read_file(path), str(path), target=size)
    except (ImageError, OSError, ValueError):
        return None
    img = img.convert("RGB")
    img.thumbnail((size, size), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def safe(draw: Callable[..., str]) -> Callable[..., str]:
    """A display never ends a cell with a traceback: whatever goes wrong drawing it becomes one line of HTML (the
    value itself is unchanged, and its plain ``repr`` is one ``print`` away)."""

    @functools.wraps(draw)
    def wrapper(*args: Any, **kwargs: Any) -> str:
        try:
            return draw(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a picture is not worth a traceback
            return page(note(f"(lookalike could not draw this: {_e(type(exc).__name__)}: {_e(exc)})"))

    return wrapper


def _e(x: Any) -> str:
    return html.escape(str(x))


def _link(path: str | Path) -> str:
    try:
        return Path(path).resolve().as_uri()
    except ValueError:
        return ""


def tile(path: str | Path | None, caption: Sequence[str] = (), *, thumb: bool = True) -> str:
    """One thumbnail with caption lines (already HTML) under it, linked to the file."""
    name = Path(path).name if path is not None else ""
    uri = thumb_uri(path) if (thumb and path is not None) else None
    pic = (
        f"<img src='{uri}' alt='{_e(name)}' title='{_e(path)}'>"
        if uri
        else f"<div class='lk-miss' title='{_e(path)}'>{'no preview' if thumb else '…'}</div>"
    )
    if path is not None and (href := _link(path)):
        pic = f"<a href='{_e(href)}' target='_blank'>{pic}</a>"
    lines = "".join(f"<div>{c}</div>" for c in caption)
    return f"<div class='lk-tile'>{pic}{lines}</div>"


def gallery(items: Iterable[tuple[str | Path | None, Sequence[str]]], *, title: str = "", budget: list[int]) -> str:
    """Tiles of ``items`` (path, caption lines), drawing thumbnails while the shared ``budget[0]`` lasts."""
    tiles = []
    for path, caption in items:
        tiles.append(tile(path, caption, thumb=budget[0] > 0))
        budget[0] -= 1
    head = f"<div class='lk-h'>{title}</div>" if title else ""
    return f"{head}<div class='lk-grid'>{''.join(tiles)}</div>"


def page(body: str) -> str:
    return f"<div class='lookalike'>{_STYLE}{body}</div>"


def note(text: str) -> str:
    return f"<div class='lk-note'>{text}</div>"


# --- search results -------------------------------------------------------------------------------------------


class Matches(list):
    """The matches of one search, best first: a plain list (index, slice, len, compare) that a notebook shows as
    thumbnails with score, rank and label."""

    def _repr_html_(self) -> str:
        return matches_html(list(self))


@safe
def matches_html(matches: Sequence[Any], title: str = "") -> str:
    if not matches:
        return page(note("No matches." + (f" {_e(title)}" if title else "")))
    budget = [MAX_THUMBS]
    shown = matches[:MAX_THUMBS]
    body = gallery(
        (
            (
                m.path,
                [
                    f"#{m.rank} <b>{m.score:.3f}</b>"
                    + (f" · {m.inliers} inliers" if m.inliers is not None else "")
                    + _copies(getattr(m, "folded", None)),
                    _e(m.label) if m.label is not None else "",
                    _e(m.name),
                ],
            )
            for m in shown
        ),
        title=_e(title),
        budget=budget,
    )
    if len(matches) > len(shown):
        body += note(f"… and {len(matches) - len(shown)} more")
    return page(body)


def _copies(folded: Sequence[int] | None) -> str:
    """ " · and 3 copies" for a collapsed match with copies folded into it (``search(..., collapse=True)``)."""
    return f" · and {len(folded)} {'copy' if len(folded) == 1 else 'copies'}" if folded else ""


# --- predictions ----------------------------------------------------------------------------------------------


class Predictions(list):
    """Predictions of several images: a plain list that a notebook shows as thumbnails with class probabilities."""

    @classmethod
    def of(cls, preds: Iterable[Any], sources: Iterable[Any]) -> Predictions:
        """The predictions, each with ``path`` set to its query's file (None for an image or a vector)."""
        out = cls(preds)
        for p, src in zip(out, sources, strict=True):
            p.path = str(src) if isinstance(src, str | os.PathLike) else None
        return out

    def _repr_html_(self) -> str:
        return predictions_html(list(self))


def _bars(probabilities: dict[str, float], top: int = 5) -> str:
    rows = sorted(probabilities.items(), key=lambda kv: -kv[1])[:top]
    return "".join(
        f"<div style='text-align:left'><span style='display:inline-block;background:#4a90d9;height:8px;"
        f"width:{max(1, round(60 * p))}px'></span> {_e(c)} {p:.2f}</div>"
        for c, p in rows
    )


@safe
def predictions_html(preds: Sequence[Any]) -> str:
    if not preds:
        return page(note("No predictions."))
    budget = [MAX_THUMBS]
    shown = preds[:MAX_ROWS]
    body = gallery(
        ((getattr(p, "path", None), [f"<b>{_e(p.label)}</b> {p.probability:.2f}", _bars(p.probabilities)])
         for p in shown),
        budget=budget,
    )  # fmt: skip
    if len(preds) > len(shown):
        body += note(f"… and {len(preds) - len(shown)} more")
    return page(body + note(f"method: {_e(preds[0].method)}"))


def prediction_html(pred: Any) -> str:
    return predictions_html([pred])


# --- clusters and duplicates ------------------------------------------------------------------------------------


@safe
def cluster_html(result: Any, *, per_cluster: int = 8, clusters: int = 5) -> str:
    """The largest clusters, a few thumbnails each, and the counts."""
    root = getattr(result, "root", None)
    found = sorted(result.clusters(), key=lambda c: -c["size"])
    noise = int((result.labels < 0).sum())
    head = note(f"{len(found)} clusters of {len(result.names)} images ({_e(result.method)}), {noise} noise")
    if not found:
        return page(head + note("No clusters."))
    budget = [MAX_THUMBS]
    body = [head]
    for c in found[:clusters]:
        items = [((Path(root) / p) if root else None, [_e(Path(p).name)]) for p in c["paths"][:per_cluster]]
        more = f" (first {per_cluster})" if c["size"] > per_cluster else ""
        body.append(gallery(items, title=f"cluster {c['id']}: {c['size']} images{more}", budget=budget))
    if len(found) > clusters:
        body.append(note(f"… and {len(found) - clusters} smaller clusters (<code>result.to_dict()</code>)"))
    return page("".join(body))


@safe
def plan_html(plan: dict[str, Any], *, groups: int = 6) -> str:
    """A dedupe plan (``Plan.to_dict()``, the JSON ``make_plan`` gives) group by group, keeper first."""
    root = Path(plan.get("root", "."))
    found = plan.get("groups", [])
    s = plan.get("summary", {})
    head = note(
        f"{s.get('groups', len(found))} groups of copies; {s.get('remove', 0)} files to remove "
        f"({s.get('bytes', 0) / 1e6:.1f} MB); keep rule <b>{_e(plan.get('keep', '?'))}</b>. Nothing has moved."
    )
    if not found:
        return page(head + note("No copies found."))
    budget = [MAX_THUMBS]
    body = [head]
    for g in found[:groups]:
        items = [
            (root / f["path"], [("<b>keep</b>" if f["role"] == "keep" else "remove"), _e(Path(f["path"]).name)])
            for f in g["files"][:8]
        ]
        body.append(gallery(items, title=f"group {g['id']}: {_e(g.get('why', ''))}", budget=budget))
    if len(found) > groups:
        body.append(note(f"… and {len(found) - groups} more groups"))
    return page("".join(body))


# --- leaks, evaluation, uniqueness ------------------------------------------------------------------------------


@safe
def leaks_html(report: Any, *, rows: int = 12) -> str:
    counts = ", ".join(f"{n} {k}" for k, n in report.counts().items() if n)
    head = note(
        f"<b>{len(report.leaks)}</b> of {report.checked} test images have a copy in the index"
        + (f" ({counts})" if counts else "")
        + f"; {len(report.within_test)} copy pairs inside the test set."
    )
    if not report.leaks and not report.within_test:
        return page(head + note("No leaks found."))
    budget = [MAX_THUMBS]
    body = [head]
    test_root, index_root = Path(report.test_root), Path(report.index_root)
    for x in report.leaks[:rows]:
        t = x["twins"][0]
        how = _e(t["kind"] + (f" ({t['turn']})" if "turn" in t else ""))
        pix = f", pixel {t['pixel']:.2f}" if t.get("pixel") is not None else ""
        items = [
            (test_root / x["path"], ["test", _e(x["path"])]),
            (index_root / t["name"], [f"{how}: cosine {t['cosine']:.3f}{pix}", _e(t["name"])]),
        ]
        body.append(gallery(items, budget=budget))
    if len(report.leaks) > rows:
        body.append(note(f"… and {len(report.leaks) - rows} more (<code>report.to_dict()</code>)"))
    for w in report.within_test[: max(0, rows // 2)]:
        items = [(test_root / w["a"], [_e(w["a"])]), (test_root / w["b"], [f"{_e(w['kind'])}", _e(w["b"])])]
        body.append(gallery(items, title="inside the test set", budget=budget))
    return page("".join(body))


@safe
def metrics_html(m: dict[str, Any]) -> str:
    """Evaluation figures: all test images and, after the leak check, the leak-free ones side by side."""

    def cells(x: dict[str, Any]) -> str:
        if not x or x.get("n", 0) == 0 or "accuracy" not in x:
            return "<td>–</td>" * 6
        return (
            f"<td>{x['n']}</td><td>{x['accuracy']:.3f}</td><td>{x['macro_f1']:.3f}</td>"
            f"<td>{x['recall_at']['1']:.3f}</td><td>{x['map_at_r']:.3f}</td><td>{x['ece']:.3f}</td>"
        )

    rows = f"<tr><td>all test images</td>{cells(m)}</tr>"
    if "leak_free" in m:
        rows += f"<tr><td>leak-free test images</td>{cells(m['leak_free'])}</tr>"
    table = (
        "<table class='lk-t'><tr><th></th><th>n</th><th>accuracy</th><th>macro-F1</th><th>R@1</th><th>MAP@R</th>"
        f"<th>ECE</th></tr>{rows}</table>"
    )
    extra = note(f"method {_e(m.get('method', '?'))}")
    leaks = getattr(m, "leaks", None)
    if leaks is not None:
        return page(table + extra) + leaks_html(leaks)
    if "leaks" not in m:
        extra += note("leak check skipped")
    return page(table + extra)


@safe
def uniqueness_html(result: Any, *, top: int = 12) -> str:
    if not len(result.scores):
        return page(note("No images."))
    budget = [MAX_THUMBS]
    root = Path(result.root)
    body = [note(f"uniqueness of {len(result.scores)} images (k = {result.k}); 0 = has a copy, 1 = most isolated")]
    for title, rows in (("most redundant", result.most_redundant(top)), ("most isolated", result.most_isolated(top))):
        items = [(root / result.names[i], [f"<b>{result.scores[i]:.3f}</b>", _e(result.names[i])]) for i in rows]
        body.append(gallery(items, title=title, budget=budget))
    return page("".join(body))
