"""What tasks see of an opened index: :class:`IndexView`, a read-only protocol that :class:`lookalike.index.Index`
provides.

Tasks (classification, clustering, copies, evaluation, the map) take an ``IndexView``, never the facade: they read
vectors, names, paths, labels, content hashes, the config, the searcher and the index folder through it, and write
only their own files into that folder. The header (``meta.json``) is the store's and the write pipeline's
(:mod:`lookalike.build`); nothing here writes it. :class:`IndexWriter` adds the three writes the dedupe actions
need (the lock, an update, rows following moved files) and nothing else.

This module sits in a layer of its own below the tasks and above verification, search and the store, so it may
name their types (and the contract counts type-checking imports too).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from lookalike.config import IndexConfig, RunOptions
    from lookalike.embed import Describer
    from lookalike.filters import FilterColumns
    from lookalike.search import VectorSearch
    from lookalike.verify import FeatureCache, FeatureConf, FeatureEngine

__all__ = ["IndexInfo", "IndexView", "IndexWriter"]


@dataclass
class IndexInfo:
    """What ``lookalike info`` shows of an index (``Index.summary()``; ``Index.info()`` is its ``to_dict``)."""

    index: str
    root: str
    images: int
    model: str
    pooling: dict[str, Any]
    resolution: int
    dim: int
    post: dict[str, Any] | None
    vocab: dict[str, Any] | None
    labels: dict[str, int]
    unlabelled: int
    gps_tagged: int
    skipped: list[dict[str, str]]
    ignored: dict[str, int]
    left_out: list[dict[str, str]]
    interrupted_parts: int
    vectors: str
    precision: str
    calibration: str | None
    search: dict[str, Any]
    classifier: dict[str, Any] | None
    disk_bytes: int
    created: str | None
    updated: str | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class IndexView(Protocol):
    """An opened index as tasks read it. Row ``i`` of every list and array is the same image."""

    def __len__(self) -> int: ...

    @property
    def folder(self) -> Path:
        """The index folder (``.lookalike``): where tasks keep their own files (head, clusters, map, journals)."""
        ...

    @property
    def root(self) -> Path:
        """The photo folder the index covers."""
        ...

    @property
    def names(self) -> list[str]: ...

    @property
    def paths(self) -> list[Path]: ...

    @property
    def labels(self) -> list[str | None]: ...

    @property
    def classes(self) -> list[str]: ...

    @property
    def hashes(self) -> list[str]:
        """Content hashes (BLAKE2b of the file's bytes), one per image."""
        ...

    @property
    def vectors(self) -> np.ndarray: ...

    @property
    def dim(self) -> int: ...

    @property
    def config(self) -> IndexConfig: ...

    @property
    def created(self) -> str | None:
        """When the index was created: a rebuilt index is another index."""
        ...

    @property
    def version(self) -> int:
        """Changes whenever the index commits new contents: the key of caches derived from it."""
        ...

    @property
    def searcher(self) -> VectorSearch: ...

    @property
    def describer(self) -> Describer: ...

    @property
    def features(self) -> FeatureCache: ...

    @property
    def filter_columns(self) -> FilterColumns: ...

    def recipe(self) -> dict[str, Any]:
        """How the vectors were made (model, pooling, resolution, post-transform), as the header records it."""
        ...

    def vectors_fingerprint(self) -> str:
        """Identifies the current vectors (rows, their content and how they were made)."""
        ...

    def column(self, name: str) -> list[Any]: ...

    def metadata(self) -> pa.Table:
        """Every column but the vectors."""
        ...

    def hash_ids(self, digest: str) -> list[int]: ...

    def id_of(self, name: str) -> int | None:
        """The id of the image with this name (relative to the photo folder), if it is indexed."""
        ...

    def feature_cache(self, conf: FeatureConf | None = None, engine: FeatureEngine | None = None) -> FeatureCache: ...

    def orientation_vectors(self, *, progress: bool = False, notes: list[str] | None = None) -> np.ndarray: ...


class IndexWriter(IndexView, Protocol):
    """An index the dedupe actions may change: under its lock, bring it up to date or make rows follow files."""

    def lock(self) -> AbstractContextManager[None]: ...

    def update(self, options: RunOptions | None = None) -> Any: ...

    def follow_files(self, gone: set[str], linked: Sequence[tuple[str, str]] | None = None) -> bool:
        """Rows of files moved or deleted leave; a copy replaced by a link to its keeper (``(path, keeper)``)
        becomes a row like its keeper's (``linked`` given: a link run, always committed). Returns whether the
        index was committed."""
        ...
