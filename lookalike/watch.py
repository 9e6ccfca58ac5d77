"""A live collection: follow a photo folder and keep its index up to date (``lookalike watch``, ``serve --watch``).

The loop (see docs/watch.md):

1. an update at start (it resumes whatever a killed run left in ``parts/``);
2. ``watchfiles`` reports changes (inotify where there is one; polling when asked, for network shares), grouped
   until the folder has been quiet for ``quiet`` seconds or ``burst`` seconds have passed since the first change, so
   a phone syncing 2,000 photos is one update, not 2,000;
3. files still being written (size or mtime changing, a JPEG without its end marker) are waited for, up to
   ``incomplete`` seconds;
4. one :func:`lookalike.build.update` under the store's lock: new and changed files embedded, deleted ones dropped,
   moved and renamed ones kept by content hash (not embedded again), the ANN index refreshed, stale local features
   pruned; the commit id goes up by one and readers (the server) switch to it.

Changes inside the index folder (which is inside the photo folder by default) are ignored. Trouble — the folder gone
(an unmounted disk), an empty mount point, a subfolder that cannot be read, a failed update — is reported in one
line and the loop goes on; nothing indexed is dropped because the folder cannot be seen.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from lookalike import build
from lookalike.build import BuildReport
from lookalike.config import IndexConfig, RunOptions
from lookalike.embed import Describer
from lookalike.errors import LookalikeError
from lookalike.images import IMAGE_EXTENSIONS
from lookalike.store import Store

log = logging.getLogger("lookalike.watch")

JPEG_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif"}


@dataclass(frozen=True)
class WatchOptions:
    """How the watcher groups and waits: ``quiet`` seconds without a change end a burst, ``burst`` seconds after
    its first change end it anyway; a file must keep its size and mtime for ``settle`` seconds (and a JPEG end with
    its end marker) to count as complete, waited for at most ``incomplete`` seconds; ``poll``: poll every
    ``poll_interval`` seconds instead of inotify (network shares; ``None``: watchfiles decides)."""

    quiet: float = 2.0
    burst: float = 30.0
    settle: float = 0.5
    incomplete: float = 60.0
    poll: bool | None = None
    poll_interval: float = 1.0

    def __post_init__(self) -> None:
        for name in ("quiet", "burst", "settle", "incomplete", "poll_interval"):
            if getattr(self, name) < 0:
                raise LookalikeError(f"watch option {name} must not be negative, got {getattr(self, name)}")


def is_complete(path: Path, before: os.stat_result | None, now: os.stat_result) -> bool:
    """Whether a file looks finished: same size and mtime as a moment ago, and a JPEG ending in its end marker (FF D9,
    possibly followed by a few bytes of padding)."""
    if before is None or (before.st_size, before.st_mtime_ns) != (now.st_size, now.st_mtime_ns) or now.st_size == 0:
        return False
    if path.suffix.lower() not in JPEG_SUFFIXES:
        return True
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, now.st_size - 64))
            return b"\xff\xd9" in fh.read()
    except OSError:
        return False


def wait_complete(paths: Iterable[Path], options: WatchOptions, stop: threading.Event) -> list[Path]:
    """Wait until each of ``paths`` that still exists is complete (:func:`is_complete`), at most
    ``options.incomplete`` seconds; returns those still incomplete then (indexed as they are: an unreadable one is
    skipped, and retried when it changes)."""
    waiting = {p: None for p in paths if p.suffix.lower() in IMAGE_EXTENSIONS}
    stats: dict[Path, os.stat_result | None] = dict(waiting)
    deadline = time.monotonic() + options.incomplete
    while waiting and not stop.is_set():
        for p in list(waiting):
            try:
                now = p.stat()
            except OSError:
                waiting.pop(p)  # gone again (a rename, a temp file): the update will see what is there
                continue
            if is_complete(p, stats[p], now):
                waiting.pop(p)
            stats[p] = now
        if not waiting or time.monotonic() >= deadline:
            break
        stop.wait(options.settle)
    return list(waiting)


class Watcher:
    """Keeps the index of one photo folder up to date while it changes; :meth:`run` until ``stop`` is set.

    ``on_update`` is called with each update's report (the CLI prints it; tests count them)."""

    def __init__(
        self,
        photos: str | os.PathLike[str],
        index_dir: str | os.PathLike[str] | None = None,
        *,
        config: IndexConfig | None = None,
        options: RunOptions | None = None,
        watch: WatchOptions | None = None,
        on_update: Callable[[BuildReport], None] | None = None,
        say: Callable[[str], None] | None = None,
        **settings: object,
    ) -> None:
        self.settled = build.settle(photos, index_dir, config=config, options=options, **settings)
        self.root = self.settled.root
        self.index_path = self.settled.index_path.resolve()
        self.options = watch or WatchOptions()
        self.on_update = on_update
        self.say = say or log.warning
        self.stop = threading.Event()
        self.updates = 0
        self._describer: Describer | None = None
        self._created: str | None = None

    # --- one update ----------------------------------------------------------------------------------------------

    def looks_unmounted(self) -> str | None:
        """Why an update must not run now (the folder gone, or empty while the index has photos), else None."""
        if not self.root.is_dir():
            return f"{self.root} is gone (an unmounted disk?): waiting for it; the index keeps what it has"
        try:
            with os.scandir(self.root) as it:
                empty = not any(Path(e.path).resolve() != self.index_path for e in it)
        except OSError as exc:
            return f"{self.root} cannot be read ({exc.strerror}): waiting; the index keeps what it has"
        if empty and Store.exists(self.index_path) and Store.open(self.index_path).meta.get("count", 0):
            return f"{self.root} is empty (an unmounted disk?): keeping the indexed photos; waiting for it"
        return None

    def update(self) -> BuildReport | None:
        """One update of the index, under its lock (None: not run, and why said in one line)."""
        why = self.looks_unmounted()
        if why:
            self.say(why)
            return None
        started = time.perf_counter()
        if not Store.exists(self.index_path) or self._describer is None:
            built = build.main(self.root, self.settled.index_path, config=self.settled.config,
                               options=self.settled.options, **self.settled.asked)  # fmt: skip
            report, self._describer, self._created = built.report, built.describer, built.store.created
        else:
            store = Store.open(self.index_path)
            if store.created != self._created:  # rebuilt by someone else: its describer may differ
                self._describer, self._created = (
                    build.describer_of(store, runtime=self.settled.options.runtime),
                    store.created,
                )
            with store.lock():
                report = build.update(store, self._describer, self.settled.options)
        report.seconds = time.perf_counter() - started
        self.updates += 1
        if self.on_update:
            self.on_update(report)
        return report

    def safe_update(self) -> BuildReport | None:
        """:meth:`update`, with any error reported in one line instead of ending the loop."""
        try:
            return self.update()
        except LookalikeError as exc:
            self.say(f"update failed: {exc}; will try again on the next change")
        except OSError as exc:
            self.say(f"update failed: {exc.strerror or exc} ({exc.filename}); will try again on the next change")
        return None

    # --- the loop ----------------------------------------------------------------------------------------------

    def wanted(self, path: str) -> bool:
        """Changes worth an update: not inside the index folder; image files, and names without a suffix (folders)."""
        p = Path(path)
        if p == self.index_path or self.index_path in p.parents:
            return False
        return p.suffix == "" or p.suffix.lower() in IMAGE_EXTENSIONS

    def changes(self) -> Iterable[set[Path]]:
        """Bursts of changed paths, until ``stop`` is set or the folder goes away."""
        import watchfiles

        opts, first = self.options, True
        for batch in watchfiles.watch(
            self.root,
            watch_filter=lambda _change, path: self.wanted(path),
            step=int(opts.quiet * 1000),
            debounce=int(max(opts.burst, opts.quiet) * 1000),
            stop_event=self.stop,
            rust_timeout=1000,
            yield_on_timeout=True,
            force_polling=opts.poll,
            poll_delay_ms=int(opts.poll_interval * 1000),
            ignore_permission_denied=True,
        ):
            if not self.root.is_dir():
                return
            if batch or first:  # the first (maybe empty) batch: watching has begun, so update for what came before
                first = False
                yield {Path(p) for _, p in batch}

    def run(self) -> None:
        """Update once watching has begun (nothing that lands meanwhile is missed), then after every burst of
        changes, until :attr:`stop` is set."""
        while not self.stop.is_set():
            try:
                for changed in self.changes():
                    incomplete = wait_complete(changed, self.options, self.stop)
                    for p in incomplete:
                        self.say(f"{p} is still changing after {self.options.incomplete:g} s: indexed as it is now")
                    if not self.stop.is_set():
                        self.safe_update()
            except (OSError, RuntimeError) as exc:  # the folder vanished under the watcher, or it could not start
                self.say(f"watching {self.root} stopped ({exc}); starting again")
            if self.stop.is_set():
                break
            if not self.root.is_dir():
                self.say(f"{self.root} is gone (an unmounted disk?): waiting for it; the index keeps what it has")
                while not self.root.is_dir() and not self.stop.wait(self.options.poll_interval):
                    pass
                if self.stop.is_set():
                    break
                self.say(f"{self.root} is back: updating")

    def start(self) -> threading.Thread:
        """:meth:`run` in a daemon thread (``serve --watch``, tests); set :attr:`stop` to end it."""
        thread = threading.Thread(target=self.run, name="lookalike-watch", daemon=True)
        thread.start()
        return thread


def settings_of(options: WatchOptions, **changes: object) -> WatchOptions:
    """``options`` with ``changes`` (None leaves a field as it is): the CLI's flags on top of the defaults."""
    return dataclasses.replace(options, **{k: v for k, v in changes.items() if v is not None})
