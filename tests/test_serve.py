"""The review workstation over HTTP (Starlette's test client, a real tiny audit, real models):
what it shows, that it never writes a sealed version, and how it treats hostile requests.
The browser walk-through is in ``test_serve_browser.py``."""

from __future__ import annotations

import re
import shutil
import sqlite3

import numpy as np
import pytest
from conftest import HOSTILE, flip_bit, tree_hashes

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def audit(serve_audit):
    return serve_audit


@pytest.fixture
def client(audit, tmp_path):
    from starlette.testclient import TestClient

    from glassbox_audit.serve import create_app

    app = create_app(audit["audits"], str(tmp_path / "xai-cache"), pdf=False)
    with TestClient(app, follow_redirects=False) as c:
        c.cache_dir = tmp_path / "xai-cache"
        yield c


def _token(page: str) -> str:
    return re.search(r'name="csrftoken" value="([^"]+)"', page).group(1)


def _image_metrics(db, variant_index: int = 0) -> list[dict]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    evals = [r["id"] for r in con.execute("select id from evaluations order by id")]
    rows = [dict(r) for r in con.execute("select * from image_metrics where evaluation_id = ?", [evals[variant_index]])]
    con.close()
    return rows


def _table_ids(html: str) -> list[str]:
    return re.findall(r'class="image-link" href="/audits/[^/]+/[^/]+/images/([^"?]+)', html)


def test_index_lists_each_sealed_version_with_its_verify_status(client, audit):
    page = client.get("/").text
    assert "/audits/tiny/v001" in page and "status-intact" in page
    assert "Research tool, not a medical device." in page


def test_a_changed_file_shows_the_version_as_changed(audit, tmp_path):
    from glassbox_audit.serve.library import Library

    copy = tmp_path / "audits"
    shutil.copytree(audit["audits"], copy)
    figure = next((copy / "tiny" / "v001" / "figures").glob("*.png"))
    flip_bit(figure, 100)
    entry = Library(copy).version("tiny", "v001")
    assert entry.status == "changed"
    assert any(figure.name in p for p in entry.problems)


def test_table_sorted_by_a_variants_dice_lists_the_worst_image_first(client, audit):
    rows = _image_metrics(audit["v1"] / "audit.sqlite", 1)
    expected = [r["image_id"] for r in sorted(rows, key=lambda r: (r["dice"], r["image_id"]))]
    ascending = _table_ids(client.get("/audits/tiny/v001?sort=dice:1").text)
    descending = _table_ids(client.get("/audits/tiny/v001?sort=dice:1&desc=1").text)
    assert ascending == expected
    assert descending[0] == max(rows, key=lambda r: (r["dice"], r["image_id"]))["image_id"]


def test_table_pages_cover_every_image_once(client, audit):
    n = len(_image_metrics(audit["v1"] / "audit.sqlite"))
    seen = []
    for page in (1, 2, 3):
        seen += _table_ids(client.get(f"/audits/tiny/v001?sort=iou:0&per=5&page={page}").text)
    assert len(seen) == n == len(set(seen))


def test_failures_filter_keeps_the_images_some_variant_fails(client, audit):
    db = audit["v1"] / "audit.sqlite"
    failing = set()
    for k in range(3):
        failing |= {r["image_id"] for r in _image_metrics(db, k) if r["iou"] < 0.65}
    shown = set(_table_ids(client.get("/audits/tiny/v001?only=failures&per=500").text))
    assert shown == failing


def test_batch_filter_keeps_one_batch(client, audit):
    rows = _image_metrics(audit["v1"] / "audit.sqlite")
    in_batch = {r["image_id"] for r in rows if r["batch_index"] == 1}
    assert set(_table_ids(client.get("/audits/tiny/v001?batch=1").text)) == in_batch


def test_error_shares_in_the_table_are_the_metric_definitions(audit):
    from glassbox_audit.metrics import error_shares
    from glassbox_audit.serve.library import ImageTable

    table = ImageTable.read(audit["v1"] / "audit.sqlite")
    rows = {r["image_id"]: r for r in _image_metrics(audit["v1"] / "audit.sqlite", 2)}
    k = list(table.ids).index(next(iter(rows)))
    r = rows[table.ids[k]]
    expected = error_shares(np.array([r["tp"], r["fp"], r["fn"], r["tn"]]))
    assert table.values["fp_share"][2, k] == pytest.approx(float(expected["fp_share"]))
    assert table.values["fn_share"][2, k] == pytest.approx(float(expected["fn_share"]))
    assert float(expected["fp_share"]) == pytest.approx(r["fp"] / (r["tp"] + r["fp"] + r["fn"] + r["tn"]))


def test_image_page_shows_the_predictions_that_were_scored(client, audit):
    worst = _table_ids(client.get("/audits/tiny/v001?sort=dice:0").text)[0]
    page = client.get(f"/audits/tiny/v001/images/{worst}?sort=dice:0").text
    # Each variant's mask, predicted again now, has exactly the stored confusion counts.
    assert page.count('<span class="pass" title="the prediction drawn here') == 3
    for kind in ("image", "truth", "error-0", "prob-2"):
        response = client.get(f"/audits/tiny/v001/images/{worst}/picture/{kind}.png")
        assert response.status_code == 200 and response.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_next_and_previous_follow_the_current_sort(client):
    order = _table_ids(client.get("/audits/tiny/v001?sort=dice:0&desc=1").text)
    page = client.get(f"/audits/tiny/v001/images/{order[1]}?sort=dice%3A0&desc=1").text
    assert re.search(r'id="prev-link"[^>]*href="[^"]*/images/' + re.escape(order[0]), page)
    assert re.search(r'id="next-link"[^>]*href="[^"]*/images/' + re.escape(order[2]), page)


def test_counts_that_differ_from_the_stored_ones_are_reported(audit):
    from glassbox_audit.serve.library import Library
    from glassbox_audit.serve.pictures import VersionPictures

    record = Library(audit["audits"]).image("tiny", "v001", _image_metrics(audit["v1"] / "audit.sqlite")[0]["image_id"])
    pics = VersionPictures(audit["v1"], cache_dir="")
    counts = {r["model_name"]: (r["tp"], r["fp"], r["fn"], r["tn"]) for r in record["rows"]}
    counts[pics.variants[0]] = (0, 0, 0, 0)
    view = pics.image(record["rows"][0]["image_id"], record["batch_index"], counts)
    assert view.counts_match == {pics.variants[0]: False, pics.variants[1]: True, pics.variants[2]: True}


def test_data_changed_since_the_audit_shows_no_pictures(audit, tmp_path):
    from glassbox_audit.serve.pictures import Unavailable, VersionPictures

    folder = tmp_path / "v001"
    shutil.copytree(audit["v1"], folder)
    (folder / "audit.sqlite").chmod(0o644)
    con = sqlite3.connect(folder / "audit.sqlite")
    con.execute("update evaluations set dataset_fingerprint = 'feedfacefeedface'")
    con.commit()
    con.close()
    pics = VersionPictures(folder, cache_dir="")
    with pytest.raises(Unavailable, match="changed since this version was audited"):
        pics.image("SYN_0000000", 0, {})


def test_explanation_on_demand_is_computed_once_then_read_from_the_cache(client, audit):
    before = tree_hashes(audit["v1"])
    image = _image_metrics(audit["v1"] / "audit.sqlite")[3]["image_id"]
    url = f"/audits/tiny/v001/images/{image}/explain"
    first = client.get(url, params={"method": "integrated_gradients", "variant": "balanced"}).json()
    again = client.get(url, params={"method": "integrated_gradients", "variant": "balanced"}).json()
    assert first["cached"] is False and again["cached"] is True
    assert [m["key"] for m in first["maps"]] == ["integrated_gradients"]
    assert "steps=4" in first["maps"][0]["params"]  # the version's own XAI settings
    assert {c["check"] for c in first["checks"]} == {"deletion", "insertion"}
    assert client.get(first["maps"][0]["src"]).content[:4] == b"\x89PNG"
    assert any(client.cache_dir.rglob("*"))
    assert tree_hashes(audit["v1"]) == before  # the sealed version is never written


def test_unknown_method_or_variant_is_refused(client, audit):
    image = _image_metrics(audit["v1"] / "audit.sqlite")[0]["image_id"]
    r = client.get(f"/audits/tiny/v001/images/{image}/explain", params={"method": "lime", "variant": "balanced"})
    assert r.status_code == 400


def test_flags_and_a_decision_become_a_new_version_and_the_old_one_stays_byte_identical(audit, tmp_path):
    from starlette.testclient import TestClient

    from glassbox_audit.serve import create_app
    from glassbox_audit.versions import verify_version

    audits = tmp_path / "audits"
    shutil.copytree(audit["audits"], audits)
    before = tree_hashes(audits / "tiny" / "v001")
    ids = [r["image_id"] for r in _image_metrics(audits / "tiny" / "v001" / "audit.sqlite")][:2]
    with TestClient(create_app(audits, str(tmp_path / "cache"), pdf=False), follow_redirects=False) as c:
        for image_id, label in zip(ids, ("ground truth questionable", "model wrong")):
            page = c.get(f"/audits/tiny/v001/images/{image_id}").text
            r = c.post(f"/audits/tiny/v001/images/{image_id}/flags",
                       data={"csrftoken": _token(page), "flag": label, "comment": f"seen on {image_id}", "back": ""})
            assert r.status_code == 303
        version_page = c.get("/audits/tiny/v001").text
        assert "Flags to be recorded with your decision (2)" in version_page
        r = c.post("/audits/tiny/v001/review", data={"csrftoken": _token(version_page), "reviewer": "A. Reader",
                                                     "decision": "approve", "note": HOSTILE})
        assert r.status_code == 303 and r.headers["location"].startswith("/audits/tiny/v002")
        shown = c.get(r.headers["location"]).text
    v2 = audits / "tiny" / "v002"
    assert verify_version(v2).ok
    assert tree_hashes(audits / "tiny" / "v001") == before
    dossier = (v2 / "dossier.html").read_text()
    assert f"seen on {ids[0]}" in dossier and "model wrong" in dossier and ids[1] in dossier
    for html in (dossier, shown):
        assert HOSTILE not in html and "&lt;script&gt;" in html
    con = sqlite3.connect(v2 / "audit.sqlite")
    assert sorted(con.execute("select image_id, flag from image_flags")) == sorted(
        [(ids[0], f"ground truth questionable: seen on {ids[0]}"), (ids[1], f"model wrong: seen on {ids[1]}")])
    con.close()
    assert "Flags to be recorded" not in shown  # the drafts went into v002


def test_a_form_without_its_token_is_refused_and_writes_nothing(audit, tmp_path):
    from starlette.testclient import TestClient

    from glassbox_audit.serve import create_app

    audits = tmp_path / "audits"
    shutil.copytree(audit["audits"], audits)
    before = tree_hashes(audits / "tiny")
    with TestClient(create_app(audits, str(tmp_path / "cache"), pdf=False), follow_redirects=False) as c:
        c.get("/audits/tiny/v001")  # has the cookie, but the forged form has no token
        forged = c.post("/audits/tiny/v001/review", data={"reviewer": "Mallory", "decision": "approve"})
        wrong = c.post("/audits/tiny/v001/review", data={"reviewer": "Mallory", "decision": "approve",
                                                          "csrftoken": "forged"})
    assert forged.status_code == 403 and wrong.status_code == 403
    assert tree_hashes(audits / "tiny") == before
    assert not (audits / ".workstation" / "drafts.sqlite").exists()


def test_a_bad_decision_is_reported_on_the_page_and_nothing_is_written(client, audit):
    page = client.get("/audits/tiny/v001").text
    r = client.post("/audits/tiny/v001/review", data={"csrftoken": _token(page), "reviewer": "A. Reader",
                                                       "decision": "maybe", "note": ""})
    assert r.status_code == 400 and "review decision must be one of" in r.text
    assert not (audit["audits"] / "tiny" / "v002").exists()


@pytest.mark.parametrize("url", [
    "/audits/..%2F..%2Fetc/v001",
    "/audits/tiny/..%2Fv001",
    "/audits/tiny/v001/../../../outside.txt",
    "/audits/tiny/v001/files/..%2F..%2F..%2Foutside.txt",
    "/audits/tiny/v001/files/%2e%2e/%2e%2e/%2e%2e/outside.txt",
    "/audits/.workstation/v001",
    "/audits/tiny/v001/images/..%2F..%2Fv001",
])
def test_no_request_reaches_a_file_outside_the_audits_folder(client, audit, url):
    (audit["tmp"] / "outside.txt").write_text("secret")
    r = client.get(url)
    assert r.status_code == 404 and "secret" not in r.text


def test_the_sealed_dossier_is_served_from_inside_the_version(client):
    r = client.get("/audits/tiny/v001/files/dossier.html")
    assert r.status_code == 200 and "<html" in r.text


def test_a_version_being_built_is_not_shown_until_sealed(client, audit):
    from glassbox_audit.versions import new_version

    with new_version(audit["audits"], "tiny") as build:
        shutil.copyfile(audit["v1"] / "audit.sqlite", build.path / "audit.sqlite")
        listing = client.get("/").text
        assert build.name not in listing
        assert client.get(f"/audits/tiny/{build.name}").status_code == 404
        assert client.get(f"/audits/tiny/{build.path.name}").status_code == 404
    assert build.name in client.get("/").text
    shutil.rmtree(build.final)  # the other tests share this audit folder


def test_the_audit_page_shows_each_versions_change_log_against_the_previous(two_runs, tmp_path):
    from starlette.testclient import TestClient

    from glassbox_audit.serve import create_app

    audits = tmp_path / "audits"
    shutil.copytree(two_runs["tmp"] / "audits", audits)
    con = sqlite3.connect(two_runs["second"].database)
    deltas = con.execute("select model, metric, delta from comparisons").fetchall()
    con.close()
    assert deltas
    with TestClient(create_app(audits, str(tmp_path / "cache"), pdf=False)) as c:
        page = c.get("/audits/tiny").text
    table = page.split('class="deltas"', 1)[1].split("</table>", 1)[0]
    assert table.count("<tr><td>") == len(deltas)
    assert f"<td>{deltas[0][0]}</td><td>{deltas[0][1]}</td>" in table


def test_serve_without_an_audits_folder_fails_in_one_line(tmp_path):
    from click.testing import CliRunner

    from glassbox_audit.cli import cli

    out = CliRunner().invoke(cli, ["serve", "--audits-dir", str(tmp_path / "nowhere")], obj={})
    assert out.exit_code == 2
    assert out.output.strip().splitlines() == [f"error: {tmp_path / 'nowhere'}: no audits folder here (run an audit "
                                               "first, or pass --audits-dir)"]
