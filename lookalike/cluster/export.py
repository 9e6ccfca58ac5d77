"""Export of a clustering as folders a person can browse: ``cluster_0001/…`` (and ``noise/``), one contact sheet per
cluster, ``clusters.json`` and an ``index.html`` page; re-running updates the folder in place (see the marker)."""

from __future__ import annotations

import html
import json
import os
import shutil
from pathlib import Path
from typing import Any

from lookalike.cluster.run import ClusterResult
from lookalike.errors import ConfigError, LookalikeError
from lookalike.io import EXPORT_MARKER, atomic_write, atomic_write_json, shown_json
from lookalike.store import CLUSTERS_FILE

# EXPORT_MARKER (lookalike.io) is written into an export folder: what the last export wrote there, so a re-run can
# update it, a folder without it (somebody else's) is never written into, and indexing the photos never takes the
# export's copies and contact sheets for new photos.
EXPORT_MODES = ("copy", "symlink", "hardlink")


def contact_sheet(
    paths: list[Path],
    out: str | os.PathLike[str],
    *,
    title: str = "",
    thumb: int = 128,
    columns: int = 8,
    limit: int = 64,
) -> Path:
    """One PNG of a cluster's thumbnails (first ``limit``), so a person can judge a cluster at a glance (another image
    format if ``out`` names one, e.g. ``.jpg``)."""
    from PIL import Image, ImageDraw

    from lookalike.plots import thumbnail

    shown = paths[:limit]
    cols = max(1, min(columns, len(shown)))
    rows = max(1, -(-len(shown) // cols))
    head = 22 if title else 0
    sheet = Image.new("RGB", (cols * (thumb + 4) + 4, rows * (thumb + 4) + 4 + head), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    if title:
        extra = f"  (first {limit} of {len(paths)})" if len(paths) > limit else ""
        draw.text((6, 5), title + extra, fill=(0, 0, 0))
    for i, p in enumerate(shown):
        tile = Image.fromarray(thumbnail(p, thumb))
        x = 4 + (i % cols) * (thumb + 4) + (thumb - tile.width) // 2
        y = head + 4 + (i // cols) * (thumb + 4) + (thumb - tile.height) // 2
        sheet.paste(tile, (x, y))
    out = Path(out)
    fmt = Image.registered_extensions().get(out.suffix.lower(), "PNG")
    return atomic_write(out, lambda tmp: sheet.save(tmp, format=fmt))


def _same_file(src: Path, dst: Path, mode: str) -> bool:
    if not dst.exists() and not dst.is_symlink():
        return False
    if mode == "symlink":
        return dst.is_symlink() and os.readlink(dst) == str(src)
    if dst.is_symlink():
        return False
    a, b = src.stat(), dst.stat()
    if mode == "hardlink":
        return a.st_ino == b.st_ino and a.st_dev == b.st_dev
    return a.st_size == b.st_size and int(a.st_mtime) == int(b.st_mtime)


def _place(src: Path, dst: Path, mode: str) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    if mode == "symlink":
        dst.symlink_to(src)
    elif mode == "hardlink":
        try:
            os.link(src, dst)
        except OSError as exc:
            raise LookalikeError(
                f"cannot hard-link {src} into {dst.parent} ({exc.strerror}); hard links need the same file system — "
                "export with symbolic links or copies instead"
            ) from None
    else:
        shutil.copy2(src, dst)


def _previous_export(out: Path, marker: Path) -> set[str]:
    """The files the last export to ``out`` wrote (its marker); refuses a folder that is not an export of ours."""
    if out.exists() and not out.is_dir():
        raise LookalikeError(f"export folder {out} is a file; give a folder (new, empty, or one lookalike exported to)")

    def ours(p: Path) -> bool:  # the marker's own temporary file: an export killed while writing the marker
        return p.name.startswith(f".{marker.name}.") and p.name.endswith(".tmp")

    if out.is_dir() and any(not ours(p) for p in out.iterdir()) and not marker.is_file():
        raise LookalikeError(
            f"export folder {out} exists and was not written by lookalike (no {EXPORT_MARKER}); "
            "choose a new or empty folder so none of your files are overwritten"
        )
    try:
        return set(json.loads(marker.read_text()).get("files", [])) if marker.is_file() else set()
    except (OSError, ValueError):
        return set()


def _wanted(data: dict[str, Any], root: Path) -> tuple[dict[str, Path], list[str]]:
    """Where each photo goes in the export (cluster folder or ``noise/``), and the photos no longer on disk."""
    wanted: dict[str, Path] = {}
    for c in data["clusters"]:
        for name in c["paths"]:
            wanted[f"cluster_{c['id']:04d}/{name}"] = root / name
    for name in data["noise"]:
        wanted[f"noise/{name}"] = root / name
    missing = [rel for rel, src in wanted.items() if not src.is_file()]
    for rel in missing:
        del wanted[rel]
    return wanted, missing


def _write_sheets(data: dict[str, Any], root: Path, out: Path) -> list[str]:
    made = []
    for c in data["clusters"]:
        rel = f"sheets/cluster_{c['id']:04d}.png"
        contact_sheet([root / p for p in c["paths"]], out / rel, title=f"cluster {c['id']}: {c['size']} photos")
        made.append(rel)
    return made


def export_clusters(
    result: ClusterResult | dict[str, Any],
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    mode: str = "copy",
    sheets: bool = True,
) -> dict[str, Any]:
    """Write ``out_dir/cluster_0001/<relative path>`` (noise under ``noise/``), ``clusters.json``, one contact sheet
    per cluster (``sheets/cluster_0001.png``) and ``index.html``.

    Idempotent: a marker file lists what the last export wrote; a re-run removes files no longer wanted (a photo
    that moved to another cluster), leaves unchanged ones alone and adds the rest, so nothing is duplicated or lost.
    A folder that exists, is not empty and has no marker is refused: it is somebody else's and we delete files."""
    if mode not in EXPORT_MODES:
        raise ConfigError(f"export mode must be one of {', '.join(EXPORT_MODES)}, got {mode!r}")
    data = result.to_dict() if isinstance(result, ClusterResult) else result
    root = Path(root).resolve()
    out = Path(out_dir)
    marker = out / EXPORT_MARKER
    previous = _previous_export(out, marker)
    wanted, missing = _wanted(data, root)
    # The marker goes first, naming every file this export may leave: killed half-way, the folder is still ours and
    # the same command resumes it (with the marker last, a kill made the folder "somebody else's" forever).
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        marker,
        {"format": 1, "root": str(root), "mode": mode, "files": sorted(previous | set(wanted)), "complete": False},
    )
    removed = 0
    for rel in sorted(previous - set(wanted)):
        p = out / rel
        if p.is_file() or p.is_symlink():
            p.unlink()
            removed += 1
    written = kept = 0
    for rel, src in wanted.items():
        dst = out / rel
        if _same_file(src, dst, mode):
            kept += 1
            continue
        _place(src, dst, mode)
        written += 1
    # empty folders left by removed files
    for d in sorted((p for p in out.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(d.iterdir()):
            d.rmdir()
    sheet_files = _write_sheets(data, root, out) if sheets else []
    atomic_write_json(out / CLUSTERS_FILE, shown_json(data))  # for people and other programs: readable names
    atomic_write(out / "index.html", _html(data))
    atomic_write_json(marker, {"format": 1, "root": str(root), "mode": mode, "files": sorted(wanted), "complete": True})
    return {
        "out": str(out),
        "files": len(wanted),
        "written": written,
        "unchanged": kept,
        "removed": removed,
        "missing": missing,
        "sheets": len(sheet_files),
    }


def _html(data: dict[str, Any]) -> str:
    rows = []
    for c in data["clusters"]:
        gps = f"{c['gps']['lat']:.6f}, {c['gps']['lon']:.6f}" if c.get("gps") else ""
        name = f"cluster_{c['id']:04d}"
        rows.append(
            f"<section><h2><a href='{name}/'>{name}</a> — {c['size']} photos"
            + (f" — GPS {html.escape(gps)}" if gps else "")
            + f"</h2><img src='sheets/{name}.png' alt='{name}' loading='lazy'></section>"
        )
    metrics = ", ".join(f"{k} {v}" for k, v in data.get("metrics", {}).items())
    return (
        "<!doctype html><meta charset='utf-8'><title>lookalike clusters</title>"
        "<style>body{font-family:sans-serif;margin:2em}img{max-width:100%}</style>"
        f"<h1>{len(data['clusters'])} clusters, {len(data['noise'])} unclustered</h1>"
        f"<p>{html.escape(metrics)}</p>" + "".join(rows) + "</html>\n"
    )
