"""End to end: the real server on a loopback port, the page driven in headless Chromium (Debian's, via Playwright).

Set LOOKALIKE_DOCS_SCREENSHOT=1 to also refresh docs/server.png (the README's picture) from this run.
Without chromium or Playwright the test is skipped, except when LOOKALIKE_REQUIRE_BROWSER=1 (as .ci/run sets it):
then it fails, so CI cannot pass without having run it.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
DOCS_PNG = Path(__file__).resolve().parent.parent / "docs" / "server.png"

pytestmark = pytest.mark.browser


def _missing(what: str) -> None:
    """Skip without ``what``; fail when LOOKALIKE_REQUIRE_BROWSER is set (CI must run this test, not skip it)."""
    if os.environ.get("LOOKALIKE_REQUIRE_BROWSER", "") not in ("", "0"):
        pytest.fail(f"LOOKALIKE_REQUIRE_BROWSER is set but {what}", pytrace=False)
    pytest.skip(what)


@pytest.fixture(scope="module", autouse=True)
def _requirements() -> None:
    """Checked before the server is started and the index built."""
    if not CHROMIUM.is_file():
        _missing(f"there is no chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        have_playwright = False
    else:
        have_playwright = True
    if not have_playwright:
        _missing('playwright is not installed (it is in the dev extra: pip install -e ".[dev]")')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """uvicorn in a thread on a free loopback port, over an index with labels and saved clusters."""
    import uvicorn

    from lookalike import Index
    from lookalike.server.app import create_app

    index = Index.build(sample_dir, tmp_path_factory.mktemp("browser") / "idx", labels="folders")
    names, labels = index.names, index.labels
    clusters = [
        {"id": i, "size": labels.count(c), "paths": [n for n, lab in zip(names, labels, strict=True) if lab == c]}
        for i, c in enumerate(index.classes)
    ]
    (index.store.path / "clusters.json").write_text(json.dumps({"clusters": clusters, "noise": [], "metrics": {}}))
    from lookalike.explore import compute_map

    compute_map(index, "pca", suspects=True)  # the Map tab's layout (PCA: instant, and the page does not care)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(index), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright import sync_api

    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
            ],
        )  # fmt: skip
        yield b
        b.close()


def test_upload_a_photo_and_browse(server: str, browser, sample_queries: Path, tmp_path: Path) -> None:  # noqa: ANN001
    page = browser.new_page(viewport={"width": 1180, "height": 880})
    outside: list[str] = []
    page.on(
        "request",
        lambda r: None if r.url.startswith(server) or r.url.startswith(("blob:", "data:")) else outside.append(r.url),
    )
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    page.goto(server + "/")
    page.wait_for_selector("text=24 images")
    page.fill("#k", "6")  # the range input
    page.dispatch_event("#k", "change")
    page.set_input_files("#file", str(sample_queries / "temple.jpg"))
    page.wait_for_function("() => document.querySelectorAll('#grid .match').length === 6")
    page.wait_for_selector("#loading", state="hidden")
    cards = page.locator("#grid .match")
    assert cards.count() == 6
    labels = page.locator("#grid .match .chip").all_inner_texts()
    assert labels[0] == "temple" and labels.count("temple") >= 4, labels
    scores = [float(s) for s in page.locator("#grid .match .score").all_inner_texts()]
    assert scores == sorted(scores, reverse=True)
    assert page.locator("#query-name").inner_text().startswith("temple.jpg")
    # the index has four labelled classes, so the page must show a predicted class
    page.wait_for_selector("#prediction", state="visible", timeout=5_000)
    assert page.locator("#pred-label").inner_text() == "temple"
    page.wait_for_function(
        "() => [...document.querySelectorAll('#grid img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    shot = tmp_path / "server.png"
    page.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 10_000
    if os.environ.get("LOOKALIKE_DOCS_SCREENSHOT"):
        from PIL import Image

        DOCS_PNG.parent.mkdir(exist_ok=True)
        img = Image.open(shot)
        img.thumbnail((900, 900), Image.Resampling.LANCZOS)
        img.convert("RGB").quantize(colors=192, method=Image.Quantize.MEDIANCUT).save(DOCS_PNG, optimize=True)

    # click the second match: it becomes the query, and is not among its own matches
    second = cards.nth(1)
    clicked_id = second.get_attribute("data-id")
    second.click()
    page.wait_for_function(f"() => location.hash === '#id={clicked_id}'")
    page.wait_for_selector("#loading", state="hidden")
    page.wait_for_function("() => document.querySelectorAll('#grid .match').length === 6")
    ids = [c.get_attribute("data-id") for c in page.locator("#grid .match").all()]
    assert clicked_id not in ids

    # a class mode re-runs the search
    page.check("input[value=other-classes]")
    page.wait_for_function("() => document.querySelector('#results-meta').textContent.includes('other than')")
    assert "temple" not in page.locator("#grid .match .chip").all_inner_texts()

    # bad input is shown inline, and the page keeps working
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"this is not a photo")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#error:not([hidden])")
    assert "not an image" in page.locator("#error").inner_text()

    # clusters: contact sheets of thumbnails
    page.click("#tab-clusters")
    page.wait_for_selector(".cluster")
    assert page.locator(".cluster").count() == 4
    assert page.locator(".cluster .sheet img").count() == 24
    assert page.locator(".cluster a.sheet-link").count() == 4
    page.screenshot(path=str(tmp_path / "clusters.png"))
    page.locator(".cluster .sheet button").first.click()
    page.wait_for_function("() => document.querySelectorAll('#grid .match').length === 6")
    assert page.locator("#view-search").is_visible()

    assert not errors, errors
    assert not outside, f"the page reached outside the server: {outside}"
    page.close()


def test_search_filters_on_the_page(server: str, browser) -> None:  # noqa: ANN001
    page = browser.new_page(viewport={"width": 1180, "height": 880})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server + "/")
    page.wait_for_selector("text=24 images")
    page.fill("#f-path", "flower/**")
    page.goto(server + "/#id=20")
    page.wait_for_selector("#loading", state="hidden")
    page.wait_for_function("() => document.querySelectorAll('#grid .match').length > 0")
    page.fill("#f-path", "flower/**")
    page.dispatch_event("#f-path", "change")
    page.wait_for_function("() => document.querySelector('#results-meta').textContent.includes('flower/**')")
    chips = page.locator("#grid .match .chip").all_inner_texts()
    assert chips and set(chips) == {"flower"}, chips
    page.fill("#f-after", "2030-01-01")
    page.dispatch_event("#f-after", "change")
    page.wait_for_function("() => document.querySelector('#empty').textContent.includes('no image taken after 2030')")
    assert page.locator("#grid .match").count() == 0
    page.fill("#f-point", "95, 2")
    page.fill("#f-km", "1")
    page.dispatch_event("#f-km", "change")
    page.wait_for_selector("#error:not([hidden])")
    assert "latitude must be between -90 and 90" in page.locator("#error").inner_text()
    page.click("#filters-clear")
    page.wait_for_function("() => document.querySelectorAll('#grid .match').length === 5")
    assert not errors, errors
    page.close()


def test_map_tab(server: str, browser, tmp_path: Path) -> None:  # noqa: ANN001
    """Points drawn, a thumbnail on hover, click to search, a box selection exported as the right paths."""
    page = browser.new_page(viewport={"width": 1180, "height": 880}, accept_downloads=True)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server + "/#map")
    page.wait_for_function("() => document.getElementById('map-canvas').dataset.drawn === '24'")
    lit = page.evaluate(
        """() => { const c = document.getElementById('map-canvas');
                   const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
                   for (let i = 0; i < d.length; i += 4) if (d[i] !== 0x11 || d[i + 1] !== 0x17 || d[i + 2] !== 0x22) n++;
                   return n; }"""
    )
    assert lit >= 24, lit  # every point lit at least one pixel
    legend = page.locator("#map-legend li").all_inner_texts()
    assert [t.strip() for t in legend] == ["flower", "package", "portrait", "temple"]
    box = page.locator("#map-canvas").bounding_box()
    pts = page.evaluate("Array.from({length: 24}, (_, i) => lookalikeMap.screenOf(i))")
    xy = np.array([[p["x"], p["y"]] for p in pts])
    gaps = np.sort(np.linalg.norm(xy[:, None] - xy[None], axis=2), axis=1)[:, 1]
    pick = int(np.argmax(gaps))  # the point farthest from any other: hover and click cannot hit a neighbour
    assert gaps[pick] > 4

    page.mouse.move(box["x"] + xy[pick, 0], box["y"] + xy[pick, 1])
    page.wait_for_selector("#map-tip:not([hidden])")
    assert page.get_attribute("#map-tip", "data-id") == str(pick)
    page.wait_for_function(
        "() => document.getElementById('map-tip-img').complete && document.getElementById('map-tip-img').naturalWidth > 0"
    )
    assert page.get_attribute("#map-tip-img", "src") == f"/api/thumbnails/{pick}"

    page.mouse.click(box["x"] + xy[pick, 0], box["y"] + xy[pick, 1])
    page.wait_for_function(f"() => location.hash === '#id={pick}'")
    page.wait_for_function("() => document.querySelectorAll('#grid .match').length === 5")
    assert page.locator("#view-search").is_visible()
    ids = [c.get_attribute("data-id") for c in page.locator("#grid .match").all()]
    assert str(pick) not in ids

    page.click("#tab-map")
    page.wait_for_selector("#view-map:not([hidden])")
    x0, x1 = xy[:, 0].min() - 3, float(np.median(xy[:, 0]))
    y0, y1 = xy[:, 1].min() - 3, xy[:, 1].max() + 3
    inside = sorted(int(i) for i in np.flatnonzero((xy[:, 0] >= x0) & (xy[:, 0] <= x1)))
    assert 0 < len(inside) < 24
    page.keyboard.down("Shift")
    page.mouse.move(box["x"] + x0, box["y"] + y0)
    page.mouse.down()
    page.mouse.move(box["x"] + x1, box["y"] + y1, steps=6)
    page.mouse.up()
    page.keyboard.up("Shift")
    assert page.locator("#map-selected").inner_text() == f"{len(inside)} selected"
    with page.expect_download() as dl:
        page.click("#map-export")
    saved = tmp_path / "selection.json"
    dl.value.save_as(saved)
    paths = json.loads(saved.read_text())
    names = page.evaluate(
        "fetch('/api/map/selection', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify({ids: [0]})}).then(r => r.json())"
    )
    root = Path(names["paths"][0]).parent.parent
    assert [str(Path(p).relative_to(root)) for p in paths] == [_name(server, i) for i in inside]
    page.click("#map-sheet")
    page.wait_for_function("() => document.getElementById('map-sheet-img').naturalWidth > 0")
    assert page.locator("#map-suspects-n").inner_text() == "(0)"  # checked, none flagged in the sample photos
    page.select_option("#map-color", "folder")
    page.wait_for_timeout(100)
    assert page.get_attribute("#map-canvas", "data-drawn") == "24"
    assert not errors, errors
    page.close()


def _name(server: str, image_id: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"{server}/api/search?id={image_id}&k=1") as r:
        return json.loads(r.read())["query"]["name"]
