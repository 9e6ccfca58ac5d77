"""The JSON API and page server: searches, ids, thumbnails, clusters, and every kind of bad input a client can send."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import struct
import threading
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lookalike import Index
from lookalike.server.app import create_app

# --- fixtures -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def server_index(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Index:
    """The server writes into its index folder (thumbnails, clusters.json here), so it gets its own index."""
    index = Index.build(sample_dir, tmp_path_factory.mktemp("server") / "idx", labels="folders")
    names, labels = index.names, index.labels
    clusters = [
        {"id": i, "size": sum(lab == c for lab in labels), "paths": [n for n, lab in zip(names, labels, strict=True) if lab == c],
         "gps": None}
        for i, c in enumerate(index.classes)
    ]  # fmt: skip
    clusters[0]["paths"].append("gone/deleted.jpg")  # a file indexed when clustering ran but gone since
    (index.store.path / "clusters.json").write_text(
        json.dumps({"clusters": clusters, "noise": [], "metrics": {"clusters": len(clusters)}})
    )
    return index


@pytest.fixture(scope="session")
def app(server_index: Index):  # noqa: ANN201
    return create_app(server_index.store.path)


@pytest.fixture(scope="session")
def client(app) -> TestClient:  # noqa: ANN001
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="session")
def small_limit_client(server_index: Index) -> TestClient:
    """Same index (same loaded model), 1 MB upload limit."""
    with TestClient(create_app(server_index, max_upload_mb=1)) as c:
        yield c


@pytest.fixture(scope="session")
def unlabelled_client(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    """An index without labels and without clusters: class modes and classification must say why they can't."""
    index = Index.build(sample_dir, tmp_path_factory.mktemp("server-unlabelled") / "idx", labels="none")
    with TestClient(create_app(index)) as c:
        yield c


def _jpeg(path: Path) -> bytes:
    return path.read_bytes()


def _png(size: tuple[int, int], colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming a huge canvas, with one tiny IDAT: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _search(client: TestClient, data: bytes, name: str = "q.jpg", **form: object):  # noqa: ANN202
    return client.post(
        "/api/search", files={"file": (name, data, "image/jpeg")}, data={k: str(v) for k, v in form.items()}
    )


def _assert_error(response: httpx.Response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    msg = body["error"]
    assert isinstance(msg, str) and msg and "\n" not in msg
    for w in words:
        assert w.lower() in msg.lower(), msg
    return msg


# --- the page and health --------------------------------------------------------------------------------------------


def test_health_describes_the_index(client: TestClient, server_index: Index) -> None:
    h = client.get("/api/health").json()
    assert h["status"] == "ok"
    assert h["images"] == len(server_index) == 24
    assert h["classes"] == ["flower", "package", "portrait", "temple"]
    assert h["clusters"] is True
    assert h["modes"] == ["all", "same-class", "other-classes"]
    assert {".jpg", ".heic", ".avif", ".dng"} <= set(h["formats"]), "the page's file picker offers what is read"


def test_page_and_assets_are_served_without_external_urls(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert '<script src="/static/app.js">' in page.text
    for asset, kind in [("/static/app.js", "javascript"), ("/static/style.css", "text/css")]:
        r = client.get(asset)
        assert r.status_code == 200 and kind in r.headers["content-type"]
        assert "http://" not in r.text and "https://" not in r.text, f"{asset} refers to the network"
    assert "http://" not in page.text and "https://" not in page.text
    assert client.get("/openapi.json").json()["paths"].keys() >= {
        "/api/search", "/api/classify", "/api/images/{image_id}", "/api/thumbnails/{image_id}", "/api/clusters",
        "/api/health",
    }  # fmt: skip


# --- search -------------------------------------------------------------------------------------------------------


def test_upload_search_finds_the_same_subject(client: TestClient, sample_queries: Path) -> None:
    for query in sorted(sample_queries.glob("*.jpg")):
        r = _search(client, _jpeg(query), query.name, k=5)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["query"]["name"] == query.name and body["query"]["id"] is None
        matches = body["matches"]
        assert [m["rank"] for m in matches] == [1, 2, 3, 4, 5]
        scores = [m["score"] for m in matches]
        assert scores == sorted(scores, reverse=True)
        assert matches[0]["label"] == query.stem, f"{query.name}: top match is {matches[0]['name']}"
        assert all(m["thumbnail"] == f"/api/thumbnails/{m['id']}" for m in matches)
        assert all("path" not in m for m in matches), "absolute server paths must not leak"


def test_a_heic_upload_from_a_phone_works(client: TestClient, sample_queries: Path) -> None:
    """iPhones upload HEIC: it is decoded, searched like a JPEG, and the page gets a preview it can show (browsers
    other than Safari cannot show HEIC)."""
    from lookalike.samples import photo_exif

    pytest.importorskip("pillow_heif").register_heif_opener()  # the server registers it lazily; the test saves first
    for query in sorted(sample_queries.glob("*.jpg")):
        buf = io.BytesIO()
        img = Image.open(query)
        img.transpose(Image.Transpose.ROTATE_90).save(buf, "HEIF", exif=photo_exif(orientation=6).tobytes())
        r = client.post("/api/search", files={"file": (query.stem + ".HEIC", buf.getvalue(), "image/heic")})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["matches"][0]["label"] == query.stem, f"{query.name} as HEIC: top match {body['matches'][0]}"
        assert (body["query"]["width"], body["query"]["height"]) == img.size, "upright, as the phone showed it"
        preview = body["query"]["preview"]
        assert preview.startswith("data:image/jpeg;base64,")
        shown = Image.open(io.BytesIO(base64.b64decode(preview.split(",", 1)[1])))
        assert max(shown.size) <= 256 and (shown.width > shown.height) == (img.width > img.height)


def test_class_modes_restrict_the_matches(client: TestClient, sample_queries: Path) -> None:
    data = _jpeg(sample_queries / "temple.jpg")
    same = _search(client, data, k=4, mode="same-class").json()
    assert same["query_class"] == "temple" and same["class_source"] == "predicted"
    assert {m["label"] for m in same["matches"]} == {"temple"}
    other = _search(client, data, k=8, mode="other-classes").json()
    assert len(other["matches"]) == 8 and "temple" not in {m["label"] for m in other["matches"]}
    given = _search(client, data, k=3, mode="same-class", **{"class": "flower"}).json()
    assert given["class_source"] == "given" and {m["label"] for m in given["matches"]} == {"flower"}
    _assert_error(
        _search(client, data, mode="same-class", **{"class": "kitchen"}), 422, "unknown class"
    )  # the schema enumerates the classes


def test_an_uploaded_copy_of_an_indexed_image_is_not_its_own_match(client: TestClient, server_index: Index) -> None:
    i = 5
    r = _search(client, server_index.paths[i].read_bytes(), k=5, mode="same-class").json()
    assert r["query"]["same_as"] == [i]
    assert i not in [m["id"] for m in r["matches"]] and len(r["matches"]) == 5
    assert r["class_source"] == "label" and r["query_class"] == server_index.labels[i]


def test_search_by_id(client: TestClient, server_index: Index) -> None:
    i = 7
    post = client.post("/api/search", data={"id": str(i), "k": "3"}).json()
    get = client.get("/api/search", params={"id": i, "k": 3}).json()
    assert post == {**get, "seconds": post["seconds"]}
    assert post["query"]["id"] == i and post["query"]["name"] == server_index.names[i]
    ids = [m["id"] for m in post["matches"]]
    assert len(ids) == 3 and i not in ids
    # the stored vector is the query: same neighbours as uploading the file itself
    upload = _search(client, server_index.paths[i].read_bytes(), k=3).json()
    assert [m["id"] for m in upload["matches"]] == ids
    same = client.get("/api/search", params={"id": i, "k": 5, "mode": "same-class"}).json()
    assert same["class_source"] == "label" and {m["label"] for m in same["matches"]} == {server_index.labels[i]}


def test_concurrent_searches_all_succeed_and_agree(app, sample_queries: Path) -> None:  # noqa: ANN001
    data = _jpeg(sample_queries / "flower.jpg")

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            calls = [c.post("/api/search", files={"file": ("f.jpg", data)}, data={"k": "4"}) for _ in range(6)]
            calls.append(c.get("/api/health"))
            return await asyncio.gather(*calls)

    responses = asyncio.run(run())
    assert all(r.status_code == 200 for r in responses)
    ids = {tuple(m["id"] for m in r.json()["matches"]) for r in responses[:-1]}
    assert len(ids) == 1


def test_inference_does_not_block_the_event_loop(app, sample_queries: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """A search held inside inference must not stop the server from answering a health check meanwhile."""
    svc = app.state.service
    started, release = threading.Event(), threading.Event()
    original = svc.upload_query

    def held(data: bytes, name: str):  # noqa: ANN202
        started.set()
        assert release.wait(20), "the health check was not answered while a search was in inference"
        return original(data, name)

    monkeypatch.setattr(svc, "upload_query", held)
    data = _jpeg(sample_queries / "flower.jpg")

    async def run() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            search = asyncio.create_task(c.post("/api/search", files={"file": ("f.jpg", data)}))
            while not started.is_set():
                await asyncio.sleep(0.01)
            health = await c.get("/api/health")
            release.set()
            return health, await search

    health, search = asyncio.run(run())
    assert health.status_code == 200 and search.status_code == 200
    assert search.json()["matches"][0]["label"] == "flower"


@pytest.mark.parametrize("workers", [1, 2])
def test_at_most_workers_searches_run_at_once(
    server_index: Index,
    sample_queries: Path,
    monkeypatch: pytest.MonkeyPatch,
    workers: int,
) -> None:
    """--workers caps the model calls in flight: 6 simultaneous uploads, never more than `workers` inside at once."""
    app = create_app(server_index, workers=workers)
    svc = app.state.service
    lock, inside, peak = threading.Lock(), [0], [0]
    original = svc.upload_query

    def counted(data: bytes, name: str):  # noqa: ANN202
        with lock:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        try:
            time.sleep(0.3)  # long enough for every waiting request to try to get in
            return original(data, name)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(svc, "upload_query", counted)
    data = _jpeg(sample_queries / "flower.jpg")

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as c:
            return await asyncio.gather(
                *[c.post("/api/search", files={"file": ("f.jpg", data)}, data={"k": "3"}) for _ in range(6)]
            )

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * 6
    assert peak[0] == workers  # the cap is reached (requests do overlap) and never exceeded


def test_workers_default_to_the_cores_and_the_cli_passes_them_on(
    app,  # noqa: ANN001
    server_index: Index,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import uvicorn
    from typer.testing import CliRunner

    from lookalike import cli

    assert app.state.service.limiter.total_tokens == (os.cpu_count() or 1)
    served = []
    monkeypatch.setattr(uvicorn, "run", lambda application, **kw: served.append((application, kw)))
    res = CliRunner().invoke(
        cli.app, ["serve", "--index", str(server_index.store.path), "--workers", "3", "--port", "8123"]
    )
    assert res.exit_code == 0, res.output
    ((application, kw),) = served
    assert application.state.service.limiter.total_tokens == 3 and kw["port"] == 8123


# --- classification -------------------------------------------------------------------------------------------------


def test_classify(client: TestClient, sample_queries: Path, server_index: Index) -> None:
    for query in sorted(sample_queries.glob("*.jpg")):
        r = client.post("/api/classify", files={"file": (query.name, _jpeg(query))})
        assert r.status_code == 200, r.text
        p = r.json()
        assert p["label"] == query.stem
        assert set(p["probabilities"]) == set(server_index.classes)
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert max(p["probabilities"], key=p["probabilities"].get) == p["label"]
    search = _search(client, _jpeg(sample_queries / "portrait.jpg")).json()
    assert search["prediction"]["label"] == "portrait"


@pytest.mark.parametrize("i", [2, 12])
def test_an_indexed_image_does_not_vote_for_itself(client: TestClient, server_index: Index, i: int) -> None:
    """By id, as an uploaded copy, and in a search's prediction: the vote is the one the index casts without it."""
    from lookalike.classify import KNNHead, head_for

    head = head_for(server_index)  # no head fitted: the default kNN vote
    assert isinstance(head, KNNHead)
    X, y = server_index.vectors, np.array(server_index.labels, dtype=object)  # noqa: N806
    keep = np.arange(len(server_index)) != i

    def vote(rows: np.ndarray) -> dict[str, float]:
        knn = KNNHead(head.k, head.temperature, head.smoothing).fit(X[rows], y[rows], tune=False)
        return dict(zip(knn.classes_, knn.predict_proba(X[i : i + 1])[0].tolist(), strict=True))

    without, with_self = vote(keep), vote(np.ones(len(X), bool))
    assert max(abs(without[c] - with_self[c]) for c in without) > 1e-3  # the test can tell them apart
    by_id = client.post("/api/classify", data={"id": str(i)}).json()
    assert by_id["query"]["id"] == i
    copy = client.post("/api/classify", files={"file": ("c.jpg", server_index.paths[i].read_bytes())}).json()
    assert copy["query"]["same_as"] == [i]
    searched = client.get("/api/search", params={"id": i, "k": 3}).json()["prediction"]
    for got in (by_id, copy, searched):
        assert got["probabilities"] == pytest.approx(without, abs=1e-5)
        assert got["label"] == server_index.labels[i]


# --- images, thumbnails, clusters -----------------------------------------------------------------------------------


def test_images_are_served_by_id_only(client: TestClient, server_index: Index) -> None:
    r = client.get("/api/images/3")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.content == server_index.paths[3].read_bytes()


def test_thumbnails_are_small_and_cached(client: TestClient, server_index: Index) -> None:
    first = client.get("/api/thumbnails/4")
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    img = Image.open(io.BytesIO(first.content))
    src = Image.open(server_index.paths[4])
    assert max(img.size) <= 256 and abs(img.size[0] / img.size[1] - src.size[0] / src.size[1]) < 0.03
    cached = server_index.store.path / "thumbnails" / "256" / f"{server_index.store.column('hash')[4]}.jpg"
    assert cached.read_bytes() == first.content
    assert client.get("/api/thumbnails/4").content == first.content


def test_thumbnail_memory_cache_is_a_bounded_lru(server_index: Index, client: TestClient) -> None:
    """Only misses of the in-memory LRU go to disk: with room for 2, the least recently used one is evicted."""
    assert client.app.state.service.thumbs.capacity == 2048  # the documented default
    app = create_app(server_index, thumb_cache=2)
    thumbs = app.state.service.thumbs
    loaded: list[int] = []
    original = thumbs._from_disk

    def from_disk(image_id: int) -> bytes | None:
        loaded.append(image_id)
        return original(image_id)

    thumbs._from_disk = from_disk
    with TestClient(app) as c:
        first = {}
        for i in [0, 1, 0, 2, 0, 1, 2]:
            r = c.get(f"/api/thumbnails/{i}")
            assert r.status_code == 200
            assert first.setdefault(i, r.content) == r.content
            assert len(thumbs._lru) <= 2
    # 0 and 1 are loaded; 0 again is a hit (and now recent); 2 evicts 1, the least recent; 0 is still a hit;
    # 1 is loaded again (evicting 2); 2 is loaded again
    assert loaded == [0, 1, 2, 1, 2]
    assert list(thumbs._lru) == [1, 2]


def test_clusters_as_ids(client: TestClient, server_index: Index) -> None:
    data = client.get("/api/clusters").json()
    assert data["available"] is True
    assert [c["size"] for c in data["clusters"]] == [6, 6, 6, 6]  # the file that is gone is dropped
    for c in data["clusters"]:
        labels = {server_index.labels[i] for i in c["ids"]}
        assert len(labels) == 1 and c["labels"] == {labels.pop(): 6}


def test_cluster_contact_sheets(client: TestClient) -> None:
    r = client.get("/api/clusters/1/sheet.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    sheet = Image.open(io.BytesIO(r.content))
    assert sheet.format == "PNG" and sheet.width > sheet.height  # six thumbnails side by side
    assert client.get("/api/clusters/1/sheet.png").content == r.content
    _assert_error(client.get("/api/clusters/77/sheet.png"), 404, "no cluster 77")
    _assert_error(client.get("/api/clusters/x/sheet.png"), 422, "cluster_id")


def test_contact_sheets_follow_a_new_clustering(
    client: TestClient, server_index: Index, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A sheet is kept while the clusters stay the same, and made afresh when `lookalike cluster` runs again."""
    import lookalike.cluster
    from lookalike.cluster import cluster_index

    path = server_index.store.path / "clusters.json"
    saved = path.read_bytes()
    made: list[list[int]] = []
    real = lookalike.cluster.contact_sheet

    def spy(paths: list[Path], out: Path, **kw: object) -> Path:
        made.append([server_index.paths.index(p) for p in paths])
        return real(paths, out, **kw)

    monkeypatch.setattr(lookalike.cluster, "contact_sheet", spy)
    try:
        mixed = [0, 7, 13]  # a cluster no clustering of these photos would make
        names = server_index.names
        path.write_text(json.dumps({"clusters": [{"id": 1, "size": 3, "paths": [names[i] for i in mixed], "gps": None}],
                                    "noise": [], "metrics": {}}))  # fmt: skip
        old = client.get("/api/clusters/1/sheet.png")
        assert old.status_code == 200 and made == [mixed]
        assert Image.open(io.BytesIO(old.content)).width == 3 * (128 + 4) + 4  # three thumbnails side by side
        assert client.get("/api/clusters/1/sheet.png").content == old.content and len(made) == 1  # kept

        result = cluster_index(server_index)  # re-run `lookalike cluster`: clusters.json is replaced
        clusters = client.get("/api/clusters").json()["clusters"]
        new_ids = next(c["ids"] for c in clusters if c["id"] == 1)
        assert sorted(new_ids) != sorted(mixed) and result.to_dict()["clusters"][0]["id"] == 1
        new = client.get("/api/clusters/1/sheet.png")
        assert new.status_code == 200 and made[-1] == new_ids and len(made) == 2
        assert new.content != old.content
        expected = real([server_index.paths[i] for i in new_ids], tmp_path / "sheet.png",
                        title=f"cluster 1: {len(new_ids)} images")  # fmt: skip
        assert new.content == expected.read_bytes()
    finally:
        path.write_bytes(saved)
    assert client.get("/api/clusters").json()["clusters"][0]["size"] == 6


def test_clusters_missing_means_unavailable(client: TestClient, server_index: Index) -> None:
    path = server_index.store.path / "clusters.json"
    saved = path.read_bytes()
    path.unlink()
    try:
        assert client.get("/api/clusters").json() == {"available": False, "clusters": [], "noise": [], "metrics": {}}
        assert client.get("/api/health").json()["clusters"] is False
    finally:
        path.write_bytes(saved)
    assert client.get("/api/clusters").json()["available"] is True


def test_a_clusters_file_is_sent_as_documented_or_not_at_all(client: TestClient, server_index: Index) -> None:
    """clusters.json may come from another version: figures the reply does not document are not sent, and a file
    that does not hold what `lookalike cluster` writes means no clusters (a warning in the log), not a 500."""
    path = server_index.store.path / "clusters.json"
    saved = path.read_bytes()
    raw = json.loads(saved)
    try:
        path.write_text(json.dumps({**raw, "metrics": {"clusters": 4, "modularity": 0.5}, "method": "graph"}))
        data = client.get("/api/clusters").json()
        assert data["available"] is True and data["metrics"] == {"clusters": 4}
        path.write_text(json.dumps({**raw, "clusters": [{**raw["clusters"][0], "gps": "near the sea"}]}))
        assert client.get("/api/clusters").json() == {"available": False, "clusters": [], "noise": [], "metrics": {}}
        assert client.get("/api/health").json()["clusters"] is False
    finally:
        path.write_bytes(saved)
    assert client.get("/api/clusters").json()["available"] is True


def test_an_index_without_labels_or_clusters(unlabelled_client: TestClient, sample_queries: Path) -> None:
    h = unlabelled_client.get("/api/health").json()
    assert h["classes"] == [] and h["classify"] is False and h["clusters"] is False
    data = _jpeg(sample_queries / "temple.jpg")
    ok = _search(unlabelled_client, data, k=3).json()
    assert len(ok["matches"]) == 3 and ok["prediction"] is None
    # the request is well formed; the index's state refuses it (a 409 its schema lists, saying what to run)
    _assert_error(_search(unlabelled_client, data, mode="same-class"), 409, "no labels", "--labels folders")
    _assert_error(unlabelled_client.get("/api/search?id=0&mode=other-classes"), 409, "no labels", "--labels folders")
    _assert_error(unlabelled_client.post("/api/classify", files={"file": ("q.jpg", data)}), 409, "no labels")
    _assert_error(unlabelled_client.post("/api/classify", data={"id": "0"}), 409, "cannot classify", "--labels")


# --- bad input ------------------------------------------------------------------------------------------------------


def test_bad_images_get_a_clear_400(client: TestClient, sample_queries: Path) -> None:
    good = _jpeg(sample_queries / "temple.jpg")
    _assert_error(_search(client, b"hello, I am text", "notes.txt"), 400, "notes.txt", "not an image")
    _assert_error(_search(client, b"", "empty.jpg"), 422, "empty")  # the schema says a file is at least a byte
    _assert_error(_search(client, good[: len(good) // 2], "half.jpg"), 400, "half.jpg")
    _assert_error(_search(client, _png((1, 1)), "dot.png"), 400, "too small", "1×1")
    _assert_error(_search(client, _png_header_only(40000, 40000), "bomb.png"), 400, "too many pixels")
    _assert_error(client.post("/api/classify", files={"file": ("x.txt", b"nope")}), 400, "not an image")


def test_uploads_over_the_limit_get_413(small_limit_client: TestClient) -> None:
    big = b"\xff\xd8" + bytes(1_300_000)  # 1.3 MB, over the 1 MB limit
    _assert_error(_search(small_limit_client, big, "big.jpg"), 413, "too large", "1 MB")
    _assert_error(small_limit_client.post("/api/classify", files={"file": ("big.jpg", big)}), 413, "too large")
    assert small_limit_client.get("/api/health").status_code == 200


def test_a_streamed_body_is_cut_off_at_the_limit_not_read_to_the_end(server_index: Index) -> None:
    """No Content-Length: the server counts chunks as they arrive and stops asking for more past the limit."""
    app = create_app(server_index, max_upload_mb=1)
    chunk = b"x" * 65536
    total_chunks = 1000  # 64 MB if read to the end
    sent = 0
    messages: list[dict] = []

    head = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n\r\n'

    async def receive() -> dict:
        nonlocal sent
        sent += 1
        return {"type": "http.request", "body": head if sent == 1 else chunk, "more_body": sent < total_chunks}

    async def send(message: dict) -> None:
        messages.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/api/search", "raw_path": b"/api/search", "root_path": "", "query_string": b"",
        "headers": [(b"content-type", b"multipart/form-data; boundary=xyz"), (b"host", b"test")],
        "client": ("127.0.0.1", 1234), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    assert start["status"] == 413 and "too large" in json.loads(body)["error"]
    assert sent <= 1 + (1024 * 1024 + 65536) // len(chunk) + 1, f"read {sent} chunks of a 1 MB-limited body"


def test_missing_or_invalid_fields_get_422(client: TestClient, sample_queries: Path) -> None:
    data = _jpeg(sample_queries / "temple.jpg")
    _assert_error(client.post("/api/search", data={"k": "5"}), 422, "file", "id")
    _assert_error(client.post("/api/search", files={"file": ("q.jpg", data)}, data={"id": "1"}), 422, "either")
    _assert_error(client.post("/api/classify"), 422, "file")
    _assert_error(client.post("/api/search", json={"k": 5}), 422, "file")
    _assert_error(_search(client, data, k=0), 422, "k")
    _assert_error(_search(client, data, k=1000), 422, "k")
    _assert_error(_search(client, data, k="lots"), 422, "k")
    _assert_error(_search(client, data, mode="sideways"), 422, "mode")
    _assert_error(client.get("/api/search"), 422, "id")


def test_unknown_ids_get_404(client: TestClient) -> None:
    for url in ["/api/images/24", "/api/thumbnails/99999", "/api/images/-1", "/api/search?id=24"]:
        _assert_error(client.get(url), 404, "no image with id")
    _assert_error(client.post("/api/search", data={"id": "1000"}), 404, "no image with id 1000")
    _assert_error(client.post("/api/classify", data={"id": "-3"}), 404, "no image")
    _assert_error(client.get("/api/nothing-here"), 404, "not found")


def test_path_traversal_is_refused(client: TestClient) -> None:
    for url in [
        "/api/images/..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/images/%2Fetc%2Fpasswd",
        "/api/thumbnails/..%2Fmeta.json",
        "/api/images/1%2F..%2F..%2Fmeta.json",
        "/static/..%2F..%2F..%2Fetc%2Fpasswd",
        "/static/..%2Fapp.py",
        "/static/%2e%2e/app.py",
    ]:
        r = client.get(url)
        assert 400 <= r.status_code < 500, url
        assert "root:" not in r.text and "import" not in r.text and '"format"' not in r.text, url
        assert set(r.json()) == {"error"}, url


def test_the_server_keeps_serving_after_bad_input(client: TestClient, sample_queries: Path) -> None:
    for bad in [b"junk", _png((1, 1)), _png_header_only(30000, 30000), b""]:
        assert _search(client, bad).status_code == (422 if bad == b"" else 400)
    r = _search(client, _jpeg(sample_queries / "package.jpg"), k=2)
    assert r.status_code == 200 and r.json()["matches"][0]["label"] == "package"


def test_bad_server_options_are_one_line_errors(server_index: Index, tmp_path: Path) -> None:
    from lookalike.errors import LookalikeError

    with pytest.raises(LookalikeError, match="max-upload-mb"):
        create_app(server_index, max_upload_mb=0)
    with pytest.raises(LookalikeError, match="workers"):
        create_app(server_index, workers=0)
    with pytest.raises(LookalikeError, match="no lookalike index"):
        create_app(tmp_path / "nowhere")


def test_a_name_that_is_not_utf8_is_served_readably_and_opened_exactly(sample_dir: Path, tmp_path: Path) -> None:
    import os
    import shutil

    root = tmp_path / "photos"
    shutil.copytree(sample_dir / "flower", root / "flower")
    odd = os.fsdecode(b"flower/\xff\xfe.jpg")
    src = sorted((root / "flower").glob("*.jpg"))[0]
    Image.open(src).rotate(90, expand=True).save(root / odd)  # distinct content: not a byte copy of another photo
    index = Index.build(root)
    i = index.names.index(odd)
    with TestClient(create_app(index)) as c:
        res = c.get("/api/search", params={"id": 0, "k": len(index) - 1})
        assert res.status_code == 200
        names = [m["name"] for m in json.loads(res.content.decode("utf-8"))["matches"]]
        assert "flower/\ufffd\ufffd.jpg" in names
        assert c.get(f"/api/thumbnails/{i}").status_code == 200
        assert c.get(f"/api/images/{i}").content == (root / odd).read_bytes()
        assert json.loads(c.get("/api/search", params={"id": i}).content.decode("utf-8"))["matches"]


# --- the guard: token, security headers, CORS, offline docs -------------------------------------------------------

TOKEN = "a-long-enough-test-token-42"


@pytest.fixture(scope="module")
def guarded(server_index: Index) -> TestClient:
    with TestClient(create_app(server_index, token=TOKEN)) as c:
        yield c


def test_token_required_for_every_api_call_page_shell_open(guarded: TestClient) -> None:
    for path in ("/api/health", "/api/search?id=0", "/api/thumbnails/0", "/api/images/0", "/api/clusters",
                 "/api/clusters/1/sheet.png"):  # fmt: skip
        r = guarded.get(path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"].startswith("Bearer") and "token" in r.json()["error"]
    assert guarded.post("/api/search", data={"id": "0"}).status_code == 401
    assert guarded.get("/api/health", headers={"Authorization": f"Bearer {TOKEN}x"}).status_code == 401
    assert guarded.get("/api/health", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    assert guarded.get("/api/health", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert guarded.get("/api/search?id=0", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200
    for path in ("/", "/static/app.js", "/docs", "/openapi.json"):  # no index data in these
        assert guarded.get(path).status_code == 200, path


def test_login_sets_an_httponly_strict_cookie_that_opens_the_api(server_index: Index) -> None:
    with TestClient(create_app(server_index, token=TOKEN)) as c:
        assert c.post("/api/login", data={"token": "wrong-token-wrong-token"}).status_code == 401
        assert c.get("/api/health").status_code == 401
        r = c.post("/api/login", data={"token": TOKEN})
        assert r.status_code == 204
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert c.get("/api/health").status_code == 200
        assert c.get("/api/thumbnails/0").status_code == 200  # <img> tags carry the cookie, not a header


def test_short_token_refused(server_index: Index) -> None:
    from lookalike.errors import ConfigError

    with pytest.raises(ConfigError, match="at least 16") as info:
        create_app(server_index, token="short")
    assert info.value.setting == "token"


def test_security_headers_on_every_response(client: TestClient, guarded: TestClient) -> None:
    for c, path in [(client, "/"), (client, "/api/health"), (client, "/api/thumbnails/0"), (client, "/api/nope"),
                    (guarded, "/api/health"), (client, "/docs")]:  # fmt: skip
        h = c.get(path).headers
        csp = h["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert h["x-content-type-options"] == "nosniff"
        assert "access-control-allow-origin" not in h  # no CORS unless asked for
    r = client.get("/api/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_cors_only_for_named_origins(server_index: Index) -> None:
    with TestClient(create_app(server_index, cors_origins=["https://ok.example"])) as c:
        ok = c.get("/api/health", headers={"Origin": "https://ok.example"})
        assert ok.headers["access-control-allow-origin"] == "https://ok.example"
        bad = c.get("/api/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in bad.headers


def test_docs_served_offline_from_the_package(client: TestClient) -> None:
    page = client.get("/docs").text
    assert "cdn" not in page.lower() and "http" not in page.replace("http-equiv", "")
    assert "<script>" not in page  # no inline script: the CSP would block it
    for src in ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css", "/static/docs.js"):
        assert src in page
        r = client.get(src)
        assert r.status_code == 200 and len(r.content) > 100, src
    # Swagger UI 5 or later: 4.x and earlier cannot render OpenAPI 3.1, which FastAPI writes (tests/test_browser.py
    # checks that every operation is shown)
    bundle = client.get("/docs-assets/swagger-ui-bundle.js").text
    assert client.get("/openapi.json").json()["openapi"].startswith("3.1")
    assert "OpenAPI 3.1" in bundle or "isOAS31" in bundle, "a Swagger UI that does not know OpenAPI 3.1"


def test_options_allow_header_lists_every_method(client: TestClient) -> None:
    r = client.options("/api/search")
    assert r.status_code == 405 and set(r.headers["allow"].split(", ")) >= {"GET", "POST"}


def test_serve_refuses_network_without_token(server_index: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from lookalike.errors import ConfigError
    from lookalike.server.app import is_loopback, serve

    started: list[str] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, log_level: started.append(host))
    with pytest.raises(ConfigError, match=r"token needed to serve on 0\.0\.0\.0"):
        serve(server_index.store.path, host="0.0.0.0")
    assert started == []
    serve(server_index.store.path, host="0.0.0.0", insecure=True)
    serve(server_index.store.path, host="0.0.0.0", token=TOKEN)
    serve(server_index.store.path, host="127.0.0.1")
    assert started == ["0.0.0.0", "0.0.0.0", "127.0.0.1"]
    assert is_loopback("localhost") and is_loopback("::1") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("::")


# --- search filters and the map -------------------------------------------------------------------------------------


def test_search_filters_act_inside_the_search(client: TestClient, server_index: Index) -> None:
    flowers = sum(lab == "flower" for lab in server_index.labels)
    for r in (
        client.get("/api/search", params={"id": 0, "k": flowers, "path": "flower/**"}),
        client.post("/api/search", data={"id": "0", "k": str(flowers), "path": "flower/**"}),
    ):
        body = r.json()
        assert r.status_code == 200, body
        matches = body["matches"]
        expected = flowers - (server_index.labels[0] == "flower")  # the query is never its own match
        assert len(matches) == expected and {m["label"] for m in matches} == {"flower"}
        assert body["filter"] == {"path": "flower/**"} and body["note"] is None
    body = client.get("/api/search", params={"id": 0, "k": 5, "label": "temple", "min_score": "-1"}).json()
    assert len(body["matches"]) == 5 and {m["label"] for m in body["matches"]} == {"temple"}
    best = client.get("/api/search", params={"id": 0, "k": 5}).json()["matches"]
    cut = best[2]["score"] - 1e-6  # replies round scores to 6 places: the third's own score may be just below it
    body = client.get("/api/search", params={"id": 0, "k": 5, "min_score": f"{cut:.7f}"}).json()
    assert [m["id"] for m in body["matches"]] == [m["id"] for m in best if m["score"] >= cut]
    # a score as shown (6 decimals) passed back as min_score keeps its match, whichever way the rounding went
    from lookalike.filters import SearchFilter

    for m in server_index.search(server_index.vectors[0], k=5):
        kept = server_index.search(server_index.vectors[0], k=5, where=SearchFilter(min_score=round(m.score, 6)))
        assert m.id in [k.id for k in kept]


def test_a_filter_that_leaves_nothing_says_why(client: TestClient) -> None:
    r = client.post("/api/search", data={"id": "0", "k": "5", "after": "2030-01-01"})
    assert r.status_code == 200 and r.json()["matches"] == []
    assert "no image taken after 2030-01-01" in r.json()["note"]
    r = client.get("/api/search", params={"id": 0, "min_score": "0.9999"})
    assert r.status_code == 200 and "no match scores at least 0.9999" in r.json()["note"]


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("after", "last year", "after must be a date"),
        ("before", "2023-02-30", "before must be a date"),
        ("near", "95,2,1", "latitude must be between -90 and 90"),
        ("near", "48,2", "near must be latitude,longitude,radius"),
        ("min_score", "high", "min_score must be a number"),
    ],
)
def test_malformed_filters_are_one_line_400s(client: TestClient, field: str, value: str, words: str) -> None:
    for r in (
        client.get("/api/search", params={"id": 0, field: value}),
        client.post("/api/search", data={"id": "0", field: value}),
    ):
        assert r.status_code == 400
        assert words in r.json()["error"] and "\n" not in r.json()["error"]


@pytest.mark.parametrize(
    ("field", "value", "ok"),
    [
        ("after", "20230101", False),  # Python reads it; the documented form is 2023-01-01
        ("after", "2023-01-01 10:00", False),
        ("before", " 2023-12-31T18:00:59.5 ", True),
        ("min_score", "1e3", False),
        ("min_score", "1e-3", True),
        ("min_score", "5e-1", True),
        ("min_score", "1.0001", False),
        ("min_score", "-.5", True),
        ("near", "48.8,2.3,0", False),
        ("near", "48.8 , -180 , .5", True),
        ("near", "48.8,2.3,1\t", False),
    ],
)
def test_filters_accept_exactly_their_documented_form(client: TestClient, field: str, value: str, ok: bool) -> None:
    """The schema's pattern for a filter field is the server's check: in it is accepted, outside it is a 400."""
    import re

    pattern = next(p for p in client.get("/openapi.json").json()["paths"]["/api/search"]["get"]["parameters"]
                   if p["name"] == field)["schema"]["pattern"]  # fmt: skip
    assert bool(re.fullmatch(pattern.strip("^$"), value, re.ASCII)) == ok
    for r in (
        client.get("/api/search", params={"id": 0, field: value}),
        client.post("/api/search", data={"id": "0", field: value}),
    ):
        assert r.status_code == (200 if ok else 400), r.text


def test_the_upload_is_a_file_part_in_the_schema(client: TestClient) -> None:
    """A one-type ``anyOf`` hid the upload's binary type: generated clients sent it as a text field (a 422)."""
    schema = client.get("/openapi.json").json()
    for path in ("/api/search", "/api/classify"):
        ref = schema["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
        props = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]["properties"]
        assert props["file"]["contentMediaType"] == "application/octet-stream"
        assert not any("anyOf" in p or p.get("type") == "null" for p in props.values())


def test_map_endpoints(client: TestClient, server_index: Index) -> None:
    from lookalike.explore import COLORS, compute_map, load_map
    from lookalike.store import MAP_FILE

    meta = client.get("/api/map").json()
    assert meta["available"] is False and "lookalike map" in meta["reason"]
    assert client.get("/api/map/points").status_code == 404
    compute_map(server_index, "pca", color="folder", suspects=True)
    try:
        n = len(server_index)
        meta = client.get("/api/map").json()
        assert meta["available"] and meta["count"] == n and meta["method"] == "pca" and meta["color"] == "folder"
        assert meta["points"]["order"] == list(COLORS) and meta["colorings"]["label"]["legend"] == server_index.classes
        assert client.get("/api/health").json()["map"] is True
        blob = client.get("/api/map/points")
        assert blob.headers["content-type"] == "application/octet-stream"
        assert len(blob.content) == meta["points"]["bytes"] == n * 8 + len(COLORS) * n * 2
        xy = np.frombuffer(blob.content, "<f4", 2 * n).reshape(n, 2)
        assert np.array_equal(xy, load_map(server_index)[0].xy)
        labels = np.frombuffer(blob.content, "<u2", n, offset=8 * n)
        legend = meta["colorings"]["label"]["legend"]
        assert [legend[c - 1] for c in labels] == server_index.labels
        clusters = np.frombuffer(blob.content, "<u2", n, offset=8 * n + 2 * n * COLORS.index("cluster"))
        assert clusters.min() >= 1  # every image is in one of the saved clusters
        _check_uniqueness_colouring(client, server_index)
        ids = [3, 0, 11]
        sel = client.post("/api/map/selection", json={"ids": ids}).json()
        assert sel["paths"] == [str(server_index.paths[i]) for i in ids]
        sheet = client.post("/api/map/sheet.png", json={"ids": ids})
        assert sheet.status_code == 200 and sheet.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert client.post("/api/map/selection", json={"ids": [n]}).status_code == 404
        assert client.post("/api/map/selection", json={"ids": []}).status_code == 422
        assert client.post("/api/map/selection", json={"ids": "all"}).status_code == 422
        for path in ("/api/map/selection", "/api/map/sheet.png"):  # JSON true is no id 1, "3" no id 3
            for bad in ([False], [True, 2], ["3"], [1.0]):
                _assert_error(client.post(path, json={"ids": bad}), 422, "ids")
    finally:
        (server_index.store.path / MAP_FILE).unlink()
    assert client.get("/api/map").json()["available"] is False


def _check_uniqueness_colouring(client: TestClient, index: Index) -> None:
    """No scores: an empty ramp (the page says to run `lookalike unique`); scores stored while the server runs: the
    next reply carries them as codes 1-255 on a [0, 1] ramp, without a restart or a new layout."""
    from lookalike.explore import COLORS, TIME_STEPS
    from lookalike.store import UNIQUENESS_FILE
    from lookalike.uniqueness import uniqueness

    n, offset = len(index), 8 * len(index) + 2 * len(index) * COLORS.index("uniqueness")
    meta = client.get("/api/map").json()
    assert meta["colorings"]["uniqueness"] == {"legend": [], "kind": "ramp"}
    assert not np.frombuffer(client.get("/api/map/points").content, "<u2", n, offset=offset).any()
    found = uniqueness(index)
    try:
        meta = client.get("/api/map").json()
        assert meta["colorings"]["uniqueness"]["kind"] == "ramp" and len(meta["colorings"]["uniqueness"]["legend"]) == 2
        codes = np.frombuffer(client.get("/api/map/points").content, "<u2", n, offset=offset)
        assert codes.min() >= 1 and codes.max() <= TIME_STEPS
        expected = 1 + np.round(np.clip(found.scores, 0, 1) * (TIME_STEPS - 1))
        assert np.array_equal(codes, expected.astype(np.uint16))
        assert codes[int(np.argmax(found.scores))] > codes[int(np.argmin(found.scores))]
    finally:
        (index.store.path / UNIQUENESS_FILE).unlink()
    assert client.get("/api/map").json()["colorings"]["uniqueness"]["legend"] == []


def test_a_map_file_is_sent_as_documented_or_not_at_all(client: TestClient, server_index: Index) -> None:
    """What a map file records beyond what the reply documents is not sent; a header that is not what `lookalike
    map` writes means no map, with the reason, not a 500."""
    from lookalike.explore import CollectionMap, compute_map
    from lookalike.store import MAP_FILE

    path = server_index.store.path / MAP_FILE
    stored = compute_map(server_index, "pca")
    try:
        stored.info["made_by"] = "a newer lookalike"
        stored.save(path)
        meta = client.get("/api/map").json()
        assert meta["available"] is True and "made_by" not in meta["info"] and meta["info"]["count"] == len(stored.xy)
        broken = CollectionMap.load(path)
        broken.info["seed"] = "zero"
        broken.save(path)
        meta = client.get("/api/map").json()
        assert meta["available"] is False and "unreadable" in meta["reason"] and meta["count"] == len(server_index)
        assert client.get("/api/health").json()["map"] is False
        assert client.get("/api/map/points").status_code == 404
    finally:
        path.unlink()


def test_a_reply_outside_its_model_is_a_loud_500_not_a_silent_drop(app, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """Replies are checked against their strict models: a field the model does not name, or a value of the wrong
    type, is an error a test sees, never dropped or passed on undocumented."""
    from lookalike.server.replies import HealthReply

    svc = app.state.service
    real = svc.health
    c = TestClient(app, raise_server_exceptions=False)
    assert set(c.get("/api/health").json()) == set(HealthReply.model_fields)
    monkeypatch.setattr(svc, "health", lambda: {**real(), "uptime": 1.5})
    _assert_error(c.get("/api/health"), 500, "internal error")
    monkeypatch.setattr(svc, "health", lambda: {**real(), "images": "many"})
    _assert_error(c.get("/api/health"), 500, "internal error")
    monkeypatch.setattr(svc, "plan_with", lambda keepers: {"lookalike_plan": 1})
    _assert_error(c.post("/api/duplicates/plan"), 500, "internal error")


# --- duplicates ------------------------------------------------------------------------------------------------------


def test_duplicates_view_decisions_and_plan_download_move_nothing(built: Path, tmp_path: Path) -> None:
    import hashlib
    import shutil

    root = tmp_path / "photos"
    shutil.copytree(built, root)

    def files() -> dict[str, str]:
        return {
            p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*.jpg")
            if ".lookalike" not in p.parts
        }

    before = files()
    with TestClient(create_app(root / ".lookalike")) as c:
        plan = c.get("/api/duplicates").json()
        assert plan["summary"]["groups"] == 4
        temple = next(g for g in plan["groups"] if g["keeper"] == "temple.jpg")
        assert temple["why"] and all(
            "id" in f and f["thumbnail"].startswith("/api/thumbnails/") for f in temple["files"]
        )
        other = temple["files"][-1]
        r = c.post("/api/duplicates/plan", data={"keepers": [other["id"]]})
        assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
        flipped = next(g for g in r.json()["groups"] if other["path"] in [f["path"] for f in g["files"]])
        assert flipped["keeper"] == other["path"] and flipped["why"] == "chosen by hand"
        ids = [f["id"] for f in temple["files"]]
        r = c.post("/api/duplicates/decisions", data={"kind": "not-duplicates", "ids": ids})
        assert r.status_code == 200, r.text
        again = c.get("/api/duplicates").json()
        assert not any("temple.jpg" in [f["path"] for f in g["files"]] for g in again["groups"])
        assert c.post("/api/duplicates/decisions", data={"kind": "maybe", "ids": ids}).status_code == 422
        assert (
            c.post("/api/duplicates/decisions", data={"kind": "keep-all", "ids": [ids[0], 10_000]}).status_code == 404
        )
        for few in ([ids[0]], [ids[0], ids[0]]):  # the schema says: two or more, each once
            r = c.post("/api/duplicates/decisions", data={"kind": "keep-all", "ids": few})
            assert r.status_code == 422, r.text
    assert files() == before  # the page never moves or deletes anything


# --- geometric verification ---------------------------------------------------------------------------------------


def test_rerank_reports_inliers_and_puts_verified_matches_first(client: TestClient, server_index: Index) -> None:
    i = server_index.names.index(next(n for n in server_index.names if n.startswith("temple/")))
    plain = client.get("/api/search", params={"id": i, "k": 5}).json()
    assert all(m["inliers"] is None for m in plain["matches"]) and plain["rerank"] == 0
    r = client.post("/api/search", data={"id": i, "k": 5, "rerank": 20})
    assert r.status_code == 200, r.text
    matches = r.json()["matches"]
    assert len(matches) == 5 and all("inliers" in m for m in matches)
    counts = [m["inliers"] or 0 for m in matches]
    assert counts[0] >= 15 and matches[0]["name"].startswith("temple/")
    verified = [c >= 15 for c in counts]
    assert verified == sorted(verified, reverse=True)  # no unverified match above a verified one
    assert client.post("/api/search", data={"id": i, "rerank": 10_000}).status_code == 422


def test_rerank_of_an_upload_uses_its_own_pixels(client: TestClient, server_index: Index) -> None:
    path = next(p for p in server_index.paths if p.parent.name == "temple")
    img = Image.open(path).rotate(2)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92)
    r = client.post("/api/search", data={"k": 3, "rerank": 10}, files={"file": ("q.jpg", buf.getvalue(), "image/jpeg")})
    assert r.status_code == 200, r.text
    assert r.json()["matches"][0]["inliers"] >= 15


def test_match_coordinates_and_picture(client: TestClient, server_index: Index) -> None:
    temples = [i for i, n in enumerate(server_index.names) if n.startswith("temple/")]
    r = client.get("/api/matches", params={"a": temples[0], "b": temples[1]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] in ("match", "no-match", "unknown")
    assert body["inliers"] == sum(1 for row in body["matches"] if row[4])
    w, h = body["size_a"]
    assert all(len(row) == 5 and 0 <= row[0] <= w and 0 <= row[1] <= h for row in body["matches"])
    png = client.get("/api/matches.png", params={"a": temples[0], "b": temples[1]})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).width > 100
    bad = client.get("/api/matches", params={"a": temples[0], "b": 10_000})
    assert bad.status_code == 404 and "no image with id" in bad.json()["error"]


# --- what the schema promises holds: statuses listed, strict types, unparsable bodies (issue 32) -------------------


def test_an_unparsable_body_is_a_422_as_the_schema_says(client: TestClient) -> None:
    """FastAPI answers a body its parser cannot read (JSON that is not UTF-8, multipart without a boundary) with a
    400 "There was an error parsing the body", which no operation listed; it is the 422 of any malformed request."""
    schema = client.get("/openapi.json").json()
    for body, kind, path in [
        (b"\xa9K\xfd\x1d", "application/json", "/api/map/sheet.png"),
        (b"\xff\xfe{", "application/json", "/api/map/selection"),
        (b"--x\r\nbroken", "multipart/form-data", "/api/duplicates/plan"),  # no boundary
        (b"--x\r\nbroken", "multipart/form-data", "/api/search"),
    ]:
        r = client.post(path, content=body, headers={"content-type": kind})
        assert "422" in schema["paths"][path]["post"]["responses"], path
        _assert_error(r, 422, "cannot be parsed", kind)


def test_every_state_dependent_refusal_is_listed_with_its_reason(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()["paths"]
    for method, path in [("get", "/api/search"), ("post", "/api/search"), ("post", "/api/classify")]:
        why = schema[path][method]["responses"]["409"]["description"]
        assert "without labels" in why or "two labelled" in why, (method, path)
        assert "400" in schema[path][method]["responses"]
    for path in ("/api/duplicates/plan", "/api/duplicates/decisions"):
        content = schema[path]["post"]["requestBody"]["content"]
        assert list(content) == ["multipart/form-data"], "a urlencoded string is also a form: documented multipart"


def test_a_class_is_one_of_the_index_classes(client: TestClient, server_index: Index) -> None:
    schema = client.get("/openapi.json").json()
    param = next(p for p in schema["paths"]["/api/search"]["get"]["parameters"] if p["name"] == "class")
    assert param["schema"]["enum"] == server_index.classes
    _assert_error(client.get("/api/search?id=0&class=kitchen"), 422, "unknown class")
    _assert_error(client.get("/api/search?id=0&mode=same-class&class=kitchen"), 422, "unknown class")
    assert client.get(f"/api/search?id=0&mode=same-class&class={server_index.classes[1]}").status_code == 200
