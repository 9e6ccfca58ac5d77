"""A live collection: commit ids, snapshot reads while the index changes, moves by content hash, the watcher."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np

from lookalike import Index, build
from lookalike.store import Store, commit_of, read_parquet, table_commit


def test_every_commit_bumps_the_id_in_header_and_table(photos: Path, tmp_path: Path) -> None:
    index = Index.build(photos, tmp_path / "idx", labels="folders")
    first = commit_of(tmp_path / "idx")
    assert first >= 1 and index.store.commit_id == first
    assert table_commit(read_parquet(tmp_path / "idx" / "images.parquet")) == first
    (photos / next(iter(sorted(p.name for p in photos.iterdir() if p.is_dir()))) / "new.jpg").write_bytes(
        next(photos.rglob("*.jpg")).read_bytes()[:-10] + b"\xff\xd9" * 5
    )
    index.update()
    assert commit_of(tmp_path / "idx") > first


def test_moved_and_renamed_files_keep_their_vectors_without_embedding(photos: Path, tmp_path: Path) -> None:
    index = Index.build(photos, tmp_path / "idx", labels="folders")
    before = dict(zip(index.hashes, index.vectors, strict=True))
    files = sorted(p for p in photos.rglob("*.jpg"))[:10]
    (photos / "elsewhere").mkdir()
    for i, f in enumerate(files):
        f.rename(photos / "elsewhere" / f"renamed-{i}.jpg")
    report = index.update()
    assert report.embedded == 0 and report.moved == 10 and report.removed == 10
    assert len(index) == 24
    moved = [i for i, n in enumerate(index.names) if n.startswith("elsewhere/")]
    assert len(moved) == 10 and {index.labels[i] for i in moved} == {"elsewhere"}
    for i in range(len(index)):
        np.testing.assert_array_equal(index.vectors[i], before[index.hashes[i]])


def test_a_reader_opening_during_updates_always_sees_one_commit(photos: Path, tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    Index.build(photos, idx, labels="folders")
    spare = tmp_path / "spare"
    shutil.move(str(photos / sorted(p.name for p in photos.iterdir())[0]), spare)
    stop = threading.Event()
    seen: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def read() -> None:
        while not stop.is_set():
            try:
                store = Store.open(idx)
                seen.append((store.commit_id, len(store)))
                assert store.meta["count"] == len(store)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(3):
            shutil.move(str(spare), photos / spare.name)
            build.main(photos, idx)
            shutil.move(str(photos / spare.name), spare)
            build.main(photos, idx)
    finally:
        stop.set()
        reader.join()
    assert not errors
    counts = {}
    for commit, n in seen:
        assert counts.setdefault(commit, n) == n  # one commit, one table
    assert len(counts) >= 2


# --- the watcher -------------------------------------------------------------------------------------------------


def _watcher(photos: Path, idx: Path, **kw: object):  # noqa: ANN202
    from lookalike.watch import Watcher, WatchOptions

    reports: list[build.BuildReport] = []
    said: list[str] = []
    w = Watcher(
        photos, idx, labels="folders", watch=WatchOptions(quiet=0.3, burst=5, settle=0.1, incomplete=5, **kw),
        on_update=reports.append, say=said.append,
    )  # fmt: skip
    return w, reports, said


def _wait(cond, timeout: float = 120) -> None:  # noqa: ANN001
    import time

    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_watcher_follows_adds_deletes_and_moves(photos: Path, tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    w, reports, said = _watcher(photos, idx)
    thread = w.start()
    try:
        _wait(lambda: len(reports) == 1)
        assert reports[0].added == 24
        files = sorted(photos.rglob("*.jpg"))
        (photos / "new").mkdir()
        for i, f in enumerate(files[:6]):  # moves: one burst, nothing embedded
            f.rename(photos / "new" / f"moved-{i}.jpg")
        _wait(lambda: len(reports) == 2)
        assert reports[1].embedded == 0 and reports[1].moved == 6, reports[1]
        for f in files[6:9]:
            f.unlink()
        _wait(lambda: len(reports) == 3)
        index = Index.open(idx)
        assert len(index) == 21 and sum(n.startswith("new/") for n in index.names) == 6
        assert not said, said
    finally:
        w.stop.set()
        thread.join(10)
    assert not thread.is_alive()


def test_watcher_waits_for_a_file_still_being_written(photos: Path, tmp_path: Path) -> None:
    import time

    idx = tmp_path / "idx"
    w, reports, _said = _watcher(photos, idx)
    thread = w.start()
    try:
        _wait(lambda: len(reports) == 1)
        data = next(photos.rglob("*.jpg")).read_bytes()
        target = photos / "partial.jpg"
        target.write_bytes(data[: len(data) // 2])
        time.sleep(1.5)  # past the quiet time: the half file is not indexed, nor marked bad
        assert len(reports) == 1
        with open(target, "ab") as fh:
            fh.write(data[len(data) // 2 :])
        _wait(lambda: len(reports) == 2)
        assert reports[1].added == 1 and not reports[1].skipped, reports[1]  # embedded once, whole
    finally:
        w.stop.set()
        thread.join(10)


def test_watcher_keeps_the_index_when_the_folder_goes_away_and_comes_back(photos: Path, tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    w, reports, said = _watcher(photos, idx, poll=True, poll_interval=0.2)
    thread = w.start()
    try:
        _wait(lambda: len(reports) == 1)
        away = tmp_path / "unmounted"
        photos.rename(away)
        _wait(lambda: any("is gone" in s for s in said))
        assert len(Index.open(idx)) == 24
        away.rename(photos)
        (photos / "x").mkdir()
        shutil.copy(next(away.parent.joinpath("photos").rglob("*.jpg")), photos / "x" / "again.jpg")
        _wait(lambda: any("is back" in s for s in said) and len(reports) >= 2)
        _wait(lambda: len(Index.open(idx)) == 25)
        assert thread.is_alive()
    finally:
        w.stop.set()
        thread.join(10)
    assert all(len(s.splitlines()) == 1 for s in said)


def test_an_update_killed_mid_way_resumes_on_the_next_start(photos: Path, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    from lookalike.watch import Watcher

    for i, f in enumerate(sorted(photos.rglob("*.jpg"))):  # 72 distinct files: time to kill it mid-way
        for k in (1, 2):
            (f.parent / f"{f.stem}-{k}.png").write_bytes(_reencoded(f, i * 3 + k))
    idx = tmp_path / "idx"
    code = (
        "from lookalike.watch import Watcher;"
        f"Watcher({str(photos)!r}, {str(idx)!r}, checkpoint_every=4, batch_size=2, workers=1).run()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ})
    try:
        _wait(lambda: len(list((idx / "parts").glob("part-*.parquet"))) >= 2, timeout=120)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not (idx / "images.parquet").exists()  # killed before its first commit
    w = Watcher(photos, idx)
    report = w.update()
    assert report is not None and report.resumed >= 8 and report.total == 72
    assert len(Index.open(idx)) == 72 and not list((idx / "parts").glob("*"))


def _reencoded(path: Path, seed: int) -> bytes:
    import io

    from PIL import Image

    img = Image.open(path).convert("RGB")
    img.putpixel((0, 0), (seed % 256, seed // 256 % 256, 7))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


# --- a server following the index --------------------------------------------------------------------------------


def test_a_server_follows_commits_and_every_reply_is_from_one_commit(photos: Path, tmp_path: Path) -> None:
    import asyncio
    import time

    import httpx
    from fastapi.testclient import TestClient

    from lookalike.server.app import create_app

    idx = tmp_path / "idx"
    Index.build(photos, idx, labels="folders")
    names_at: dict[int, list[str]] = {}

    def record() -> None:
        store = Store.open(idx)
        names_at[store.commit_id] = store.names()

    record()
    app = create_app(idx, follow=0.1)
    first = TestClient(app).get("/api/health")
    assert first.json()["commit"] == int(first.headers["x-lookalike-commit"]) == max(names_at)
    folder = sorted(p for p in photos.iterdir() if p.is_dir())[0]
    spare = tmp_path / "spare"
    replies: list[tuple[int, dict]] = []
    failures: list[str] = []
    done = threading.Event()

    def write() -> None:  # the writer: a folder leaves and comes back, twice, one commit each
        try:
            for _ in range(2):
                for src, dst in ((folder, spare), (spare, folder)):
                    shutil.move(str(src), dst)
                    build.main(photos, idx)
                    record()
                    _wait(lambda: app.state.live.current.commit == max(names_at))  # served before the next
                    time.sleep(0.3)
        finally:
            done.set()

    async def hammer(client: httpx.AsyncClient) -> None:
        while not done.is_set():
            r = await client.get("/api/search", params={"id": 0, "k": 50})
            if r.status_code != 200:
                failures.append(f"{r.status_code} {r.text}")
            else:
                replies.append((int(r.headers["x-lookalike-commit"]), r.json()))

    async def clients() -> None:  # one event loop, as under uvicorn
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            await asyncio.gather(*(hammer(c) for _ in range(3)))

    writer = threading.Thread(target=write)
    writer.start()
    asyncio.run(clients())
    writer.join()
    assert not failures, failures[:3]
    served = {c for c, _ in replies}
    assert len(served) >= 3, served  # followed commits without a restart
    for commit, body in replies:
        names = names_at[commit]
        assert body["query"]["name"] == names[0]
        assert len(body["matches"]) == len(names) - 1
        assert all(names[m["id"]] == m["name"] for m in body["matches"])
    health = TestClient(app).get("/api/health").json()
    assert health["commit"] == max(names_at)
    app.state.live.stop()


def test_the_watch_command_indexes_a_new_photo_and_stops_on_ctrl_c(photos: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    log = photos.parent / "watch.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lookalike.cli", "watch", str(photos), "--quiet-seconds", "0.3", "-q"],
            stderr=out, stdout=out, env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
        try:
            _wait(lambda: "indexed 24" in log.read_text(), timeout=300)
            shutil.copy(next(photos.rglob("*.jpg")), photos / "copy.jpg")
            _wait(lambda: "indexed 25" in log.read_text(), timeout=120)
            time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
    text = log.read_text()
    assert "watching" in text and "1 added" in text and "stopped" in text, text
    assert len(Index.open(photos / ".lookalike")) == 25


def test_rows_below_a_folder_that_cannot_be_read_are_kept(photos: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """Permission denied on a subfolder (root reads everything, so the walk's error is simulated): its indexed photos
    stay in the index, and the folder is reported as left out, with why."""
    import os

    idx = tmp_path / "idx"
    Index.build(photos, idx, labels="folders")
    folder = sorted(p for p in photos.iterdir() if p.is_dir())[0]
    real_walk = os.walk

    def walk(top, **kw):  # noqa: ANN001, ANN202
        for dirpath, dirnames, filenames in real_walk(top, **kw):
            if folder.name in dirnames:
                dirnames.remove(folder.name)
                kw["onerror"](PermissionError(13, "Permission denied", str(folder)))
            yield dirpath, dirnames, filenames

    monkeypatch.setattr("lookalike.images.files.os.walk", walk)
    built = build.main(photos, idx)
    assert len(built.store) == 24 and built.report.removed == 0
    assert any("Permission denied" in why for _, why in built.report.left_out)
    assert build.unseen_rows(["a/x.jpg", "b/y.jpg"], [photos], photos) == ["a/x.jpg", "b/y.jpg"]
