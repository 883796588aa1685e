"""The dossier as a reader gets it: opened in a real headless browser, and the PDF rendered
page by page to pictures.

Chromium (Debian ``chromium`` + ``chromium-driver``) and ``pdftoppm`` (``poppler-utils``) are
installed by ``tools/system-deps.sh``, which ``.ci/run`` and ``make test`` call. Where they are
missing these tests skip with the reason, unless ``GLASSBOX_REQUIRE_BROWSER=1`` (set by CI)
makes a missing tool a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pypdf
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
PDFTOPPM = shutil.which("pdftoppm")
ARTIFACTS = Path(os.environ.get("GLASSBOX_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "build" / "test-artifacts"))


def _need(tool: str | None, what: str) -> None:
    if tool:
        return
    if os.environ.get("GLASSBOX_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{what} is required here (GLASSBOX_REQUIRE_BROWSER=1) but not installed; run tools/system-deps.sh")
    pytest.skip(f"{what} not installed (tools/system-deps.sh installs it)")


def headless_chromium(window: str = "1280,1600"):
    """A headless Chromium driven by Selenium, keeping the browser console log (skips, or
    fails under GLASSBOX_REQUIRE_BROWSER=1, when Chromium or its driver is missing)."""
    _need(CHROMIUM, "chromium")
    _need(CHROMEDRIVER, "chromedriver")
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for a driver online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-extensions", "--no-first-run",
                 f"--window-size={window}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


@pytest.fixture(scope="module")
def browser():
    driver = headless_chromium()
    yield driver
    driver.quit()


BROKEN_IMAGES_JS = """
return Array.from(document.images)
  .filter(img => !img.complete || img.naturalWidth === 0)
  .map(img => img.getAttribute('src'));
"""


def _open(driver, page: Path) -> tuple[list[str], list[dict]]:
    driver.get(page.resolve().as_uri())
    driver.execute_script("return document.readyState")
    broken = driver.execute_script(BROKEN_IMAGES_JS)
    errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    return broken, errors


def test_browser_check_detects_a_broken_image_and_a_script_error(browser, tmp_path):
    """The check below would catch what it claims to: a page with one missing image and one
    script error is reported as such."""
    page = tmp_path / "bad.html"
    page.write_text('<html><body><img src="missing.png"><script>undefinedFunction()</script></body></html>')
    broken, errors = _open(browser, page)
    assert broken == ["missing.png"]
    assert any("undefinedFunction" in e["message"] for e in errors)


def test_dossier_opens_in_chromium_without_console_errors_or_broken_images(browser, two_runs):
    html = two_runs["first"].html
    broken, errors = _open(browser, html)
    assert broken == []
    assert errors == []
    n_images = browser.execute_script("return document.images.length")
    assert n_images >= 5  # charts and batch figures are really there, not just no errors
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1280, min(int(height), 16000))
    assert browser.save_screenshot(str(ARTIFACTS / "dossier-chromium.png"))


def _pages(pdf: Path, out: Path) -> list[np.ndarray]:
    """Each PDF page as a grey image (pdftoppm at 30 dpi is plenty to see layout)."""
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([PDFTOPPM, "-r", "30", "-gray", "-png", str(pdf), str(out / "page")], check=True)
    import cv2

    return [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted(out.glob("page-*.png"))]


def test_pdf_pages_render_none_blank_and_nothing_runs_off_the_page(two_runs, tmp_path):
    _need(PDFTOPPM, "pdftoppm (poppler-utils)")
    pdf = two_runs["first"].pdf
    reader = pypdf.PdfReader(pdf)
    pages = _pages(pdf, tmp_path / "pages")
    assert len(pages) == len(reader.pages) > 5
    for number, (page, meta) in enumerate(zip(pages, reader.pages), start=1):
        width_mm = float(meta.mediabox.width) / 72 * 25.4
        height_mm = float(meta.mediabox.height) / 72 * 25.4
        assert (round(width_mm), round(height_mm)) == (210, 297), f"page {number} is not A4"
        ink = page < 200
        assert ink.mean() > 0.002, f"page {number} is blank"
        # The page margins stay empty: content pushed off the page would be clipped at the edge.
        h, w = page.shape
        edge_h, edge_w = max(2, h // 40), max(2, w // 40)
        for name, strip in (("top", ink[:edge_h]), ("bottom", ink[-edge_h:]),
                            ("left", ink[:, :edge_w]), ("right", ink[:, -edge_w:])):
            assert not strip.any(), f"page {number}: content reaches the {name} edge"


def test_page_check_detects_content_off_the_page(tmp_path):
    """The margin check is not vacuous: a PDF whose picture runs past the right edge fails it."""
    _need(PDFTOPPM, "pdftoppm (poppler-utils)")
    from weasyprint import HTML

    pdf = tmp_path / "wide.pdf"
    HTML(string='<style>@page{size:A4;margin:15mm}</style><div style="width:400mm;height:40mm;background:#000"></div>'
         ).write_pdf(pdf)
    page = _pages(pdf, tmp_path / "wide")[0]
    ink = page < 200
    assert ink[:, -max(2, page.shape[1] // 40):].any()


def test_pdf_has_the_page_count_its_footers_and_contents_promise(two_runs):
    # Every page says "Page i of N" with the real N, and each contents entry's page number
    # leads to the page where that chapter's heading is: the count and the numbering agree
    # with what a reader is told on the cover.
    import re

    reader = pypdf.PdfReader(two_runs["first"].pdf)
    texts = [page.extract_text() for page in reader.pages]
    n = len(texts)
    for i, text in enumerate(texts, start=1):
        assert f"Page {i} of {n}" in text, f"page {i}: footer missing or wrong"
    contents = dict(re.findall(r"^(\w[\w ,:-]+?) \.{3,}\s*(\d+)$", texts[0], flags=re.M))
    chapters = ["Summary", "Data", "Model cards", "Evaluation", "Selected batches", "Explanations",
                "Changes since the previous version", "Provenance", "Review and sign-off"]
    assert list(contents) == chapters
    pages = [int(contents[c]) for c in chapters]
    assert pages == sorted(pages) and pages[0] == 2 and pages[-1] <= n
    for chapter, page in zip(chapters, pages):
        assert texts[page - 1].lstrip().startswith(chapter), f"{chapter}: not at the top of page {page}"
    # Chapters start on a new page, so the count is at least one page per chapter plus the cover.
    assert n >= len(chapters) + 1


def test_pdf_renderer_reports_its_own_peak_memory_not_its_parents(tmp_path):
    # The renderer is spawned from the audit process, which holds TensorFlow and the test set;
    # Linux's ru_maxrss survives exec and would report the parent's size as the renderer's.
    from glassbox_audit.report import write_pdf

    ballast = np.ones(100_000_000)  # 800 MB resident in this (parent) process while the child runs
    html = tmp_path / "small.html"
    html.write_text("<html><body><h1>Small</h1><p>One page.</p></body></html>")
    stats = write_pdf(html, tmp_path / "small.pdf")
    assert float(ballast[-1]) == 1.0
    assert 20 < stats["peak_mb"] < 600
    assert len(pypdf.PdfReader(tmp_path / "small.pdf").pages) == 1


def test_pdf_embeds_photographic_figures_as_jpeg_and_charts_as_png(two_runs):
    """Images under overlays and heat maps go in as JPEG (most of a dossier's bytes), each one
    real JPEG data that decodes to the figure's size; charts stay lossless PNG (Flate)."""
    import io

    from PIL import Image

    from glassbox_audit.report.render import PHOTOGRAPHIC_KINDS
    from glassbox_audit.store import AuditStore

    with AuditStore(two_runs["first"].database, readonly=True) as store:
        arts = store.artifacts(store.run()["id"])
    sizes = {Image.open(two_runs["first"].path / a["path"]).size for a in arts if a["kind"] in PHOTOGRAPHIC_KINDS}
    charts = {Image.open(two_runs["first"].path / a["path"]).size for a in arts if a["kind"] == "chart"}
    found = {"/DCTDecode": set(), "/FlateDecode": set()}
    for page in pypdf.PdfReader(two_runs["first"].pdf).pages:
        for obj in (page["/Resources"].get("/XObject") or {}).values():
            o = obj.get_object()
            size = (int(o["/Width"]), int(o["/Height"]))
            found[str(o["/Filter"])].add(size)
            if o["/Filter"] == "/DCTDecode":
                assert o._data[:2] == b"\xff\xd8" and Image.open(io.BytesIO(o._data)).size == size
    assert sizes and found["/DCTDecode"] == sizes
    assert charts <= found["/FlateDecode"]
