"""Serving an index while it changes: one committed snapshot per request, the next commit picked up without a restart.

The server's :class:`~lookalike.server.service.Service` holds one opened index (one commit: the header and the table of
the same commit, see :meth:`lookalike.store.Store.open`) and everything derived from it. :class:`Live` keeps the
current one and checks the index header every ``interval`` seconds (a ``stat``, nothing read while it is
unchanged); when it changed, it opens the new commit, builds its Service (the model is shared, not loaded again) and
swaps it in with one assignment.

Each request captures the Service current when it starts (:class:`Snapshot`, a pure ASGI middleware setting a
context variable that worker threads inherit), so a search in flight finishes on the snapshot it started on, even
if a new one is swapped in meanwhile; every reply carries the commit it was served from in ``X-Lookalike-Commit``.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lookalike.index import Index
from lookalike.store import ANN_FILE, META_FILE

log = logging.getLogger("lookalike.server")

COMMIT_HEADER = "x-lookalike-commit"
S = TypeVar("S")

_current: contextvars.ContextVar[Any] = contextvars.ContextVar("lookalike_snapshot", default=None)


def file_stamp(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is replaced (inode, mtime, size): compared every check, cheaply."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def header_stamp(folder: Path) -> tuple[int, int, int] | None:
    return file_stamp(folder / META_FILE)


class Live(Generic[S]):
    """The current snapshot (a Service) of an index folder, replaced when the folder's header changes.

    ``make(index, previous)`` builds the snapshot of a newly opened index (``previous`` is the one it replaces, so
    it can share the model and the worker limit); ``interval``: seconds between checks of the header."""

    def __init__(self, first: S, folder: Path, make: Callable[[Index, S], S], *, interval: float = 0.5) -> None:
        self.current = first
        self.folder = Path(folder)
        self.make = make
        self.interval = interval
        self.swaps = 0
        self.changed_at: float | None = None
        self._stamp = header_stamp(self.folder)
        self._key = (getattr(first, "commit", None), file_stamp(self.folder / ANN_FILE))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed: str | None = None

    def check(self) -> bool:
        """Open and swap in the index's new commit if its header changed since the last check; True if swapped."""
        stamp = header_stamp(self.folder)
        if stamp is None or stamp == self._stamp:
            return False
        old = self.current
        try:
            index = Index.open(self.folder, runtime=getattr(getattr(old, "index", None), "runtime", "auto"))
            key = (index.commit, file_stamp(self.folder / ANN_FILE))
            if key == self._key:
                self._stamp = stamp  # the same commit and ANN file, its header rewritten with nothing new for readers
                return False
            new = self.make(index, old)
        except Exception as exc:  # noqa: BLE001 - a broken or half-rebuilt index: keep serving the last good one
            message = (
                f"could not open the index's new state ({exc}); still serving commit {getattr(old, 'commit', '?')}"
            )
            if message != self._failed:
                log.warning(message)
                self._failed = message
            return False
        self._stamp, self._key, self._failed = stamp, key, None
        self.current = new  # one assignment: requests that started before keep the old snapshot
        self.swaps += 1
        self.changed_at = time.time()
        log.info("serving commit %s (%d images)", getattr(new, "commit", "?"), len(getattr(new, "names", ())))
        return True

    def start(self) -> None:
        """Check in a daemon thread every ``interval`` seconds, until :meth:`stop` (or this object is gone)."""
        if self._thread is None:
            args = (weakref.ref(self), self._stop, self.interval)
            self._thread = threading.Thread(target=_follow, args=args, name="lookalike-live", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


def _follow(ref: weakref.ref[Live[Any]], stop: threading.Event, interval: float) -> None:
    """The checking thread; it holds its :class:`Live` only while checking, so a dropped app is freed."""
    while not stop.wait(interval):
        live = ref()
        if live is None:
            return
        try:
            live.check()
        except Exception:  # noqa: BLE001 - the follower must outlive any one bad state
            log.exception("following the index failed; still serving the last snapshot")
        del live


class SnapshotProxy:
    """Stands where the app's routes use their Service: every attribute comes from the snapshot the current request
    captured (outside a request, from the current one)."""

    __slots__ = ("_live",)

    def __init__(self, live: Live[Any]) -> None:
        object.__setattr__(self, "_live", live)

    @property
    def live(self) -> Live[Any]:
        return object.__getattribute__(self, "_live")

    @property
    def __dict__(self) -> dict[str, Any]:  # type: ignore[override]  # the snapshot's (what monkeypatch restores)
        snapshot = _current.get()
        return (snapshot if snapshot is not None else self.live.current).__dict__

    def __getattr__(self, name: str) -> Any:
        snapshot = _current.get()
        return getattr(snapshot if snapshot is not None else self.live.current, name)

    def __setattr__(self, name: str, value: Any) -> None:
        snapshot = _current.get()
        setattr(snapshot if snapshot is not None else self.live.current, name, value)

    def __delattr__(self, name: str) -> None:
        snapshot = _current.get()
        delattr(snapshot if snapshot is not None else self.live.current, name)


class Snapshot:
    """Pure ASGI middleware: the request runs on the snapshot current when it started, and its reply says which
    commit that was (``X-Lookalike-Commit``)."""

    def __init__(self, app: ASGIApp, live: Live[Any]) -> None:
        self.app = app
        self.live = live

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        snapshot = self.live.current
        commit = str(getattr(snapshot, "commit", 0)).encode()
        token = _current.set(snapshot)

        async def send_with_commit(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (COMMIT_HEADER.encode(), commit)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_commit)
        finally:
            _current.reset(token)
