"""The review page in a real browser: headless Chromium through chromedriver (Debian's ``chromium`` and
``chromium-driver``), driven by Selenium with an explicit driver path, so Selenium Manager never downloads
anything. Checks that the grid pages, filters, sorts and swaps in heatmaps, that the page's
Content-Security-Policy stops every network load, that the script logs no error, and saves a screenshot.

Skipped with a message where Chromium, chromedriver or selenium are absent (``WV_CHROMIUM`` and
``WV_CHROMEDRIVER`` name other binaries). The docs screenshot: see docs/report.md (``WV_DOCS_SCREENSHOT``).
"""

from __future__ import annotations

import http.server
import json
import os
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from test_review_page import blob, make_records
from wildlife_vision.evaluation.review_page import write_review_page

CHROMIUM = os.environ.get("WV_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("WV_CHROMEDRIVER", "/usr/bin/chromedriver")

if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(f"needs Chromium at {CHROMIUM} and chromedriver at {CHROMEDRIVER} (Debian: apt-get install "
                "chromium chromium-driver; or set WV_CHROMIUM / WV_CHROMEDRIVER)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install 'wildlife-vision[dev]')")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

N_ROWS = 150


def chrome(width: int = 1280, height: int = 1000):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--hide-scrollbars", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)


@pytest.fixture(scope="module")
def driver():
    d = chrome()
    yield d
    d.quit()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """(file URL, the page's rows, its images) of a page of N_ROWS generated rows."""
    folder = tmp_path_factory.mktemp("review")
    records, _ = make_records(folder / "run", N_ROWS, n_photos=8)
    out = folder / "review.html"
    write_review_page(records, out, root=folder / "run")
    text = out.read_text(encoding="utf-8")
    return out.as_uri(), blob(text, "wv-rows")["rows"], blob(text, "wv-images")


def open_page(driver, url):
    driver.get(url)
    for _ in range(100):
        if driver.execute_script("return document.body.dataset.ready") == "1":
            return
        time.sleep(0.05)
    raise AssertionError("the page's script never finished: " + repr(driver.get_log("browser")))


def cards(driver):
    return driver.execute_script("return Array.prototype.map.call(document.querySelectorAll('#wv-grid .wv-card'), "
                                 "function (c) { return +c.dataset.row; })")


def choose(driver, element_id, value):
    Select(driver.find_element(By.ID, element_id)).select_by_value(value)


def reset(driver, url):
    open_page(driver, url)
    driver.get_log("browser")  # drop what the load logged


def count_text(driver):
    return driver.find_element(By.ID, "wv-count").text


def test_grid_pages(driver, page):
    url, rows, _ = page
    reset(driver, url)
    assert len(rows) > 120
    pages = -(-len(rows) // 60)
    seen = []
    for k in range(pages):
        shown = cards(driver)
        assert len(shown) == (60 if k < pages - 1 else len(rows) - 60 * (pages - 1))
        assert driver.find_element(By.ID, "wv-page").text == f"page {k + 1} of {pages}"
        assert driver.find_element(By.ID, "wv-prev").is_enabled() == (k > 0)
        seen += shown
        if k < pages - 1:
            driver.find_element(By.ID, "wv-next").click()
    assert not driver.find_element(By.ID, "wv-next").is_enabled()
    assert sorted(seen) == list(range(len(rows)))  # every row once over the pages
    assert f"of {len(rows)} matching" in count_text(driver)


@pytest.mark.parametrize("label, band", [("ivory", "flagged"), ("live_animal", "review"), ("ivory", ""),
                                         ("", "review")])
def test_filters_change_the_visible_cards(driver, page, label, band):
    url, rows, _ = page
    reset(driver, url)
    before = len(cards(driver))
    choose(driver, "wv-label", label)
    choose(driver, "wv-band", band)
    bands = [band] if band else ["flagged", "review"]
    expected = [r["i"] for r in rows if any((label in r["b"].get(b, [])) if label else r["b"].get(b) for b in bands)]
    assert 0 < len(expected) < len(rows)
    shown = cards(driver)
    assert set(shown) <= set(expected) and len(shown) == min(60, len(expected))
    if len(expected) < 60:
        assert len(shown) != before
    assert f"of {len(expected)} matching" in count_text(driver)
    driver.find_element(By.ID, "wv-query").send_keys("photo_3")
    narrowed = [i for i in expected if "photo_3" in rows[i]["n"]]
    assert sorted(cards(driver)) == sorted(narrowed)[:60]


def test_sorting_changes_the_order(driver, page):
    url, rows, _ = page
    reset(driver, url)
    choose(driver, "wv-label", "ivory")

    def key(r):
        return r["s"]["ivory"]

    rows = [r for r in rows if "ivory" in r["b"].get("flagged", []) + r["b"].get("review", [])]
    by_desc = sorted(rows, key=lambda r: (-key(r), r["o"]))[:60]
    assert cards(driver) == [r["i"] for r in by_desc]
    choose(driver, "wv-sort", "score-asc")
    by_asc = sorted(rows, key=lambda r: (key(r), r["o"]))[:60]
    assert cards(driver) == [r["i"] for r in by_asc] != [r["i"] for r in by_desc]
    choose(driver, "wv-sort", "order")
    assert cards(driver) == [r["i"] for r in sorted(rows, key=lambda r: r["o"])][:60]
    first = driver.find_element(By.CSS_SELECTOR, "#wv-grid .wv-card")
    assert f"{page[1][cards(driver)[0]]['s']['ivory']:.3f}" in first.text


def _images(driver):
    return driver.execute_script("return Array.prototype.map.call(document.querySelectorAll('#wv-grid .wv-card'), "
                                 "function (c) { var i = c.querySelector('img'); return [+c.dataset.row, "
                                 "i.getAttribute('src'), i.dataset.kind]; })")


def test_heatmap_overlays_toggle_hover_and_pin(driver, page):
    url, rows, images = page
    reset(driver, url)
    choose(driver, "wv-band", "flagged")
    state = _images(driver)
    assert state and all(kind == "photo" and src == images[rows[i]["t"]] for i, src, kind in state)
    with_heat = [i for i, _, _ in state if rows[i].get("m")]
    assert with_heat
    driver.find_element(By.ID, "wv-overlay").click()
    for i, src, kind in _images(driver):
        m = rows[i].get("m")
        if m:
            top = max(m, key=lambda lab: rows[i]["s"][lab])
            assert kind == "heatmap" and src == images[m[top]] != images[rows[i]["t"]]
        else:
            assert kind == "photo"
    driver.find_element(By.ID, "wv-overlay").click()
    assert all(kind == "photo" for _, _, kind in _images(driver))

    card = driver.find_element(By.CSS_SELECTOR, f'#wv-grid .wv-card[data-row="{with_heat[0]}"]')
    img = card.find_element(By.TAG_NAME, "img")
    ActionChains(driver).move_to_element(card.find_element(By.CLASS_NAME, "wv-thumb")).perform()
    assert img.get_attribute("data-kind") == "heatmap"
    ActionChains(driver).move_to_element(driver.find_element(By.TAG_NAME, "h1")).perform()
    assert img.get_attribute("data-kind") == "photo"
    card.find_element(By.CLASS_NAME, "wv-heat").click()
    ActionChains(driver).move_to_element(driver.find_element(By.TAG_NAME, "h1")).perform()
    assert img.get_attribute("data-kind") == "heatmap"  # pinned: stays after the pointer leaves


class _Counter(http.server.BaseHTTPRequestHandler):
    hits = []

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).hits.append(self.path)
        self.send_response(200)
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args):
        pass


def test_the_page_loads_nothing_from_the_network_and_logs_no_errors(driver, page):
    url, _, _ = page
    open_page(driver, url)
    errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert errors == []
    _Counter.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Counter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        started = driver.execute_script(
            "var seen = []; document.addEventListener('securitypolicyviolation', function (e) { "
            "seen.push(e.violatedDirective); }); var img = new Image(); img.src = arguments[0] + '/img'; "
            "document.body.appendChild(img); try { fetch(arguments[0] + '/fetch').catch(function () {}); } "
            "catch (e) {} var s = document.createElement('script'); s.src = arguments[0] + '/script.js'; "
            "document.body.appendChild(s); window.__seen = seen; return true;", base)
        assert started
        time.sleep(0.8)
        seen = driver.execute_script("return window.__seen")
    finally:
        server.shutdown()
        server.server_close()
    assert _Counter.hits == []
    assert {re.sub("-elem$", "", v) for v in seen} >= {"img-src", "script-src"}


def test_screenshot(driver, page, tmp_path):
    from PIL import Image

    url, _, _ = page
    reset(driver, url)
    shot = tmp_path / "review-page.png"
    assert driver.save_screenshot(str(shot))
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    with Image.open(shot) as im:
        assert im.size[0] >= 1000 and len(np.unique(np.asarray(im.convert("L")))) > 50  # a page, not a blank


def test_three_thousand_rows_filter_fast(driver, tmp_path):
    records, _ = make_records(tmp_path / "run", 3000, n_photos=6)
    out = tmp_path / "big.html"
    write_review_page(records, out, root=tmp_path / "run")
    start = time.perf_counter()
    open_page(driver, out.as_uri())
    load = time.perf_counter() - start
    ms = driver.execute_script(
        "var t = performance.now(), s = document.getElementById('wv-label'); s.value = 'ivory'; "
        "s.dispatchEvent(new Event('change')); var b = document.getElementById('wv-sort'); b.value = 'name'; "
        "b.dispatchEvent(new Event('change')); return performance.now() - t;")
    assert len(cards(driver)) == 60
    assert load < 10 and ms < 1000, (load, ms)


def test_the_evaluation_pages_mistake_grid(driver, tmp_path):
    from PIL import Image

    from helpers import make_photo
    from wildlife_vision.evaluation.evaluation_page import write_evaluation_page

    report = json.loads((Path(__file__).resolve().parents[1] / "exported_models"
                         / "wildtrade-lite0-v4.eval-test.json").read_text())
    make_photo(1, (300, 200)).save(tmp_path / "a.jpg")
    Image.new("RGB", (300, 200), (255, 0, 0)).save(tmp_path / "a-heat.png")
    mistakes = [dict(input=str(tmp_path / "a.jpg"), label="ivory", truth=0, score=0.97,
                     heatmap=str(tmp_path / "a-heat.png")),
                dict(input=str(tmp_path / "a.jpg"), label="live_animal", truth=1, score=0.03, heatmap=None),
                dict(input=str(tmp_path / "gone.jpg"), label="ivory", truth=1, score=0.1, heatmap=None)]
    out = write_evaluation_page(report, tmp_path / "eval.html", mistakes)
    open_page(driver, out.as_uri())
    assert len(cards(driver)) == 3
    choose(driver, "wv-band", "fn")
    assert sorted(cards(driver)) == [1, 2]
    choose(driver, "wv-band", "fp")
    driver.find_element(By.ID, "wv-overlay").click()
    assert [kind for _, _, kind in _images(driver)] == ["heatmap"]
    assert [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"] == []


@pytest.mark.docs
def test_docs_screenshot(tmp_path):
    """The docs screenshot, of a real predictions file (docs/report.md says how it was made). Not part of the
    default run: `python -m pytest -m docs tests/test_review_page_browser.py` with the variables below."""
    if not (os.environ.get("WV_DOCS_SCREENSHOT") and os.environ.get("WV_DOCS_RECORDS")):
        pytest.fail("set WV_DOCS_SCREENSHOT=docs/images/review-page.png and WV_DOCS_RECORDS=preds.jsonl to make the "
                    "docs screenshot")
    out = tmp_path / "review.html"
    write_review_page(os.environ["WV_DOCS_RECORDS"], out, root=os.environ.get("WV_DOCS_ROOT") or None,
                      model=os.environ.get("WV_DOCS_MODEL") or None, title=os.environ.get("WV_DOCS_TITLE"))
    d = chrome(1280, int(os.environ.get("WV_DOCS_HEIGHT", "1160")))
    try:
        open_page(d, out.as_uri())
        for var, element in (("WV_DOCS_LABEL", "wv-label"), ("WV_DOCS_BAND", "wv-band"), ("WV_DOCS_SORT", "wv-sort")):
            if os.environ.get(var):
                choose(d, element, os.environ[var])
        for row in (int(v) for v in os.environ.get("WV_DOCS_PIN", "").split(",") if v):
            card = d.find_elements(By.CSS_SELECTOR, "#wv-grid .wv-card")[row]
            card.find_element(By.CLASS_NAME, "wv-heat").click()
        d.execute_script("document.activeElement.blur()")
        assert d.save_screenshot(os.environ["WV_DOCS_SCREENSHOT"])
    finally:
        d.quit()
