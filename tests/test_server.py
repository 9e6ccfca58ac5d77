"""The JSON API and page server: searches, ids, thumbnails, clusters, and every kind of bad input a client can send."""

from __future__ import annotations

import asyncio
import io
import json
import struct
import threading
import zlib
from pathlib import Path

import httpx
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


def test_class_modes_restrict_the_matches(client: TestClient, sample_queries: Path) -> None:
    data = _jpeg(sample_queries / "temple.jpg")
    same = _search(client, data, k=4, mode="same-class").json()
    assert same["query_class"] == "temple" and same["class_source"] == "predicted"
    assert {m["label"] for m in same["matches"]} == {"temple"}
    other = _search(client, data, k=8, mode="other-classes").json()
    assert len(other["matches"]) == 8 and "temple" not in {m["label"] for m in other["matches"]}
    given = _search(client, data, k=3, mode="same-class", **{"class": "flower"}).json()
    assert given["class_source"] == "given" and {m["label"] for m in given["matches"]} == {"flower"}
    _assert_error(_search(client, data, mode="same-class", **{"class": "kitchen"}), 400, "unknown class")


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


# --- classification -------------------------------------------------------------------------------------------------


def test_classify(client: TestClient, sample_queries: Path, server_index: Index) -> None:
    if not callable(getattr(Index, "classify", None)):
        r = client.post("/api/classify", files={"file": ("q.jpg", _jpeg(sample_queries / "temple.jpg"))})
        _assert_error(r, 400, "classify")
        pytest.skip("Index.classify (the classification issue) is not in this checkout; the API says so")
    for query in sorted(sample_queries.glob("*.jpg")):
        r = client.post("/api/classify", files={"file": (query.name, _jpeg(query))})
        assert r.status_code == 200, r.text
        p = r.json()
        assert p["label"] == query.stem
        assert set(p["probabilities"]) == set(server_index.classes)
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert max(p["probabilities"], key=p["probabilities"].get) == p["label"]
    by_id = client.post("/api/classify", data={"id": "2"}).json()
    assert by_id["query"]["id"] == 2 and by_id["label"] in server_index.classes
    # an indexed image does not vote for itself, whether asked by id or uploaded as a copy
    copy = client.post("/api/classify", files={"file": ("c.jpg", server_index.paths[2].read_bytes())}).json()
    assert copy["probabilities"] == pytest.approx(by_id["probabilities"], abs=1e-5)
    assert max(by_id["probabilities"].values()) < 1.0
    search = _search(client, _jpeg(sample_queries / "portrait.jpg")).json()
    assert search["prediction"]["label"] == "portrait"


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


def test_an_index_without_labels_or_clusters(unlabelled_client: TestClient, sample_queries: Path) -> None:
    h = unlabelled_client.get("/api/health").json()
    assert h["classes"] == [] and h["classify"] is False and h["clusters"] is False
    data = _jpeg(sample_queries / "temple.jpg")
    ok = _search(unlabelled_client, data, k=3).json()
    assert len(ok["matches"]) == 3 and ok["prediction"] is None
    _assert_error(_search(unlabelled_client, data, mode="same-class"), 400, "no labels")
    _assert_error(unlabelled_client.post("/api/classify", files={"file": ("q.jpg", data)}), 400, "no labels")


# --- bad input ------------------------------------------------------------------------------------------------------


def test_bad_images_get_a_clear_400(client: TestClient, sample_queries: Path) -> None:
    good = _jpeg(sample_queries / "temple.jpg")
    _assert_error(_search(client, b"hello, I am text", "notes.txt"), 400, "notes.txt", "not an image")
    _assert_error(_search(client, b"", "empty.jpg"), 400, "empty")
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
        assert _search(client, bad).status_code == 400
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
    assert files() == before  # the page never moves or deletes anything
