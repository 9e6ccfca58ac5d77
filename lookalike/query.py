"""The one query path: a file, uploaded bytes, a PIL image, a vector or an indexed id become a :class:`PreparedQuery`
— one read, one decode, one embedding (batched over the queries), and the ids of index entries that *are* the query
(same file, or byte-identical content), which search and classification leave out.

The library (``Index.search``, ``Index.classify``), the CLI and the server all come through here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from lookalike.errors import LookalikeError
from lookalike.images import ImageMeta, content_hash, decode, read_file

if TYPE_CHECKING:
    from lookalike.verify import FeatureCache, Features
    from lookalike.view import IndexView


@dataclass
class PreparedQuery:
    """A query described as the index's images were: its vector (1, dim), the ids that are the query itself, and
    what was decoded (the image and its metadata; None for a vector or an indexed id)."""

    name: str
    vector: np.ndarray
    self_ids: list[int] = field(default_factory=list)
    image: Image.Image | None = None
    meta: ImageMeta | None = None
    path: Path | None = None


Query = str | os.PathLike[str] | Image.Image | np.ndarray | PreparedQuery
"""What the library accepts as a query: a file, a PIL image, a vector, or a query prepared already."""


def source(q: Query) -> str | os.PathLike[str] | Image.Image | np.ndarray:
    """What a query was made from: a prepared query's file (else its image, else its vector); others as they are."""
    if isinstance(q, PreparedQuery):
        return q.path or q.image or q.vector
    return q


def self_ids(view: IndexView, path: Path | None, data: bytes) -> list[int]:
    """Ids of index entries that are this file: byte-identical content, or the same file below the photo folder."""
    ids = set(view.hash_ids(content_hash(data)))
    if path is not None:
        with contextlib.suppress(ValueError):
            i = view.id_of(path.resolve().relative_to(view.root).as_posix())
            if i is not None:
                ids.add(i)
    return sorted(ids)


def _describe(view: IndexView, images: list[Image.Image]) -> list[np.ndarray]:
    return [v[None] for v in view.describer.describe_images(images)] if images else []


def prepare(view: IndexView, queries: Sequence[Query]) -> list[PreparedQuery]:
    """Each query read once (the bytes decoded are the bytes hashed) and all images embedded in one batch."""
    out: list[PreparedQuery] = []
    for q in queries:
        if isinstance(q, PreparedQuery):
            out.append(q)  # prepared already (e.g. by the server, with its self ids): passed through
        elif isinstance(q, np.ndarray):
            v = np.asarray(q, dtype=np.float32).reshape(1, -1)
            if v.shape[1] != view.dim:
                raise LookalikeError(f"query vector has {v.shape[1]} dims, the index has {view.dim}")
            out.append(PreparedQuery("<image>", v))
        elif isinstance(q, Image.Image):
            out.append(PreparedQuery("<image>", np.zeros((0,)), image=q.convert("RGB")))
        else:
            data = read_file(q)
            image, meta = decode(data, str(q), target=view.describer.decode_size)
            out.append(PreparedQuery(str(q), np.zeros((0,)), self_ids(view, Path(q), data), image, meta, Path(q)))
    todo = [p for p in out if p.image is not None and not len(p.vector)]
    for p, v in zip(todo, _describe(view, [p.image for p in todo if p.image is not None]), strict=True):
        p.vector = v
    return out


def from_bytes(view: IndexView, data: bytes, name: str) -> PreparedQuery:
    """An uploaded file: decoded and embedded; a byte-identical copy of an indexed image is its self id."""
    image, meta = decode(data, name, target=view.describer.decode_size)
    vector = _describe(view, [image.convert("RGB")])[0]
    return PreparedQuery(name, vector, sorted(view.hash_ids(content_hash(data))), image, meta)


def from_id(view: IndexView, image_id: int) -> PreparedQuery:
    """An indexed image as a query: its stored vector (no decode, no model); it and its byte-identical copies are
    its self ids."""
    ids = view.hash_ids(view.hashes[image_id]) or [image_id]
    return PreparedQuery(view.names[image_id], view.vectors[image_id : image_id + 1], list(ids))


def stacked(prepared: Sequence[PreparedQuery], dim: int) -> tuple[np.ndarray, list[list[int]]]:
    """The queries' vectors as one (n, dim) array, and their self ids."""
    vectors = np.concatenate([p.vector for p in prepared]) if prepared else np.zeros((0, dim), np.float32)
    return vectors, [list(p.self_ids) for p in prepared]


def local_features(cache: FeatureCache, q: Query, image: Image.Image | None, self_ids: Sequence[int]) -> Features:
    """Local features of a query for re-ranking, made as the index's were (``cache``): an indexed image's cached
    ones, else extracted from ``image`` (None: the query's own image or file)."""
    from lookalike.verify import extract

    if image is None and self_ids:
        feats = cache.get(self_ids[0])
        if feats is not None:
            return feats
    if image is None:
        if isinstance(q, Image.Image):
            image = q
        elif isinstance(q, np.ndarray):
            raise LookalikeError("re-ranking needs the query image, not only its vector")
        else:
            image = decode(read_file(q), str(q), target=cache.conf.resolution)[0]
    return extract(image, cache.conf)
