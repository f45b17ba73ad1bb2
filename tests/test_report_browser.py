"""The HTML report in a real headless Chromium (Debian's chromium + chromium-driver, driven by selenium).

The page is loaded from disk (file://): no console errors, every figure decoded (naturalWidth > 0),
a full-page screenshot saved, and a model name carrying ``<script>`` executes nothing.

Screenshots go to ``reports/browser-test/`` (or ``$ROBUSTVIT_SCREENSHOT_DIR``); their paths are
printed (``pytest -s`` shows them). Without chromium the tests skip, except under ``CI=true``,
where a missing browser is a failure (install: ``apt-get install -y chromium chromium-driver``).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_report import MODELS, make_store  # noqa: E402

from robustvit.report import write_report_from_store  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
CHROMEDRIVER = shutil.which("chromedriver")
XSS_NAME = ('<script>window.__xss = 1; document.title = "pwned"</script>'
            '<img src=x onerror="window.__xss = 2"><svg onload="window.__xss = 3">')


def _screenshot_dir() -> Path:
    path = Path(os.environ.get("ROBUSTVIT_SCREENSHOT_DIR") or ROOT / "reports" / "browser-test")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not (CHROMIUM and CHROMEDRIVER):
        reason = "chromium and chromedriver are not installed (apt-get install -y chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; the browser test must run under CI")
        pytest.skip(reason)
    if os.environ.get("CI") == "true":
        import selenium  # noqa: F401  (a test dependency: required under CI)
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download a driver or browser
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000", "--allow-file-access-from-files"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _load(driver, html_path: Path) -> list[dict]:
    """Open the page from disk, wait until every image settled, return the console log entries."""
    driver.get_log("browser")  # drop anything from an earlier page
    driver.get(html_path.resolve().as_uri())
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "return document.readyState === 'complete' && Array.from(document.images).every(i => i.complete)"))
    return driver.get_log("browser")


def _full_page_screenshot(driver, path: Path) -> Path:
    height = driver.execute_script("return Math.ceil(document.documentElement.scrollHeight)")
    driver.set_window_size(1400, min(max(height + 120, 800), 16000))
    assert driver.save_screenshot(str(path)), f"screenshot not saved: {path}"
    driver.set_window_size(1400, 1000)
    return path


def test_report_renders_with_every_figure(browser, tmp_path: Path) -> None:
    out = _screenshot_dir()
    store = make_store(tmp_path / "s.sqlite")
    html_path, _ = write_report_from_store(store, out / "report", force=True)  # the folder is reused run to run
    console = _load(browser, html_path)
    errors = [e for e in console if e.get("level") == "SEVERE"]
    assert errors == [], f"console errors: {errors}"
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight, i.alt])")
    assert len(images) == 8  # 6 section figures, the headline dot plot and the ViT-minus-CNN forest plot
    assert all(done and w > 0 and h > 0 and alt for done, w, h, alt in images), images
    assert browser.execute_script("return document.querySelectorAll('script').length") == 0
    assert browser.title == "robustvit: ViT vs CNN"
    body = browser.find_element("tag name", "body").text
    assert "Sanity-check warnings (1)" in body and all(name in body for name, *_ in MODELS)
    shot = _full_page_screenshot(browser, out / "report.png")
    assert shot.stat().st_size > 10_000
    print(f"\nreport screenshot: {shot}\nreport page: {html_path}")


def test_script_in_a_model_name_does_not_execute(browser, tmp_path: Path) -> None:
    out = _screenshot_dir()
    store = make_store(tmp_path / "s.sqlite", suites=("clean", "corruption"),
                       models=[(XSS_NAME, "e" * 16, "vit", 10, 0.9), MODELS[1]])
    html_path, _ = write_report_from_store(store, out / "xss", force=True)
    console = _load(browser, html_path)
    assert [e for e in console if e.get("level") == "SEVERE"] == []  # CSP would log a blocked injection here
    assert browser.execute_script("return window.__xss === undefined")
    assert browser.title == "robustvit: ViT vs CNN"
    assert browser.execute_script("return document.querySelectorAll('script, svg, img:not([src^=\"data:\"])').length") == 0
    assert XSS_NAME in browser.find_element("tag name", "body").text  # the name is shown, as text
    images = browser.execute_script("return Array.from(document.images).map(i => i.naturalWidth)")
    assert images and all(w > 0 for w in images)
    shot = _full_page_screenshot(browser, out / "xss.png")
    print(f"\nXSS screenshot: {shot}")
