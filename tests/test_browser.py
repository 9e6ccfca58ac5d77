"""End to end: the real server on a loopback port, the page driven in headless Chromium (Debian's, via Playwright).

Set LOOKALIKE_DOCS_SCREENSHOT=1 to also refresh docs/server.png (the README's picture) from this run.
Without chromium or Playwright the test is skipped, except when LOOKALIKE_REQUIRE_BROWSER=1 (as .ci/run sets it):
then it fails, so CI cannot pass without having run it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
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


@contextlib.contextmanager
def serving(index: object, token: str | None = None) -> Iterator[str]:
    """uvicorn in a thread on a free loopback port over ``index``; yields its base URL."""
    import uvicorn

    from lookalike.server.app import create_app

    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(index, token=token), host="127.0.0.1", port=port,
                                        log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def server(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """uvicorn in a thread on a free loopback port, over an index with labels, saved clusters and a map (and the
    copies the sample photos hold)."""
    from lookalike import Index

    index = Index.build(sample_dir, tmp_path_factory.mktemp("browser") / "idx", labels="folders")
    names, labels = index.names, index.labels
    clusters = [
        {"id": i, "size": labels.count(c), "paths": [n for n, lab in zip(names, labels, strict=True) if lab == c]}
        for i, c in enumerate(index.classes)
    ]
    (index.store.path / "clusters.json").write_text(json.dumps({"clusters": clusters, "noise": [], "metrics": {}}))
    from lookalike.explore import compute_map

    compute_map(index, "pca", suspects=True)  # the Map tab's layout (PCA: instant, and the page does not care)
    from lookalike.uniqueness import uniqueness

    uniqueness(index)  # the Map tab's uniqueness ramp
    with serving(index) as url:
        yield url


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
    page, watch = new_page(browser, server, DESKTOP, expected=(400,))  # the non-photo below

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

    assert not watch.problems, watch.problems
    page.close()


def test_search_filters_on_the_page(server: str, browser) -> None:  # noqa: ANN001
    page, watch = new_page(browser, server, DESKTOP, expected=(400,))  # the latitude of 95
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
    assert not watch.problems, watch.problems
    page.close()


def test_map_tab(server: str, browser, tmp_path: Path) -> None:  # noqa: ANN001
    """Points drawn, a thumbnail on hover, click to search, a box selection exported as the right paths."""
    page, watch = new_page(browser, server, DESKTOP)
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
    assert re.search(r"· uniqueness [01]\.\d\d", page.locator("#map-tip-text").inner_text())

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
    before = page.evaluate("document.getElementById('map-canvas').toDataURL()")
    page.select_option("#map-color", "uniqueness")  # a ramp from "has copies" to "most isolated"
    page.wait_for_timeout(100)
    assert [t.split() for t in page.locator("#map-legend li").all_inner_texts()] == [
        ["0", "(has", "copies)", "1", "(most", "isolated)"]
    ]
    assert page.locator("#map-legend .ramp").count() == 1
    assert page.evaluate("document.getElementById('map-canvas').toDataURL()") != before  # recoloured
    assert not watch.problems, watch.problems
    page.close()


def _name(server: str, image_id: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"{server}/api/search?id={image_id}&k=1") as r:
        return json.loads(r.read())["query"]["name"]


# --- every view, every state: no console error, no CSP report, accessible, never blank (issue 32) -------------------

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1180, "height": 880}
VIEWPORTS = {"desktop": DESKTOP, "phone": PHONE}
CSP_REPORTER = """document.addEventListener("securitypolicyviolation",
  (e) => console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber}`));"""


class Watch:
    """Everything on one page that a user would not want: console errors (a CSP refusal is one, and is reported by
    the page's own listener too), uncaught exceptions, requests to anywhere but the server. A response status the
    test provokes on purpose (a 400 for a non-photo) is named in ``expected``."""

    def __init__(self, page: object, server: str, expected: tuple[int, ...] = ()) -> None:
        self.problems: list[str] = []
        self.expected = expected
        page.add_init_script(CSP_REPORTER)
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.problems.append(f"uncaught: {e}"))
        page.on("request", lambda r: None if r.url.startswith((server, "blob:", "data:")) else self.problems.append(
            f"outside request: {r.url}"))  # fmt: skip

    def _console(self, msg: object) -> None:
        if msg.type != "error":
            return
        if "Failed to load resource" in msg.text and any(f"status of {c}" in msg.text for c in self.expected):
            return
        self.problems.append(f"console error: {msg.text}")


def axe_violations(page: object) -> list[str]:
    """axe-core (the copy inside the axe-playwright-python package, no CDN) on the page as it is now."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page, options={"resultTypes": ["violations"]})
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes'][:3]]}"
        for v in results.response["violations"]
    ]


def check_view(page: object, view: str) -> str:
    """The view is shown, has something to read, fits a phone's width and passes axe; returns its text."""
    assert page.locator(f"#view-{view}").is_visible(), f"{view} is not shown"
    box = page.locator(f"#view-{view}").bounding_box()
    text = page.locator(f"#view-{view}").inner_text().strip()
    assert box and box["height"] > 40 and len(text) > 20, f"{view} is blank: {text!r}"
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"{view}: the page is wider than the screen ({width[0]} > {width[1]} px)"
    assert page.locator(f"#tab-{view}").get_attribute("aria-selected") == "true"
    assert axe_violations(page) == [], view
    return text


def new_page(browser: object, server: str, viewport: dict, expected: tuple[int, ...] = ()) -> tuple[object, Watch]:
    page = browser.new_page(viewport=viewport, accept_downloads=True)
    return page, Watch(page, server, expected)


@pytest.mark.parametrize("size", VIEWPORTS)
def test_every_view_in_a_full_index(server: str, browser, sample_queries: Path, size: str, tmp_path: Path) -> None:  # noqa: ANN001
    """Search (a result shown), Clusters, Map and Duplicates, each opened from its tab as a user would. The query
    has a long file name, as exports have (it once made the search view wider than a phone)."""
    page, watch = new_page(browser, server, VIEWPORTS[size])
    page.goto(server + "/")
    page.wait_for_selector("text=24 images")
    query = tmp_path / "kitchen_1041_jpg.rf.eb15fc914d08a6d3bf8d63b2d23ab0c1f0e2d3c4b5a69788.jpg"
    query.write_bytes((sample_queries / "flower.jpg").read_bytes())
    page.set_input_files("#file", str(query))
    page.wait_for_function("() => document.querySelectorAll('#grid .match').length === 5")
    page.wait_for_selector("#loading", state="hidden")
    check_view(page, "search")
    page.click("#tab-clusters")
    page.wait_for_selector(".cluster")
    check_view(page, "clusters")
    page.click("#tab-map")
    page.wait_for_function("() => document.getElementById('map-canvas').dataset.drawn === '24'")
    check_view(page, "map")
    page.click("#tab-duplicates")
    page.wait_for_selector(".dup-group")
    check_view(page, "duplicates")
    assert page.locator("#view-map").is_hidden()
    page.keyboard.press("Shift+Tab")  # the tabs are reachable from the keyboard
    page.focus("#tab-search")
    page.keyboard.press("Enter")
    page.wait_for_selector("#view-search:not([hidden])")
    assert not watch.problems, watch.problems
    page.close()


def test_no_csp_report_on_any_view(server: str, browser, sample_queries: Path) -> None:  # noqa: ANN001
    """The loading boxes were built with a ``style`` attribute, which the page's own CSP refuses (a console error on
    the Clusters and Duplicates views); the prediction bars and score bars too."""
    page, watch = new_page(browser, server, DESKTOP)
    page.goto(server + "/#clusters")
    page.wait_for_selector(".cluster")
    page.goto(server + "/#duplicates")
    page.wait_for_selector("#dups .dup-group", state="attached")
    page.goto(server + "/")
    page.set_input_files("#file", str(sample_queries / "temple.jpg"))
    page.wait_for_selector("#prediction:not([hidden])")
    page.wait_for_timeout(200)
    assert page.locator("#pred-bars .fill").first.evaluate("e => e.style.width").endswith("%")
    assert not watch.problems, watch.problems
    page.close()


def test_search_drop_id_link_and_rerank(server: str, browser, sample_queries: Path) -> None:  # noqa: ANN001
    page, watch = new_page(browser, server, DESKTOP)
    page.goto(server + "/")
    page.wait_for_selector("text=24 images")
    data = base64.b64encode((sample_queries / "portrait.jpg").read_bytes()).decode()
    dropped = page.evaluate_handle(
        """(b64) => { const dt = new DataTransfer();
             const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
             dt.items.add(new File([bytes], "portrait.jpg", { type: "image/jpeg" })); return dt; }""",
        data,
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": dropped})
    page.wait_for_function("() => document.querySelectorAll('#grid .match').length === 5")
    assert page.locator("#query-name").inner_text().startswith("portrait.jpg")
    assert page.locator("#grid .match .chip").first.inner_text() == "portrait"
    page.goto(server + "/#id=3")  # a link to an image
    page.wait_for_function("() => location.hash === '#id=3' && document.querySelectorAll('#grid .match').length === 5")
    page.wait_for_selector("#loading", state="hidden")
    assert "3" not in [c.get_attribute("data-id") for c in page.locator("#grid .match").all()]
    page.check("#rerank")
    page.wait_for_selector("#grid .chip.inliers", timeout=60_000)
    assert page.locator("#grid .chip.inliers").count() >= 1
    check_view(page, "search")
    assert not watch.problems, watch.problems
    page.close()


def test_docs_render_every_operation(server: str, browser) -> None:  # noqa: ANN001
    """Swagger UI (5.x, from the fastapi-offline package) renders the OpenAPI 3.1 schema: one block per operation,
    and no "Unable to render this definition"."""
    import urllib.request

    with urllib.request.urlopen(server + "/openapi.json") as r:
        schema = json.loads(r.read())
    operations = sorted(f"{m.upper()} {p}" for p, ops in schema["paths"].items() for m in ops)
    page, watch = new_page(browser, server, DESKTOP)
    page.goto(server + "/docs")
    page.wait_for_selector(".opblock", timeout=30_000)
    shown = sorted(
        f"{b.locator('.opblock-summary-method').inner_text()} {b.locator('.opblock-summary-path').get_attribute('data-path')}"
        for b in page.locator(".opblock").all()
    )
    assert shown == operations
    assert "Unable to render" not in page.inner_text("body")
    assert not watch.problems, watch.problems
    page.close()


def test_duplicates_flip_keep_all_not_duplicates_and_plan(server: str, browser, tmp_path: Path) -> None:  # noqa: ANN001
    """The tab lists the copy groups; a click flips the keeper and the downloaded plan keeps it; "Keep all" and "Not
    duplicates" are remembered (the server's index folder records them), so this test runs last on its server."""
    page, watch = new_page(browser, server, DESKTOP)
    page.goto(server + "/#duplicates")
    page.wait_for_selector(".dup-group")
    groups = page.locator(".dup-group")
    n = groups.count()
    assert n >= 2, "the sample photos hold copies"
    first = groups.first
    assert first.locator("figure.keeper").count() == 1
    other = first.locator("figure:not(.keeper)").first
    flipped = other.get_attribute("data-id")
    other.locator("button").click()
    assert first.locator("figure.keeper").get_attribute("data-id") == flipped
    with page.expect_download() as dl:
        page.click("#dups-download")
    saved = tmp_path / "plan.json"
    dl.value.save_as(saved)
    plan = json.loads(saved.read_text())
    path = first.locator("figure.keeper .dup-name").inner_text()
    assert plan["groups"][0]["keeper"] == path and plan["groups"][0]["why"] == "chosen by hand"
    group = first.get_attribute("data-group")
    first.locator("button.keep-all").click()
    kept = f'.dup-group[data-group="{group}"]'
    page.wait_for_function(f"() => (document.querySelector('{kept}') || {{}}).textContent?.includes('all kept')")
    assert page.locator(kept).locator("figure.keeper").count() >= 2
    page.locator(f'.dup-group:not([data-group="{group}"])').first.locator("button.not-dups").click()
    page.wait_for_function(f"() => document.querySelectorAll('.dup-group').length === {n - 1}")
    assert not watch.problems, watch.problems
    page.close()


@pytest.fixture(scope="module")
def bare_index(tmp_path_factory: pytest.TempPathFactory) -> object:
    """Four different photos, no labels: no clusters, no map, no copies, no labels."""
    from lookalike import Index
    from lookalike.samples import make_samples

    photos = make_samples(tmp_path_factory.mktemp("bare") / "photos", per_class=1, size=160)
    return Index.build(photos, labels="none", resolution=96)


@pytest.fixture(scope="module")
def empty_index(tmp_path_factory: pytest.TempPathFactory) -> object:
    """An index whose every photo was removed: 0 images."""
    from lookalike import Index
    from lookalike.samples import make_samples

    photos = make_samples(tmp_path_factory.mktemp("empty") / "photos", per_class=1, size=96)
    Index.build(photos, labels="folders", resolution=64)
    for f in photos.rglob("*.jpg"):
        f.unlink()
    return Index.build(photos)


@pytest.mark.parametrize("size", VIEWPORTS)
@pytest.mark.parametrize("state", ["bare", "empty"])
def test_empty_states_say_what_to_run(browser, bare_index, empty_index, state: str, size: str) -> None:  # noqa: ANN001
    """No clusters, no map, no copies, no labels (and no images at all): each view says so and what to run."""
    index = bare_index if state == "bare" else empty_index
    with serving(index) as url:
        page, watch = new_page(browser, url, VIEWPORTS[size])
        page.goto(url + "/")
        page.wait_for_function("() => !document.getElementById('index-meta').textContent.includes('loading')")
        meta = page.locator("#index-meta").inner_text()
        assert ("no images yet" in meta and "lookalike index" in meta) if state == "empty" else "no labels" in meta
        search = check_view(page, "search")
        if state == "empty":
            assert "has no images" in search and "lookalike index" in search
        assert page.locator("input[value=same-class]").is_disabled()
        page.click("#tab-clusters")
        page.wait_for_selector("#clusters .empty")
        assert "lookalike cluster" in check_view(page, "clusters")
        page.click("#tab-map")
        page.wait_for_selector("#map-error:not([hidden])")
        assert "lookalike map" in check_view(page, "map")
        page.click("#tab-duplicates")
        page.wait_for_selector("#dups .empty")
        dups = check_view(page, "duplicates")
        assert ("has no images" if state == "empty" else "No copies found") in dups
        assert not watch.problems, watch.problems
        page.close()


def test_login_view_with_a_token(browser, bare_index) -> None:  # noqa: ANN001
    token = "browser-test-token-0123456789"
    with serving(bare_index, token=token) as url:
        page, watch = new_page(browser, url, PHONE, expected=(401,))
        page.goto(url + "/")
        page.wait_for_selector("#view-login:not([hidden])")
        assert page.locator("#view-search").is_hidden()
        assert axe_violations(page) == []
        page.fill("#token", "not-the-token-at-all")
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("#login-error:not([hidden])")
        assert page.locator("#login-error").inner_text() == "wrong token"
        page.fill("#token", token)
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("text=4 images")
        check_view(page, "search")
        assert not watch.problems, watch.problems
        page.close()


def test_the_page_says_when_the_collection_changed(browser, tmp_path: Path, sample_dir: Path) -> None:  # noqa: ANN001
    """The server follows the index's commits; the open page says the collection changed, and searches use it."""
    import shutil

    from lookalike import Index, build

    photos = tmp_path / "photos"
    shutil.copytree(sample_dir, photos)
    spare = tmp_path / "spare"
    spare.mkdir()
    first = sorted(p for p in photos.iterdir() if p.is_dir())[0]
    for f in sorted(first.glob("*.jpg"))[:3]:
        f.rename(spare / f.name)
    index = Index.build(photos, tmp_path / "idx", labels="folders")
    with serving(tmp_path / "idx") as url:
        page, watch = new_page(browser, url, VIEWPORTS["desktop"])
        page.goto(url + "/")
        page.wait_for_function("() => document.getElementById('index-meta').textContent.includes('21 images')")
        assert page.locator("#changed").is_hidden()
        for f in spare.iterdir():
            f.rename(first / f.name)
        build.main(photos, index.folder)
        page.wait_for_selector("#changed:not([hidden])", timeout=15000)
        text = page.locator("#changed").inner_text()
        assert "collection changed" in text and "3 photos added" in text and "24 images" in text, text
        assert "24 images" in page.locator("#index-meta").inner_text()
        assert not watch.problems, watch.problems
        page.close()
