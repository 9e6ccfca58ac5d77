"""The opened index as the routes use it: :class:`Service`, loaded once per process.

It holds the index with its model, FAISS searcher and lookup tables (all loaded at start-up, so the first request is
not the slow one), the thumbnail cache, and what the pages read from files other commands write (the clusters, the
duplicates plan, the map), each a :class:`~lookalike.server.stamped.Stamped` value made again when its files change.
Queries go through the one query path (:mod:`lookalike.query`), searches and classification through the facade.
Inference runs in worker threads behind a capacity limiter (:meth:`Service.run`): the event loop keeps serving pages,
thumbnails and health checks while the CPU works, and at most ``workers`` model calls compete for the cores.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_thread
import numpy as np
from fastapi import HTTPException
from PIL import Image
from pydantic import ValidationError

from lookalike.errors import LookalikeError
from lookalike.filters import SCORE_DECIMALS, SearchFilter
from lookalike.images import IMAGE_EXTENSIONS, decode
from lookalike.index import MODES, Index
from lookalike.query import PreparedQuery, from_bytes, from_id
from lookalike.server import replies
from lookalike.server.schema import json_body, reply_content
from lookalike.server.stamped import Stamped
from lookalike.server.thumbnails import ThumbnailCache, preview_url
from lookalike.store import CLUSTERS_FILE, DECISIONS_FILE, MAP_FILE, UNIQUENESS_FILE

if TYPE_CHECKING:
    from lookalike.dedupe.plan import Plan

log = logging.getLogger("lookalike.server")

T = TypeVar("T")
MAX_K = 100
MAX_RERANK = 200
NO_CLUSTERS: dict[str, Any] = {"available": False, "clusters": [], "noise": [], "metrics": {}}


class Service:
    """Everything a request needs, loaded once: the index, its model, lookups by id/hash/name, the thumbnail cache."""

    def __init__(self, index: Index, *, workers: int | None = None, thumb_cache: int = 2048) -> None:
        self.index = index
        self.names: list[str] = index.names
        self.paths: list[Path] = index.paths
        self.labels: list[str | None] = index.labels
        self.classes: list[str] = index.classes
        self.hashes: list[str] = index.hashes
        self.by_name = {n: i for i, n in enumerate(self.names)}
        self.vectors = index.vectors
        self.model_name = index.config.model
        if len(index):  # an empty index (every photo removed) is served too: its page says what to run
            index.searcher  # noqa: B018 - builds the FAISS index now, not inside the first request
        self.resolution = index.describer.resolution  # loads the model now
        index.embed([Image.new("RGB", (64, 64), (127, 127, 127))])  # first inference allocates; do it at start-up
        self.can_classify = len(self.classes) >= 2
        if self.can_classify:
            self.predict(from_id(index, 0), quiet=True)  # loads (or attaches) the classifier head now
        self.thumbs = ThumbnailCache(index.folder, self.paths, self.hashes, capacity=thumb_cache)
        self.limiter = anyio.CapacityLimiter(workers or os.cpu_count() or 1)
        folder = index.folder
        self._clusters = Stamped(self._make_clusters, folder / CLUSTERS_FILE)
        self._sheets: Stamped[dict[int, bytes]] = Stamped(dict, folder / CLUSTERS_FILE)
        self._dups = Stamped(self._make_duplicates, folder / DECISIONS_FILE)
        self._map = Stamped(self._make_map, folder / MAP_FILE, folder / CLUSTERS_FILE, folder / UNIQUENESS_FILE)
        self.commit = index.commit  # the committed state this snapshot serves (see server/live.py)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run CPU work in a worker thread, at most ``workers`` at once, so the event loop is never blocked."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)

    # --- ids -----------------------------------------------------------------------------------------------------

    def why_no_classifier(self) -> str:
        n = len(self.classes)
        have = "no labels" if n == 0 else f"only one class ({self.classes[0]})"
        return (
            f"this index cannot classify: it has {have}, and a classifier needs two or more; build it with "
            "`lookalike index PHOTOS --labels folders` from one folder per class"
        )

    def check_id(self, image_id: int) -> int:
        n = len(self.names)
        if not 0 <= image_id < n:
            known = f"ids run from 0 to {n - 1}" if n else "the index is empty"
            raise HTTPException(404, f"no image with id {image_id}; {known}")
        return image_id

    def why_empty(self) -> str:
        return (
            f"the index at {self.index.folder} has no images: add photos to {self.index.root} and run "
            "`lookalike index` on it"
        )

    def describe_id(self, image_id: int) -> dict[str, Any]:
        return {
            "id": image_id,
            "name": self.names[image_id],
            "label": self.labels[image_id],
            "thumbnail": f"/api/thumbnails/{image_id}",
            "image": f"/api/images/{image_id}",
        }

    # --- queries -------------------------------------------------------------------------------------------------

    def upload_query(self, data: bytes, filename: str) -> tuple[PreparedQuery, dict[str, Any]]:
        """An uploaded image, decoded and embedded (:func:`lookalike.query.from_bytes`); a byte-identical copy of an
        indexed image is its self id, left out of its matches and its vote."""
        q = from_bytes(self.index, data, filename)
        assert q.image is not None and q.meta is not None
        info: dict[str, Any] = {
            "id": None,
            "name": filename,
            "label": None,
            "width": q.meta.width,
            "height": q.meta.height,
            "preview": preview_url(q.image),
        }
        if q.self_ids:
            info["same_as"] = q.self_ids
        return q, info

    def id_query(self, image_id: int) -> tuple[PreparedQuery, dict[str, Any]]:
        """An indexed image as a query: its stored vector (no decode, no model) and itself excluded from the matches."""
        return from_id(self.index, image_id), self.describe_id(image_id)

    def search(
        self,
        q: PreparedQuery,
        query: dict[str, Any],
        k: int,
        mode: str,
        label: str | None,
        where: SearchFilter | None = None,
        rerank: int = 0,
        data: bytes | None = None,
        collapse: bool = False,
    ) -> dict[str, Any]:
        image = None
        if rerank and data is not None:
            # An upload is verified from its own pixels at the local features' resolution. WHY a second decode of
            # the bytes (read once): ``decode`` draft-scales a JPEG to the size asked, and the model's resolution
            # and the features' differ, so one decode for both would change either the vector or the keypoints.
            image = decode(data, query.get("name") or "upload", target=self.index.features.conf.resolution)[0]
        result = self.index.search_many(
            [q],
            k,
            mode=mode,
            label=label,
            where=where or None,
            rerank=rerank,
            query_images=[image] if rerank else None,
            collapse=collapse,
        )[0]
        out: dict[str, Any] = {
            "query": query,
            "mode": mode,
            "k": k,
            "rerank": rerank,
            "query_class": result.query_class,
            "class_source": result.class_source,
            "filter": result.filter,
            "note": result.note,
            "matches": [
                {
                    **self.describe_id(m.id),
                    "rank": m.rank,
                    "score": round(m.score, SCORE_DECIMALS),
                    "inliers": m.inliers,
                }
                | ({"folded": m.folded} if m.folded is not None else {})
                for m in result.matches
            ],
            "prediction": self.predict(q, quiet=True),
        }
        if collapse:
            out["collapse"] = True
        return out

    def match_pair(self, a: int, b: int) -> dict[str, Any]:
        return self.index.match_pair(self.check_id(a), self.check_id(b))

    def match_png(self, a: int, b: int) -> bytes:
        from lookalike.plots import match_png

        pair = self.match_pair(a, b)
        title = (
            f"{self.names[a]}  ↔  {self.names[b]}: {pair['inliers']} inliers of {pair['tentative']} ({pair['status']})"
        )
        sizes = (tuple(pair["size_a"]), tuple(pair["size_b"]))
        return match_png(self.paths[a], self.paths[b], pair["matches"], sizes, title=title)  # type: ignore[arg-type]

    def predict(self, q: PreparedQuery, *, quiet: bool = False) -> dict[str, Any] | None:
        """The room type with per-class probabilities (``Index.classify`` on the prepared query: its self ids do not
        vote); None when the index cannot classify and ``quiet``."""
        if quiet and not self.can_classify:
            return None
        try:
            return self.index.classify([q])[0].to_dict()
        except LookalikeError:
            if quiet:
                return None
            raise
        except Exception:
            if quiet:  # a search must not fail because the classifier did
                log.exception("classification failed")
                return None
            raise

    # --- clusters ------------------------------------------------------------------------------------------------

    def clusters(self) -> dict[str, Any]:
        """The index's saved clustering (``lookalike cluster``) with paths turned into ids; reread when it changes."""
        return self._clusters.get()[0]

    def clusters_json(self) -> bytes:
        """:meth:`clusters` as the reply body, rendered once per clustering: at 100,000 ids, validating and encoding
        it on every request would cost more than the request."""
        return self._clusters.get()[1]

    def _make_clusters(self) -> tuple[dict[str, Any], bytes]:
        data = cluster_reply(self.index, self.by_name, self.labels)
        try:
            data = reply_content(replies.ClustersReply, data) if data else None
        except ValidationError as exc:  # a file holding other than what `lookalike cluster` writes
            log.warning("clusters not shown: %s in %s", exc, CLUSTERS_FILE)
            data = None
        data = data or reply_content(replies.ClustersReply, NO_CLUSTERS)
        return data, json_body(data)

    def cluster_sheet(self, cluster_id: int) -> bytes:
        """A PNG contact sheet of one cluster (``lookalike.cluster.contact_sheet``), kept until the clusters change."""
        data = self.clusters()
        cluster = next((c for c in data["clusters"] if c["id"] == cluster_id), None)
        if cluster is None:
            known = ", ".join(str(c["id"]) for c in data["clusters"][:20]) or "none: run `lookalike cluster`"
            raise HTTPException(404, f"no cluster {cluster_id} in this index (clusters: {known})")
        sheets = self._sheets.get()
        if cluster_id not in sheets:
            from lookalike.cluster import contact_sheet

            with tempfile.TemporaryDirectory() as tmp:
                title = f"cluster {cluster_id}: {cluster['size']} images"
                out = contact_sheet([self.paths[i] for i in cluster["ids"]], Path(tmp) / "sheet.png", title=title)
                sheets[cluster_id] = out.read_bytes()
        return sheets[cluster_id]

    # --- duplicates ----------------------------------------------------------------------------------------------

    def duplicates(self) -> dict[str, Any]:
        """A dry-run plan (``lookalike.dedupe.build_plan``) with ids for the page; recomputed when decisions change.
        The page shows it and can download a plan; nothing here moves or deletes a file."""
        return self._dups.get()[1]

    def duplicates_json(self) -> bytes:
        """:meth:`duplicates` as the reply body, validated and rendered once per plan (see :meth:`clusters_json`)."""
        return self._dups.get()[2]

    def _make_duplicates(self) -> tuple[Plan, dict[str, Any], bytes]:
        from lookalike.dedupe import build_plan

        plan = build_plan(self.index)
        reply = duplicates_reply(plan, self.by_name)  # a plan the schema does not describe is a 500 here
        return plan, reply, json_body(reply)

    def decide(self, kind: str, ids: list[int]) -> dict[str, Any]:
        from lookalike.dedupe import decide

        item = decide(self.index, kind, [self.paths[self.check_id(i)] for i in ids])
        return {"kind": item["kind"], "names": item["names"]}

    def plan_with(self, keepers: list[int]) -> Plan:
        """The current plan with the keepers a person chose (ids), as a file to hand to ``dedupe apply``."""
        from lookalike.dedupe import build_plan

        plan = self._dups.get()[0]
        groups = [
            {"paths": [f.path for f in g.files], "min_score": g.min_score, "max_score": g.max_score,
             **({"decision": "keep-all"} if g.action == "keep-all" else {})}
            for g in plan.groups
        ]  # fmt: skip
        chosen = {self.names[self.check_id(i)] for i in keepers}
        return build_plan(self.index, plan.keep, groups=groups, keepers=chosen)

    def plan_json(self, keepers: list[int]) -> bytes:
        """:meth:`plan_with` as the file sent: checked against its reply model like every JSON reply."""
        return json_body(reply_content(replies.Plan, self.plan_with(keepers).to_dict()))

    # --- the map -------------------------------------------------------------------------------------------------

    def _make_map(self) -> tuple[dict[str, Any], bytes]:
        return map_state(self.index, len(self.names))

    def map_meta(self) -> dict[str, Any]:
        return self._map.get()[0]

    def map_points(self) -> bytes:
        meta, blob = self._map.get()
        if not meta["available"]:
            raise HTTPException(404, meta["reason"])
        return blob

    def selection(self, ids: list[int]) -> list[str]:
        for i in ids:
            self.check_id(i)
        return [str(self.paths[i]) for i in ids]

    def selection_sheet(self, ids: list[int]) -> bytes:
        from lookalike.cluster import contact_sheet

        paths = [Path(p) for p in self.selection(ids)]
        with tempfile.TemporaryDirectory() as tmp:
            title = f"{len(ids)} selected images" + (" (the first 64)" if len(ids) > 64 else "")
            return contact_sheet(paths[:64], Path(tmp) / "sheet.png", title=title).read_bytes()

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "images": len(self.names),
            "model": self.model_name,
            "classes": self.classes,
            "classify": self.can_classify,
            "clusters": self.clusters()["available"],
            "map": self.map_meta()["available"],
            "modes": list(MODES),
            "max_k": MAX_K,
            "formats": sorted(IMAGE_EXTENSIONS),
            "commit": self.commit,
        }


def duplicates_reply(plan: Plan, by_name: dict[str, int]) -> dict[str, Any]:
    """The plan's JSON object (``Plan.to_dict``, what ``dedupe plan`` writes) with each file's id and thumbnail."""
    out = plan.to_dict()
    for g in out["groups"]:
        for f in g["files"]:
            f["id"] = by_name[f["path"]]
            f["thumbnail"] = f"/api/thumbnails/{f['id']}"
    return reply_content(replies.DuplicatesReply, out)


def cluster_reply(index: Index, by_name: dict[str, int], labels: list[str | None]) -> dict[str, Any] | None:
    """The index's saved clustering as ids of this index (a file gone since is left out); None when there is none."""
    from lookalike.cluster import load_clusters

    try:
        raw = load_clusters(index)
    except LookalikeError as exc:
        log.warning("clusters not shown: %s", exc)
        return None
    if not raw:
        return None
    root = index.root

    def ids_of(paths: list[str]) -> list[int]:
        ids = []
        for p in paths:
            name = str(p)
            if os.path.isabs(name):
                try:
                    name = Path(name).relative_to(root).as_posix()
                except ValueError:
                    continue
            if name in by_name:
                ids.append(by_name[name])
        return ids

    clusters = []
    for c in raw.get("clusters", []):
        ids = ids_of(c.get("paths", []))
        if ids:
            counts = Counter(labels[i] for i in ids if labels[i] is not None)
            clusters.append(
                {"id": c.get("id"), "size": len(ids), "ids": ids, "labels": dict(counts.most_common()),
                 "gps": c.get("gps")}
            )  # fmt: skip
    metrics = raw.get("metrics") or {}
    return {
        "available": True,
        "clusters": clusters,
        "noise": ids_of(raw.get("noise", [])),
        # the figures the reply documents: a file from another version may hold others, which are not sent
        "metrics": {k: v for k, v in metrics.items() if k in replies.ClusterMetrics.model_fields},
    }


def map_state(index: Index, count: int) -> tuple[dict[str, Any], bytes]:
    """The map's description and its points as one binary block (see :mod:`lookalike.explore`).

    Binary, not JSON: at 100,000 images the points are 0.8 MB of float32 x, y plus 2 bytes per image per
    colouring, which the page wraps in typed arrays without parsing, where JSON would be several times larger
    and slow to parse.
    """
    from lookalike.cluster import load_clusters
    from lookalike.explore import COLORS, RAMPS, color_codes, load_map

    found, why = load_map(index)
    if found is None:
        return {"available": False, "reason": why, "count": count}, b""
    raw_clusters = None
    try:
        raw_clusters = load_clusters(index)
    except LookalikeError as exc:
        log.warning("map not coloured by cluster: %s", exc)
    parts = [np.ascontiguousarray(found.xy, np.float32).tobytes()]
    colorings = {}
    for color in COLORS:
        codes, legend = color_codes(index, color, raw_clusters)
        parts.append(codes.astype("<u2").tobytes())
        colorings[color] = {"legend": legend, "kind": "ramp" if color in RAMPS else "categories"}
    blob = b"".join(parts)
    meta = {
        "available": True,
        "count": len(found.xy),
        "method": found.method,
        "color": found.color,
        # what the reply documents: a map file from another version may record more, which is not sent
        "info": {k: v for k, v in found.info.items() if k in replies.MapInfo.model_fields},
        "colorings": colorings,
        "suspects": found.suspects,
        "suspects_checked": bool(found.info.get("suspects_checked")),
        "points": {
            "url": "/api/map/points",
            "bytes": len(blob),
            "layout": ["xy float32 little-endian, x0 y0 x1 y1 ...", *[f"{c} uint16" for c in COLORS]],
            "order": list(COLORS),
        },
    }
    try:
        return reply_content(replies.MapReply, meta), blob
    except ValidationError as exc:  # a header holding other than what `lookalike map` writes
        log.warning("map not shown: %s", exc)
        why = f"the stored map is unreadable ({exc.error_count()} wrong fields): run `lookalike map` again"
        return {"available": False, "reason": why, "count": count}, b""
