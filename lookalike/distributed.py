"""The Ray engine: decode + embed on a Ray cluster (or a local Ray), producing exactly the local engine's batches.

``Index.build(..., engine="ray")`` swaps :meth:`Describer.describe_files` for :func:`ray_describe_files`; everything
else (which files to embed, checkpoints, skipped files, the store) stays in the driver and is unchanged, so an index
built on a cluster is the same index, row for row.

Each Ray actor rebuilds the describer from the index's config once (model, pooling, resolution, post-transform;
refusing different weights, as opening an index does) and then runs the very same ``describe_files`` code on its
share of the paths. Workers read the photos by path, so on a multi-machine cluster the photo folder (and the index
folder, for fitted poolings) must be mounted at the same path on every node.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.config import IndexConfig
from lookalike.embed import Batch, Describer, Prepared
from lookalike.errors import LookalikeError
from lookalike.images import ImageMeta

ENGINES = ("local", "ray")
INSTALL_HINT = 'the Ray engine needs Ray: pip install "lookalike[ray]"'


def require_ray() -> Any:
    """Import Ray or fail with one line that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 - the data extra, not just core Ray
    except ImportError:
        raise LookalikeError(INSTALL_HINT) from None
    return ray


class DescribeActor:
    """A Ray Data actor: loads the model once, then describes batches of paths (``path`` and ``known`` columns)."""

    def __init__(self, meta: dict[str, Any], index_path: str, runtime: str = "auto", threads: int = 1) -> None:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        # the driver checked the model's weights against the index before starting the actors
        self.describer = Describer.from_config(IndexConfig.from_meta(meta), folder=index_path, runtime=runtime)
        model = self.describer.model
        if getattr(model, "threads", threads) != threads:
            # size the runtime to the CPUs Ray gave this actor, so actors sharing a machine do not oversubscribe it
            model.threads = threads
            if getattr(model, "_session", None) is not None:
                model._session = model._onnx_session()
        self.dim = self.describer.dim

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [_path(p) for p in batch["path"]]
        known = {_path(p): (str(h) or None) for p, h in zip(batch["path"], batch["known"], strict=True)}
        items: list[Prepared] = []
        rows: list[np.ndarray] = []
        for b in self.describer.describe_files(paths, known_hashes=known.get, batch_size=len(paths), workers=1):
            items.extend(b.items)
            rows.append(b.vectors)
        return encode_items(items, np.concatenate(rows) if rows else np.zeros((0, self.dim), np.float32), self.dim)


def _path(value: Any) -> Path:
    """A path back from a Ray Data column: paths travel as their bytes on disk, since Arrow strings must be valid
    UTF-8 and a file name need not be."""
    return Path(os.fsdecode(value if isinstance(value, (bytes, str)) else bytes(value)))


def encode_items(items: Sequence[Prepared], vectors: np.ndarray, dim: int) -> dict[str, np.ndarray]:
    """Prepared items + their vectors -> Ray Data columns (one row per item; a zero vector where none was made)."""
    out = np.zeros((len(items), dim), np.float32)
    has = np.zeros(len(items), bool)
    info = []
    v = 0
    for j, it in enumerate(items):
        m = it.meta
        info.append(
            json.dumps(
                {
                    "hash": it.hash, "error": it.error, "unchanged": it.unchanged,
                    "meta": None if m is None else [m.width, m.height, m.exif_time, m.gps_lat, m.gps_lon],
                }
            )
        )  # fmt: skip
        if it.error is None and not it.unchanged and m is not None:
            out[j] = vectors[v]
            has[j] = True
            v += 1
    return {
        "path": np.array([os.fsencode(it.path) for it in items], dtype=object),
        "info": np.array(info, dtype=object),
        "has_vector": has,
        "vector": out,
    }


def decode_items(batch: dict[str, np.ndarray]) -> Batch:
    """Ray Data columns -> the :class:`Batch` the local engine yields (items in order, vectors for described ones)."""
    items: list[Prepared] = []
    for path, info in zip(batch["path"], batch["info"], strict=True):
        d = json.loads(str(info))
        meta = None if d["meta"] is None else ImageMeta(*d["meta"])
        items.append(Prepared(_path(path), hash=d["hash"], meta=meta, error=d["error"], unchanged=d["unchanged"]))
    has = np.asarray(batch["has_vector"], bool)
    vectors = np.asarray(batch["vector"], np.float32).reshape(len(items), -1)[has]
    described = [it for it, h in zip(items, has, strict=True) if h]
    return Batch(items=items, vectors=np.ascontiguousarray(vectors), described=described)


def start_ray(address: str | None = None, num_workers: int | None = None) -> bool:
    """Join ``address`` (``auto`` or ``ray://host:10001``) or start a local Ray; True if this call started it.

    An already initialised Ray (e.g. the caller's own) is used as it is and left running.
    """
    ray = require_ray()
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=num_workers or os.cpu_count() or 1, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        first = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else type(exc).__name__
        raise LookalikeError(f"could not start {where}: {first}") from None
    return True


def ray_describe_files(
    meta: dict[str, Any],
    index_path: Path,
    paths: Sequence[Path],
    *,
    known_hashes: Callable[[Path], str | None] | None = None,
    batch_size: int = 32,
    address: str | None = None,
    num_workers: int | None = None,
    runtime: str = "auto",
    progress: bool = False,
) -> Iterator[Batch]:
    """Like :meth:`Describer.describe_files`, run as Ray Data ``map_batches`` over a pool of describing actors.

    ``num_workers`` actors (default: one per CPU Ray has) each take one CPU. Batches come back as they finish (not
    in input order, which nothing downstream needs: the store sorts by path).
    """
    ray = require_ray()
    if not paths:
        return
    started = start_ray(address, num_workers)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        workers = max(1, min(num_workers or cpus, cpus, -(-len(paths) // batch_size)))
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = progress
        with _quiet_ray_data(ctx):
            items = [
                {"path": os.fsencode(p), "known": (known_hashes(p) if known_hashes else None) or ""} for p in paths
            ]
            ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items) // batch_size + 1, 4 * workers)))
            ds = ds.map_batches(
                DescribeActor,
                fn_constructor_kwargs={"meta": meta, "index_path": str(index_path), "runtime": runtime, "threads": 1},
                batch_size=batch_size,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=workers),
                num_cpus=1,
                max_restarts=0,  # a lost actor fails the run (resumable from checkpoints) rather than retrying silently
            )
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
                yield decode_items(batch)
    finally:
        if started:
            ray.shutdown()


class _quiet_ray_data:  # noqa: N801 - used as a context manager
    """Keep Ray Data's own console chatter (execution plans, progress) out of lookalike's one-line output."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.saved: dict[str, Any] = {}

    def __enter__(self) -> None:
        import logging
        import warnings

        self.warnings = warnings.catch_warnings()
        self.warnings.__enter__()
        warnings.simplefilter("ignore")  # e.g. "fewer input blocks than actors" on small updates
        self.loggers = {name: logging.getLogger(name).level for name in ("ray", "ray.data")}
        for name in self.loggers:
            logging.getLogger(name).setLevel(logging.ERROR)
        for name, value in (("print_on_execution_start", False), ("enable_operator_progress_bars", False)):
            if hasattr(self.ctx, name):
                self.saved[name] = getattr(self.ctx, name)
                setattr(self.ctx, name, value)

    def __exit__(self, *exc: object) -> None:
        import logging

        for name, value in self.saved.items():
            setattr(self.ctx, name, value)
        for name, level in self.loggers.items():
            logging.getLogger(name).setLevel(level)
        self.warnings.__exit__(*exc)


class RayFeatureEngine:
    """Local features and geometric verification as Ray tasks (``FeatureCache(engine=...)``): the same functions a
    local run calls (:func:`~lookalike.verify.local_features.extract_files`,
    :func:`~lookalike.verify.pairs.verify_files`), one CPU each, so the files and verdicts are the local ones.

    Workers read photos and feature files by path: on several machines the photo folder and the index folder must
    be mounted at the same path on every node (features are written by the driver, into the index folder, and read
    back by the verifying workers). Ray starts on first use (joining ``address``, or a local Ray of
    ``num_workers`` CPUs) and stops at :meth:`close` if this engine started it. At most two tasks per CPU are in
    flight, so memory does not grow with the collection."""

    def __init__(self, address: str | None = None, num_workers: int | None = None, *, chunk: int = 8) -> None:
        require_ray()
        self.address, self.num_workers, self.chunk = address, num_workers, chunk
        self._started: bool | None = None

    def _ray(self) -> Any:
        ray = require_ray()
        if self._started is None:
            self._started = start_ray(self.address, self.num_workers)
        return ray

    def close(self) -> None:
        if self._started:
            require_ray().shutdown()
        self._started = None

    def __enter__(self) -> RayFeatureEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]]) -> Iterator[Any]:
        """``fn(*job)`` for each job as Ray tasks, results yielded as they finish, a bounded number in flight."""
        ray = self._ray()
        remote = ray.remote(num_cpus=1, max_retries=0)(fn)
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        limit = 2 * min(cpus, self.num_workers or cpus)
        pending: list[Any] = []
        todo = iter(jobs)
        while True:
            for job in todo:
                pending.append(remote.remote(*job))
                if len(pending) >= limit:
                    break
            if not pending:
                return
            ready, pending = ray.wait(pending, num_returns=1)
            yield ray.get(ready[0])

    def extract(
        self, items: Sequence[tuple[int, str, str]], conf: Any
    ) -> Iterator[list[tuple[int, bytes | None, str]]]:
        from lookalike.verify.local_features import extract_files

        chunks = [(list(items[s : s + self.chunk]), conf.to_dict()) for s in range(0, len(items), self.chunk)]
        yield from self._run(extract_files, chunks)

    def verify(
        self, batches: Sequence[list[tuple[int, int, int]]], files: dict[int, str], conf: dict[str, Any]
    ) -> Iterator[tuple[list[tuple[int, str, int, int]], dict[int, int]]]:
        from lookalike.verify.pairs import verify_files

        def job(batch: list[tuple[int, int, int]]) -> tuple[Any, ...]:
            need = {x for _, i, j in batch for x in (i, j)}
            return batch, {x: files[x] for x in need if x in files}, conf

        yield from self._run(verify_files, [job(b) for b in batches])
