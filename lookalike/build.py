"""The write side of an index: building and updating as a pipeline of named steps.

``main(photos, index_dir, config=..., options=...)`` runs them in order, as hloc's ``main(conf, ...)`` does; each step
is a function a test can call on its own:

1. :func:`settle` — the settings of a run, merged one way (:meth:`IndexConfig.merged`), and its folders;
2. :func:`open_store` — the existing index checked against them (same vectors or a refusal naming why), or a new one;
3. :func:`discover_files` — the images below the photo folder;
4. :func:`prepare_describer` — int8 calibration and the VLAD vocabulary, before anything is embedded;
5. :func:`plan` — what to keep, resume, embed, skip again and remove (``store.plan_update``, a pure function);
6. :func:`describe` — embed what the plan says, checkpointing parts as it goes (on Ctrl-C too);
7. :func:`write` — the new table committed: kept, touched, resumed and new rows;
8. :func:`post_steps` — PCA-whitening fitted once, stale local features pruned, the ANN index refreshed.

Only this module and :mod:`lookalike.store` write an index's header; everything else reads it through the store's
named properties or an :class:`~lookalike.view.IndexView`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from lookalike.aggregate import VOCAB_FILE, PCAWhitening, VLADPooling, l2_normalize
from lookalike.config import IndexConfig, RunOptions, split_settings
from lookalike.embed import Batch, Describer
from lookalike.errors import IndexMismatchError, LookalikeError
from lookalike.images import IMAGE_EXTENSIONS, Discovery, discover
from lookalike.models.quantize import INT8_FILE
from lookalike.progress import bar
from lookalike.search import refresh_ann
from lookalike.store import (
    FEATURES_DIR,
    INDEX_DIRNAME,
    Store,
    UpdatePlan,
    make_table,
    names_of,
    plan_update,
    vectors_to_arrow,
    with_labels,
)

if TYPE_CHECKING:
    from lookalike.verify import FeatureCache

# Ray, local features and the VLAD vocabulary are imported where a run needs them: a search opens an index through
# ``describer_of`` and must not pay for them (bench/startup.py).


@dataclass
class BuildReport:
    """What an index run did, accounting for every image-named entry it saw:
    ``total == added + updated + unchanged + resumed + len(skipped)`` (``removed`` rows were gone from disk).

    ``skipped`` lists (relative path, reason) for entries that could not be used (exact names: pass them through
    :func:`lookalike.io.shown` to print); ``ignored`` counts the other files by extension; ``left_out`` lists
    (relative folder, why) for folders lookalike wrote itself, which are never indexed.
    """

    total: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    resumed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=dict)
    left_out: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    moved: int = 0  # of ``unchanged``: files found under a new name with the content of a removed row (not re-embedded)
    calibration: str | None = None  # what an int8 backbone was calibrated on, when this run calibrated one

    @property
    def embedded(self) -> int:
        return self.added + self.updated


@dataclass(frozen=True)
class Settled:
    """A run's settings, settled: the photo folder, the index folder, the index settings asked for (``None``:
    follow the index) on top of ``config``, and how the run is carried out."""

    root: Path
    index_path: Path
    config: IndexConfig | None
    asked: dict[str, Any]
    options: RunOptions


@dataclass
class Planned:
    """What :func:`plan` decided, with the tables and file facts the later steps need."""

    plan: UpdatePlan
    on_disk: dict[str, tuple[int, int]]
    old: pa.Table
    old_rows: dict[str, int]
    recovered: pa.Table | None
    rec_rows: dict[str, int]
    skipped: list[dict[str, Any]]


@dataclass
class Described:
    """What :func:`describe` produced: checkpointed tables of new rows, and names whose content was unchanged."""

    tables: list[pa.Table] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    moved: dict[str, str] = field(default_factory=dict)  # new name -> the removed row whose content it has


@dataclass
class Built:
    """What :func:`main` returns: the written store, the describer that filled it, the report and the run options."""

    store: Store
    describer: Describer
    report: BuildReport
    options: RunOptions


def rel_name(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` with forward slashes: the name an index keeps for it."""
    return path.relative_to(root).as_posix()


def describer_of(store: Store, *, runtime: str = "auto") -> Describer:
    """The exact describer an index was made with; refused if this machine's weights for its model differ."""
    describer = Describer.from_config(store.config, folder=store.path, runtime=runtime)
    stored, found = store.meta["model"], describer.model.config()
    if found != stored:
        raise IndexMismatchError(
            f"{store.path} was built with {stored['name']} weights {stored.get('weights', '?')[:12]}, but this "
            f"machine has {found.get('weights', '?')[:12]}; rebuild the index to use them"
        )
    if store.post and describer.post is None:
        raise LookalikeError(f"{store.path}: PCA-whitening file missing; rebuild the index")
    if describer.needs_calibration and (len(store) or store.pending_parts()):
        # these vectors came from the int8 model that was in the folder: another calibration would not match them
        raise LookalikeError(f"{store.path}: the int8 model {INT8_FILE} is missing; rebuild the index")
    return describer


# --- 1-2. settings and the store ---------------------------------------------------------------------------------


def settle(
    photos: str | os.PathLike[str],
    index_dir: str | os.PathLike[str] | None = None,
    *,
    config: IndexConfig | None = None,
    options: RunOptions | None = None,
    **settings: Any,
) -> Settled:
    """Split keyword settings into index settings and run options, and name the folders (refusing a missing one)."""
    asked, run = split_settings(settings)
    options = dataclasses.replace(options or RunOptions(), **run)
    if options.calibration == "photos" and asked.get("precision") is None and (config is None or not config.precision):
        asked["precision"] = "int8"  # calibrating on one's photos is asking for int8, whatever this CPU's default
    if options.engine == "ray":
        from lookalike.distributed import require_ray

        require_ray()
    if isinstance(asked.get("model"), (str, os.PathLike)) and Path(asked["model"]).is_dir():
        asked["model"] = str(Path(asked["model"]).resolve())  # a model folder is named by its absolute path
    for key in ("vocab", "weights"):
        if asked.get(key) is not None:
            asked[key] = str(asked[key])
    root = Path(photos).resolve()
    if not root.is_dir():
        raise LookalikeError(f"not a folder: {photos}")
    index_path = Path(index_dir) if index_dir else root / INDEX_DIRNAME
    return Settled(root, index_path, config, asked, options)


def wanted_config(stored: IndexConfig | None, config: IndexConfig | None, asked: dict[str, Any]) -> IndexConfig:
    """The one way settings combine: the stored config (a new index: ``config``, else the defaults), then
    ``config``'s fields, then what was asked; settings left as ``None`` follow what is underneath."""
    if stored is None:
        base = config or IndexConfig()
    else:
        base = stored.merged(**dataclasses.asdict(config)) if config else stored
    return base.merged(**asked)


def open_store(settled: Settled) -> tuple[Store, Describer]:
    """The index to write: the existing one, checked (its describer is made on first use), else a new one with
    the describer that will fill it. ``rebuild`` starts afresh in the same folder."""
    path, root, options = settled.index_path, settled.root, settled.options
    if Store.exists(path) and not options.rebuild:
        store = Store.open(path)
        if store.root != root:
            raise IndexMismatchError(f"{path} indexes {store.root}, not {root}; pass another index folder or rebuild")
        stored = store.config
        wanted = wanted_config(stored, settled.config, settled.asked)
        diffs = stored.differences(wanted)
        if diffs:
            raise IndexMismatchError(
                f"{path} was built with other settings ({IndexConfig.describe_differences(diffs)}); re-embed "
                "everything with --rebuild (rebuild=True in Python), or use another index folder"
            )
        from lookalike.vocab import check_same_vocabulary

        describer = describer_of(store, runtime=options.runtime)
        check_same_vocabulary(describer.pooling, wanted.vocab, path)
        store.set_rules(labels=wanted.labels, vectors=wanted.vectors)  # a new storage type is a cast on commit
        return store, describer
    wanted = wanted_config(None, settled.config, settled.asked)
    describer = Describer.from_config(wanted, runtime=options.runtime)
    wanted = dataclasses.replace(wanted, precision=describer.precision)  # stored resolved, like pooling
    meta = {"root": os.path.relpath(root, path.resolve()), "dim": describer.dim}
    store = Store.create(path, {**meta, **wanted.to_meta(), **describer.config()})
    if options.rebuild:
        store.clear_parts()
        store.discard_table()
    return store, describer


# --- 3-4. discovery and what must be ready before embedding ------------------------------------------------------


def discover_files(store: Store) -> Discovery:
    """The images below the index's photo folder (its own index folder left out); none at all is an error."""
    root = store.root
    found = discover(root, exclude=[store.path])
    if not found.files and len(store) == 0:
        exts = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise LookalikeError(f"no images found in {root} (looked for {exts}, in any case)")
    return found


def prepare_describer(store: Store, describer: Describer, files: Sequence[Path], options: RunOptions) -> str | None:
    """int8 calibration (before the vocabulary: its descriptors come from the int8 model too), then the VLAD
    vocabulary; returns what the backbone was calibrated on when this run calibrated it."""
    calibration = None
    if describer.needs_calibration:
        calibration = describer.calibrate(files, store.path / INT8_FILE, source=options.calibration)
        store.set_calibration(options.calibration)  # saved with the table when this run commits
    ensure_vocabulary(store, describer, files, progress=options.progress)
    return calibration


def ensure_vocabulary(store: Store, describer: Describer, files: Sequence[Path], *, progress: bool = False) -> None:
    """Before embedding: fit the VLAD vocabulary if there is none, and keep it in the index folder."""
    pooling = describer.pooling
    if not isinstance(pooling, VLADPooling):
        return
    if pooling.needs_fit:
        if len(store):
            raise LookalikeError(
                f"{store.path} lost its VLAD vocabulary ({VOCAB_FILE}); run `lookalike vocab fit --index "
                f"{store.path}` to fit a new one and re-describe the images"
            )
        from lookalike.vocab import fit_vocabulary

        fit_vocabulary(describer, files, progress=progress)
        source = "fitted"
    elif (store.vocabulary or {}).get("hash") == pooling.vocab_hash() and (store.path / VOCAB_FILE).is_file():
        return
    else:
        source = "given"
    pooling.save(store.path)
    store.record_vocabulary({"file": VOCAB_FILE, "hash": pooling.vocab_hash(), "source": source})


# --- 5. the plan ---------------------------------------------------------------------------------------------------


def plan(store: Store, found: Discovery) -> Planned:
    """What to do with each file: compare what is on disk with the table, the checkpoints of a killed run and the
    entries skipped before."""
    root = store.root
    on_disk = {rel_name(p, root): found.stats[p] for p in found.files}
    old = store.table
    old_rows = {n: i for i, n in enumerate(store.names())}
    sizes, mtimes, hashes = (old.column(c).to_pylist() for c in ("size", "mtime_ns", "hash"))
    recovered = store.read_parts()
    rec_rows = {} if recovered is None else {n: i for i, n in enumerate(names_of(recovered))}
    rec_stat: dict[str, tuple[int, int]] = {}
    if recovered is not None:
        columns = zip(*(recovered.column(c).to_pylist() for c in ("size", "mtime_ns")), strict=True)
        rec_stat = dict(zip(rec_rows, columns, strict=True))
    skipped_before = {s["path"]: s for s in store.skipped}
    decided = plan_update(
        on_disk,
        {n: (sizes[i], mtimes[i], hashes[i]) for n, i in old_rows.items()},
        rec_stat,
        {n: (s.get("size"), s.get("mtime_ns")) for n, s in skipped_before.items()},
    )
    if found.unreadable:  # rows below a folder that could not be listed stay: the files may well be there
        hidden = set(unseen_rows(decided.removed, found.unreadable, root))
        decided.removed = [n for n in decided.removed if n not in hidden]
        decided.keep += sorted(hidden)
    # entries that are no regular files are found again (and not opened) on every run: no size or mtime to keep
    skipped = [skipped_before[n] for n in decided.skip_again]
    skipped += [{"path": rel_name(p, root), "reason": why} for p, why in found.skipped]
    return Planned(decided, on_disk, old, old_rows, recovered, rec_rows, skipped)


def unseen_rows(removed: Sequence[str], unreadable: Sequence[Path], root: Path) -> list[str]:
    """The names of ``removed`` that lie below a folder discovery could not list (``root`` itself: all of them)."""
    if any(f == root for f in unreadable):
        return list(removed)
    prefixes = tuple(rel_name(f, root) + "/" for f in unreadable if root in f.parents)
    return [n for n in removed if prefixes and n.startswith(prefixes)]


def start_report(found: Discovery, planned: Planned, root: Path, calibration: str | None) -> BuildReport:
    return BuildReport(
        total=found.seen,
        unchanged=len(planned.plan.keep),
        resumed=len(planned.plan.resume),
        removed=len(planned.plan.removed),
        ignored=dict(sorted(found.ignored.items(), key=lambda kv: (-kv[1], kv[0]))),
        left_out=[(rel_name(p, root), why) for p, why in found.left_out],
        calibration=calibration,
    )


# --- 6. describing -------------------------------------------------------------------------------------------------


def batches(
    store: Store,
    describer: Describer,
    paths: list[Path],
    known: dict[Path, str],
    options: RunOptions,
    cache: FeatureCache | None = None,
) -> Iterator[Batch]:
    """Described batches of ``paths``, locally or on Ray (same rows either way). Locally, given the ``cache`` of an
    index with ``features``, each photo's local features come from the decode its vector comes from
    (``Prepared.extra``): decoded at the feature size, the pixels `lookalike features` uses."""
    if options.engine == "ray":
        from lookalike.distributed import ray_describe_files

        return ray_describe_files(
            store.meta, store.path, paths, known_hashes=known.get, batch_size=options.batch_size,
            runtime=options.runtime, address=options.address, num_workers=options.num_workers,
        )  # fmt: skip
    from lookalike.verify import extract

    also = functools.partial(extract, conf=cache.conf) if cache is not None else None
    return describer.describe_files(
        paths, known_hashes=known.get, batch_size=options.batch_size, workers=options.workers, also=also
    )


def describe(
    store: Store, describer: Describer, planned: Planned, options: RunOptions, report: BuildReport
) -> Described:
    """Embed the files the plan names, writing a checkpoint part every ``options.checkpoint_every`` rows (and
    whatever was embedded when interrupted); unreadable files join ``planned.skipped`` with their reason."""
    root, on_disk = store.root, planned.on_disk
    out = Described()
    rows: list[dict[str, Any]] = []
    vecs: list[np.ndarray] = []

    def flush() -> None:
        if rows:
            table = store.conform(make_table(rows, np.concatenate(vecs), store.dim))
            store.write_part(table)
            out.tables.append(table)
            rows.clear()
            vecs.clear()

    from lookalike.verify import FeatureCache

    cache = FeatureCache.while_indexing(store)
    if cache is not None:
        cache.begin()
    to_embed = [root / n for n in planned.plan.embed]
    gone = removed_by_hash(planned)
    known: dict[Path, str | frozenset[str]] = {root / n: frozenset(gone) for n in planned.plan.embed if gone}
    known.update({root / n: h for n, h in planned.plan.known_hashes.items()})
    try:
        with bar("embedding", len(to_embed), options.progress and bool(to_embed)) as tick:
            for batch in batches(store, describer, to_embed, known, options, cache):
                v = 0
                for item in batch.items:
                    name = rel_name(item.path, root)
                    size, mtime = on_disk[name]
                    if item.error:
                        planned.skipped.append({"path": name, "reason": item.error, "size": size, "mtime_ns": mtime})
                    elif item.unchanged and name not in planned.old_rows:
                        out.moved[name] = gone[str(item.hash)]
                    elif item.unchanged:
                        out.reused.append(name)
                    else:
                        m = item.meta
                        rows.append(
                            {
                                "path": name, "size": size, "mtime_ns": mtime, "hash": item.hash,
                                "width": m.width, "height": m.height, "exif_time": m.exif_time,
                                "gps_lat": m.gps_lat, "gps_lon": m.gps_lon,
                            }
                        )  # fmt: skip
                        vecs.append(batch.vectors[v : v + 1])
                        v += 1
                        if cache is not None and item.extra is not None:
                            cache.put(str(item.hash), item.extra)
                        if name in planned.old_rows:
                            report.updated += 1
                        else:
                            report.added += 1
                tick.advance(len(batch.items))
                if len(rows) >= options.checkpoint_every:
                    flush()
    finally:
        flush()  # on Ctrl-C too: what was embedded is on disk for the next run
    return out


def removed_by_hash(planned: Planned) -> dict[str, str]:
    """Content hash -> name of the rows the plan removes: a new file with one of these contents was moved or
    renamed, and keeps that row's vector instead of being embedded again."""
    if not planned.plan.removed:
        return {}
    hashes = planned.old.column("hash").to_pylist()
    return {hashes[planned.old_rows[n]]: n for n in planned.plan.removed}


def moved_rows(store: Store, planned: Planned, moved: dict[str, str]) -> pa.Table:
    """The removed rows of ``moved``'s old names under their new names, sizes and mtimes (vectors unchanged)."""
    new_names = sorted(moved)
    t = planned.old.take([planned.old_rows[moved[n]] for n in new_names])
    renamed = make_table([{"path": n} for n in new_names], np.zeros((len(new_names), store.dim), np.float32), store.dim)
    columns = {
        "path": renamed.column("path"),
        "path_bytes": renamed.column("path_bytes"),
        "size": pa.array([planned.on_disk[n][0] for n in new_names], pa.int64()),
        "mtime_ns": pa.array([planned.on_disk[n][1] for n in new_names], pa.int64()),
    }
    for col, values in columns.items():
        t = t.set_column(t.schema.get_field_index(col), col, values)
    return t


# --- 7. writing ----------------------------------------------------------------------------------------------------


def write(store: Store, planned: Planned, described: Described, report: BuildReport) -> pa.Table:
    """Commit the new table: kept rows, touched rows (vector kept, size and mtime refreshed), resumed and new."""
    old, old_rows, plan_ = planned.old, planned.old_rows, planned.plan
    parts = [old.take(sorted(old_rows[n] for n in plan_.keep))] if plan_.keep else []
    if described.reused:  # content unchanged but touched: keep the vector, refresh size and mtime
        t = old.take(sorted(old_rows[n] for n in described.reused))
        names = names_of(t)
        for col, pos in (("size", 0), ("mtime_ns", 1)):
            values = pa.array([planned.on_disk[n][pos] for n in names], pa.int64())
            t = t.set_column(t.schema.get_field_index(col), col, values)
        parts.append(t)
        report.unchanged += len(described.reused)
    if described.moved:
        parts.append(moved_rows(store, planned, described.moved))
        report.unchanged += len(described.moved)
        report.moved = len(described.moved)
    if plan_.resume:
        assert planned.recovered is not None
        parts.append(planned.recovered.take(sorted(planned.rec_rows[n] for n in plan_.resume)))
    parts.extend(described.tables)
    parts = [store.conform(t) for t in parts]  # old rows may be float32 when float16 storage was asked
    table = pa.concat_tables(parts) if parts else make_table([], np.zeros((0, store.dim), np.float32), store.dim)
    store.set_discovery(report.ignored, [list(x) for x in report.left_out])
    store.commit(with_labels(table, store.label_rule), planned.skipped)
    report.skipped = [(s["path"], s["reason"]) for s in planned.skipped]
    return store.table


# --- 8. after writing ----------------------------------------------------------------------------------------------


def fit_pending_post(store: Store, describer: Describer) -> bool:
    """After embedding: fit PCA-whitening on the stored vectors if the index asks for it and has none yet.

    Stored vectors are transformed in place and the transform saved, so from here on images and queries are
    described with it (the describer's ``post`` is set). It stays fixed on incremental updates (refitting would
    change every stored vector); a rebuild or ``vocab fit`` fits it afresh. Returns whether it fitted one.
    """
    want = store.pca
    if not want or store.post or len(store) < 2:
        return False
    pca = PCAWhitening(int(want)).fit(store.vectors)
    vectors = l2_normalize(pca.transform(store.vectors)).astype(np.float32)
    pca.save(store.path)
    table = store.table.drop_columns(["vector"])
    table = table.append_column(pa.field("vector", pa.list_(pa.float32(), vectors.shape[1])), vectors_to_arrow(vectors))
    store.commit_post(table, pca.config())
    describer.post = pca
    return True


def prune_features(store: Store) -> None:
    """Local features of files changed or gone are stale: drop them (only when the index has a feature cache)."""
    if (store.path / FEATURES_DIR).is_dir():
        from lookalike.verify import FeatureCache

        FeatureCache(store).prune()


def complete_features(store: Store, options: RunOptions) -> int:
    """An index with ``features``: make those still missing (photos described on Ray, whose workers return vectors
    only, or photos described before the setting), on Ray when the run was. Returns how many were made."""
    from lookalike.verify import FeatureCache

    cache = FeatureCache.while_indexing(store)
    if cache is None:
        return 0
    if options.engine != "ray":
        return cache.ensure(progress=options.progress)
    from lookalike.distributed import RayFeatureEngine

    engine = RayFeatureEngine(options.address, options.num_workers)
    try:
        with cache.using(engine):
            return cache.ensure(progress=options.progress)
    finally:
        engine.close()


def post_steps(store: Store, describer: Describer, options: RunOptions) -> None:
    """PCA-whitening (fitted once), stale local features pruned (and, for an index with ``features``, missing ones
    made), the ANN index refreshed (``options.ann``)."""
    fit_pending_post(store, describer)
    prune_features(store)
    complete_features(store, options)
    refresh_ann(store, options.ann)


def follow_files(store: Store, gone: set[str], linked: Sequence[tuple[str, str]] | None = None) -> bool:
    """The index follows files the dedupe actions moved: rows of ``gone`` paths leave; each ``(path, keeper)`` of
    ``linked`` (a copy replaced by a link) becomes a second row of its keeper (same hash, size and vector, the
    link's mtime), so the next update has nothing to re-embed. Commits (and refreshes the ANN index) when anything
    changed, on a link run, or when the header's count disagrees with the table; returns whether it committed."""
    table = store.table
    names = table.column("path").to_pylist()
    row_of = {n: i for i, n in enumerate(names)}
    parts = [table.take([i for i, n in enumerate(names) if n not in gone])]
    links = [(p, k) for p, k in (linked or ()) if k in row_of]
    if links:
        rows = table.take([row_of[k] for _, k in links])
        st = [os.stat(store.root / p) for p, _ in links]
        rows = rows.set_column(rows.schema.get_field_index("path"), "path", pa.array([p for p, _ in links]))
        rows = rows.set_column(
            rows.schema.get_field_index("mtime_ns"), "mtime_ns", pa.array([x.st_mtime_ns for x in st], pa.int64())
        )
        parts.append(rows)
    new = pa.concat_tables([store.conform(p) for p in parts])
    if new.num_rows == table.num_rows and linked is None and store.meta.get("count") == new.num_rows:
        return False
    store.commit(new, store.skipped)
    refresh_ann(store)
    return True


# --- the pipeline --------------------------------------------------------------------------------------------------


def update(store: Store, describer: Describer, options: RunOptions | None = None) -> BuildReport:
    """Bring an index up to date with its photo folder: embed new and changed files, drop deleted ones, then the
    post-steps. Checkpoints every ``options.checkpoint_every`` images; a killed run's checkpoints are picked up
    here. The caller holds the store's lock."""
    options = options or RunOptions()
    found = discover_files(store)
    calibration = prepare_describer(store, describer, found.files, options)
    planned = plan(store, found)
    report = start_report(found, planned, store.root, calibration)
    described = describe(store, describer, planned, options, report)
    write(store, planned, described, report)
    post_steps(store, describer, options)
    return report


def main(
    photos: str | os.PathLike[str],
    index_dir: str | os.PathLike[str] | None = None,
    *,
    config: IndexConfig | None = None,
    options: RunOptions | None = None,
    **settings: Any,
) -> Built:
    """Index (or bring up to date) every image below ``photos``: every step in order, under the store's lock."""
    started = time.perf_counter()
    settled = settle(photos, index_dir, config=config, options=options, **settings)
    store, describer = open_store(settled)
    with store.lock():
        report = update(store, describer, settled.options)
    report.seconds = time.perf_counter() - started
    return Built(store, describer, report, settled.options)
