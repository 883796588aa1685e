"""The review workstation as a reviewer uses it: the real server started on a real port by
``glassbox-audit serve``, driven in headless Chromium (Debian ``chromium`` + ``chromium-driver``,
as the dossier test). Screenshots land in the test artifacts folder."""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import tree_hashes
from test_dossier_pages import ARTIFACTS, BROKEN_IMAGES_JS, headless_chromium

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if int(hex_port, 16) == port and state == "0A":
                found.add(address)
    return found


@pytest.fixture(scope="module")
def server(serve_audit, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("workstation")
    audits = tmp / "audits"
    shutil.copytree(serve_audit["audits"], audits)
    port = _free_port()
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "glassbox_audit", "serve", "--audits-dir", str(audits),
                             "--port", str(port), "--xai-cache", str(tmp / "xai-cache"), "--no-pdf"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(url + "/", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"server exited: {(tmp / 'server.log').read_text()}")
            time.sleep(0.2)
    yield {"url": url, "audits": audits, "port": port, "log": tmp / "server.log"}
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def browser():
    driver = headless_chromium("1400,1800")
    yield driver
    driver.quit()


def _sorted_ids(db: Path, variant: int, metric: str = "dice") -> list[str]:
    con = sqlite3.connect(db)
    eid = [r[0] for r in con.execute("select id from evaluations order by id")][variant]
    ids = [r[0] for r in con.execute(f"select image_id from image_metrics where evaluation_id = ? "
                                     f"order by {metric}, image_id", [eid])]
    con.close()
    return ids


def _clean(driver) -> None:
    """No broken image and no console error on the page shown."""
    assert driver.execute_script(BROKEN_IMAGES_JS) == []
    errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert errors == []


def test_the_server_listens_on_loopback_only_by_default(server):
    assert _listening_addresses(server["port"]) == {"0100007F"}


def test_a_reviewer_sorts_steps_explains_flags_and_approves(server, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    from glassbox_audit.versions import verify_version

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    audits, url = server["audits"], server["url"]
    v1 = audits / "tiny" / "v001"
    before = tree_hashes(v1)
    order = _sorted_ids(v1 / "audit.sqlite", 0)
    wait = WebDriverWait(browser, 180)

    browser.get(f"{url}/audits/tiny/v001")
    _clean(browser)
    browser.find_element(By.CSS_SELECTOR, 'a.sort[data-sort="dice:0"]').click()
    wait.until(lambda d: "sort=dice" in d.current_url)
    _clean(browser)
    assert browser.find_elements(By.CSS_SELECTOR, "a.image-link")[0].text == order[0]

    browser.find_elements(By.CSS_SELECTOR, "a.image-link")[0].click()  # the worst image
    wait.until(lambda d: d.find_element(By.ID, "image-id").text == order[0])
    _clean(browser)
    ActionChains(browser).send_keys("j").perform()  # the next in the current sort
    wait.until(lambda d: d.find_element(By.ID, "image-id").text == order[1])
    _clean(browser)

    Select(browser.find_element(By.ID, "explain-method")).select_by_value("gradcam")
    Select(browser.find_element(By.ID, "explain-variant")).select_by_index(2)
    browser.find_element(By.ID, "explain-button").click()
    wait.until(lambda d: d.execute_script(
        "const i = document.querySelector('.explanation img'); return !!i && i.complete && i.naturalWidth > 0"))
    assert "gradcam" in browser.find_element(By.CSS_SELECTOR, ".explanation").text
    _clean(browser)
    browser.save_screenshot(str(ARTIFACTS / "workstation-image.png"))

    for label in ("model wrong", "artefact"):
        current = browser.find_element(By.ID, "image-id").text
        browser.find_element(By.CSS_SELECTOR, f'input[name="flag"][value="{label}"]').click()
        browser.find_element(By.ID, "flag-comment").send_keys(f"checked {current}")
        browser.find_element(By.ID, "save-flags").click()
        wait.until(lambda d: d.find_elements(By.ID, "draft-flags"))
        _clean(browser)
        ActionChains(browser).send_keys("j").perform()
        wait.until(lambda d, c=current: d.find_element(By.ID, "image-id").text != c)
    flagged = order[1:3]

    ActionChains(browser).send_keys("u").perform()  # back to the table
    wait.until(lambda d: d.find_elements(By.ID, "review-form"))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#pending-flags li")) == 2
    browser.find_element(By.ID, "reviewer").send_keys("Dr. A. Reader")
    browser.find_element(By.ID, "decision-approve").click()
    browser.find_element(By.ID, "note").send_keys("Boundaries checked; <b>two</b> images flagged.")
    browser.save_screenshot(str(ARTIFACTS / "workstation-version.png"))
    browser.find_element(By.ID, "submit-review").click()
    wait.until(lambda d: d.find_elements(By.ID, "recorded"))
    _clean(browser)
    assert "/audits/tiny/v002" in browser.current_url

    v2 = audits / "tiny" / "v002"
    assert verify_version(v2).ok
    assert tree_hashes(v1) == before
    dossier = (v2 / "dossier.html").read_text()
    for image_id, label in zip(flagged, ("model wrong", "artefact")):
        assert image_id in dossier and f"{label}: checked {image_id}" in dossier
    assert "&lt;b&gt;two&lt;/b&gt;" in dossier and "<b>two</b>" not in dossier
