"""run_audit end to end on tiny synthetic data: versions, reuse of models, dossier, database."""

import hashlib
import json
import logging
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pypdf
import pytest
from click.testing import CliRunner

from conftest import flip_bit, tiny_overrides, tree_hashes
from glassbox_audit.cli import cli
from glassbox_audit.config import load_config
from glassbox_audit.report import DISCLAIMER
from glassbox_audit.store import AuditStore

def test_first_run_trains_and_writes_a_complete_version(two_runs):
    r = two_runs["first"]
    assert r.version == "v001" and r.path.name == "v001"
    for p in (r.html, r.pdf, r.database, r.manifest):
        assert p.is_file(), p
    assert any("training base model" in m for m in two_runs["first_log"])


def test_model_cards_and_the_dossier_give_the_seconds_an_epoch_took(two_runs):
    cfg = two_runs["cfg"]
    cards = {p.parent.name.rsplit("-", 1)[0]: json.loads(p.read_text())
             for p in Path(cfg.models_dir).glob("*/card.json")}
    assert set(cards) == {"base", "precision-optimized", "balanced", "recall-optimized"}
    for name, card in cards.items():
        # The median epoch (the first of a fit also traces its step), each epoch timed alone.
        assert len(card["epoch_seconds"]) == card["epochs_run"] and card["interruptions_resumed"] == 0
        assert card["seconds_per_epoch"] == pytest.approx(float(np.median(card["epoch_seconds"])), abs=0.06)
        assert sum(card["epoch_seconds"]) <= card["training_seconds"] + 0.1
    variant = cards["balanced"]
    assert variant["base_seconds_per_epoch"] == cards["base"]["seconds_per_epoch"]
    html = two_runs["first"].html.read_text()
    assert f"({variant['seconds_per_epoch']} s an epoch)" in html


def test_second_run_loads_stored_models_and_leaves_v001_byte_identical(two_runs):
    first, second = two_runs["first"], two_runs["second"]
    assert second.version == "v002"
    assert tree_hashes(first.path) == two_runs["first_hashes"]
    assert sum("loaded stored model" in m for m in two_runs["second_log"]) == 3
    assert not any("training base" in m or "fine-tuning" in m for m in two_runs["second_log"])
    assert second.summary == first.summary  # same models, same data, same figures


def test_second_run_copies_the_figures_it_would_draw_the_same(two_runs):
    """Same models, data and settings: every figure of v001 is shown again, and copied from the
    figure cache rather than drawn; the copies are the bytes v001 holds."""
    first, second = two_runs["first"], two_runs["second"]
    log = [m for m in two_runs["second_log"] if m.startswith("figures:")]
    assert len(log) == 1 and log[0].endswith(" 0 drawn"), log
    shared = [p.relative_to(first.path) for p in (first.path / "figures").glob("*.png")
              if (second.path / p.relative_to(first.path)).is_file()]
    assert len(shared) >= 10
    assert all((first.path / p).read_bytes() == (second.path / p).read_bytes() for p in shared)


def test_manifest_lists_every_file_with_its_hash_and_chains_versions(two_runs):
    first, second = two_runs["first"], two_runs["second"]
    manifest = json.loads(second.manifest.read_text())
    hashes = tree_hashes(second.path)
    manifest_sha = hashes.pop("manifest.json")
    assert (second.path / "manifest.sha256").read_text() == f"{manifest_sha}  manifest.json\n"  # the seal
    hashes.pop("manifest.sha256")
    assert {k: v["sha256"] for k, v in manifest["files"].items()} == hashes
    assert manifest["previous_manifest_sha256"] == hashlib.sha256(first.manifest.read_bytes()).hexdigest()


def test_database_holds_every_image_and_provenance(two_runs):
    r, cfg = two_runs["first"], two_runs["cfg"]
    with AuditStore(r.database, readonly=True) as store:
        run = store.run()
        assert run["status"] == "complete" and run["version"] == 1
        assert run["packages"]["tensorflow-cpu"] and len(run["code_sha256"]) == 64
        evals = store.evaluations(run["id"])
        assert [e["model_name"] for e in evals] == [v.name for v in cfg.variants]
        n_test = cfg.data.synthetic.n_test
        assert store.db["image_metrics"].count == 3 * n_test
        assert all(len(e["model_sha256"]) == 64 for e in evals)
        files = store.data_files(evals[0]["dataset_fingerprint"])
        assert len(files) == 2 * (cfg.data.synthetic.n_train + cfg.data.synthetic.n_val + n_test)
        kinds = {a["kind"] for a in store.artifacts(run["id"])}
        assert {"overlay", "probability", "chart", "dossier-html", "dossier-pdf", "xai", "xai_layers",
                "xai_check"} <= kinds
        selected = store.selected_batches(run["id"])
        assert 1 <= len(selected) <= 3 and all(s["reason"] for s in selected)
        checks = {r["check_name"] for r in store.rows("select distinct check_name from xai_checks")}
        assert {"deletion", "insertion", "randomisation", "completeness", "timing"} <= checks


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.ids, self.scripts = [], [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "script":
            self.scripts += 1
        if "id" in attrs:
            self.ids.append(attrs["id"])


def test_html_dossier_parses_with_its_figures_and_escapes_text(two_runs):
    r = two_runs["first"]
    html = r.html.read_text()
    parser = _Collect()
    parser.feed(html)
    assert {"summary", "data", "models", "evaluation", "batches", "xai", "changes", "provenance",
            "review"} <= set(parser.ids)
    assert len(parser.images) >= 8
    assert all((r.path / src).is_file() for src in parser.images)
    assert parser.scripts == 0 and "&lt;script&gt;" in html
    assert DISCLAIMER in html
    assert "Acceptance criteria" in html and "dice &gt;= 0.85" in html
    assert "95% bootstrap interval" in html


def test_data_sheet_says_how_the_ground_truth_was_made_and_the_dossier_ends_with_a_sign_off(two_runs):
    from glassbox_audit.data.layouts import ground_truth_statement

    html = two_runs["first"].html.read_text(encoding="utf-8")
    assert f"<th>Ground truth</th><td>{ground_truth_statement('synthetic')}</td>" in html
    signoff = html[html.index("<h3>Sign-off</h3>"):]
    assert all(role in signoff for role in ("Prepared by", "Reviewed by", "Approved by"))


def test_pdf_dossier_has_pages_with_figures(two_runs):
    reader = pypdf.PdfReader(two_runs["first"].pdf)
    assert len(reader.pages) >= 5
    text = "".join(page.extract_text() for page in reader.pages[:3])
    assert "Research use only" in text
    images = sum(len(page.images) for page in reader.pages)
    assert images >= 8


def test_cli_run_prints_the_new_version_and_list_shows_it(two_runs):
    tmp = two_runs["tmp"]
    args = ["run", "--name", "tiny", "--no-pdf"]
    for o in tiny_overrides(tmp) + ["xai.enabled=false"]:  # explanations are covered by the fixture's runs
        args += ["--set", o]
    result = CliRunner().invoke(cli, args, obj={})
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("v003")
    listed = CliRunner().invoke(cli, ["list", "--audits-dir", str(tmp / "audits")], obj={})
    assert [line.split("\t")[1] for line in listed.stdout.splitlines()] == ["v001", "v002", "v003"]


def test_cli_evaluate_measures_stored_models_on_a_folder(two_runs, tmp_path):
    tmp = two_runs["tmp"]
    cache = next((tmp / "cache").glob("synthetic-*"))
    args = ["evaluate", "--layout", "folder", "--data", str(cache), "--models-dir", str(tmp / "models"),
            "--set", 'data.folder.splits="splits"', "--set", "evaluate.batch_size=4",
            "-o", str(tmp_path / "m.json")]
    result = CliRunner().invoke(cli, args, obj={})
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "m.json").read_text())
    assert set(doc["models"]) == {"precision-optimized", "balanced", "recall-optimized"}
    assert doc["models"]["balanced"]["macro"]["dice"] == pytest.approx(
        two_runs["first"].summary["balanced"]["dice"])


def test_cli_reports_bad_input_in_one_line_without_traceback(tmp_path):
    result = CliRunner().invoke(cli, ["run", "--set", "train.epochs=-1"], obj={})
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: config key 'train.epochs' must be positive, got -1"
    audits = tmp_path / "audits"
    result = CliRunner().invoke(cli, ["run", "--layout", "isic", "--data", str(tmp_path),
                                      "--audits-dir", str(audits)], obj={})
    assert result.exit_code == 2 and "not an ISIC Task 1 folder" in result.stderr
    assert "Traceback" not in result.output
    assert not audits.exists()  # nothing was written


def test_render_rebuilds_the_dossier_from_the_database_without_touching_the_version(two_runs, tmp_path):
    first, tmp = two_runs["first"], two_runs["tmp"]
    before = tree_hashes(first.path)
    out = tmp_path / "again"
    result = CliRunner().invoke(cli, ["render", "tiny", "v001", "--audits-dir", str(tmp / "audits"),
                                      "-o", str(out), "--no-pdf"], obj={})
    assert result.exit_code == 0, result.output
    assert tree_hashes(first.path) == before
    parser = _Collect()
    parser.feed((out / "dossier.html").read_text())
    assert all((out / src).is_file() for src in parser.images)
    # Same numbers, drawn again from the stored database.
    assert (out / "figures" / "batch_dice.png").read_bytes() == (first.path / "figures" / "batch_dice.png").read_bytes()


def test_render_of_an_old_version_prints_its_stored_ground_truth_after_the_code_changes(two_runs, tmp_path,
                                                                                        monkeypatch):
    from glassbox_audit.data import layouts

    tmp = two_runs["tmp"]
    stored = layouts.GROUND_TRUTH["synthetic"]
    monkeypatch.setitem(layouts.GROUND_TRUTH, "synthetic", "A statement newer code would print.")
    out = tmp_path / "again"
    result = CliRunner().invoke(cli, ["render", "tiny", "v001", "--audits-dir", str(tmp / "audits"),
                                      "-o", str(out), "--no-pdf"], obj={})
    assert result.exit_code == 0, result.output
    html = (out / "dossier.html").read_text()
    assert f"<th>Ground truth</th><td>{stored}</td>" in html and "newer code" not in html


def test_review_and_render_use_the_templates_the_run_used(two_runs, tmp_path):
    import shutil

    from glassbox_audit import run_audit
    from glassbox_audit.report import default_templates
    from glassbox_audit.review import review_version

    templates = tmp_path / "house-templates"
    shutil.copytree(default_templates(), templates)
    page = templates / "dossier.html.j2"
    page.write_text(page.read_text().replace("<body>", "<body><p>House style 7f3a</p>", 1))
    audits = tmp_path / "audits"  # not the fixture's: other tests list its audits
    run = run_audit(load_config(overrides=tiny_models_overrides(tmp_path) + [
        f'models_dir="{two_runs["tmp"] / "models"}"', "name=house", f'report.templates="{templates}"']))
    assert "House style 7f3a" in run.html.read_text()
    reviewed = review_version(audits, "house", run.path, "R", "approve", pdf=False)
    assert "House style 7f3a" in (reviewed / "dossier.html").read_text()
    out = tmp_path / "again"
    assert CliRunner().invoke(cli, ["render", "house", run.path.name, "--audits-dir", str(audits), "-o", str(out),
                                    "--no-pdf"], obj={}).exit_code == 0
    assert "House style 7f3a" in (out / "dossier.html").read_text()


def test_verify_command_passes_untouched_versions_and_fails_edited_ones(two_runs):
    audit = two_runs["tmp"] / "audits" / "tiny"
    ok = CliRunner().invoke(cli, ["verify", str(audit)], obj={})
    assert ok.exit_code == 0 and "FAILED" not in ok.output


def test_second_version_compares_itself_with_the_first(two_runs):
    second = two_runs["second"]
    with AuditStore(second.database, readonly=True) as store:
        rows, changes = store.comparison(store.run()["id"])
    assert {r["against_version"] for r in rows} == {"v001"}
    # Same models and data: every delta is exactly zero, only the run itself differs.
    assert all(r["delta"] == 0 for r in rows) and len(rows) == 3 * 6
    assert not [c for c in changes if c["what"].startswith(("weights", "dataset"))]
    assert "Changes since the previous version" in second.html.read_text()


def test_diff_command_reports_deltas_per_model_as_json(two_runs):
    tmp = two_runs["tmp"]
    result = CliRunner().invoke(cli, ["diff", "tiny", "v001", "v002", "--audits-dir", str(tmp / "audits"),
                                      "--json"], obj={})
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["a"] == "v001" and doc["b"] == "v002"
    assert {m["model"] for m in doc["metrics"]} == {"precision-optimized", "balanced", "recall-optimized"}


def test_fail_on_regression_exits_1_but_keeps_the_new_version_as_evidence(two_runs):
    tmp = two_runs["tmp"]
    args = ["run", "--name", "tiny", "--no-pdf", "--fail-on-regression"]
    for o in tiny_overrides(tmp) + ["evaluate.threshold=0.999", "xai.enabled=false"]:  # nearly nothing predicted
        args += ["--set", o]
    before = {p.name for p in (tmp / "audits" / "tiny").iterdir()}
    result = CliRunner().invoke(cli, args, obj={})
    assert result.exit_code == 1, result.output
    assert "regression: " in result.stderr and " dice " in result.stderr
    new = {p.name for p in (tmp / "audits" / "tiny").iterdir()} - before
    assert len(new) == 1 and new.pop().startswith("v")


def test_review_lands_as_a_new_version_and_leaves_the_reviewed_one_unchanged(two_runs):
    tmp, second = two_runs["tmp"], two_runs["second"]
    before = tree_hashes(second.path)
    with AuditStore(second.database, readonly=True) as store:
        image_id = store.rows("select image_id from image_metrics limit 1")[0]["image_id"]
    result = CliRunner().invoke(cli, [
        "review", "tiny", "v002", "--audits-dir", str(tmp / "audits"), "--reviewer", "A. <b>Reader</b>",
        "--decision", "needs-changes", "--note", "Check the border cases.", "--no-pdf",
        "--flag", f"{image_id}=ground truth questionable"], obj={})
    assert result.exit_code == 0, result.output
    new = Path(result.stdout.strip())
    assert tree_hashes(second.path) == before
    with AuditStore(new / "audit.sqlite", readonly=True) as store:
        [rev] = store.reviews()
    assert rev["reviewed_version"] == "v002" and rev["decision"] == "needs-changes"
    assert rev["flags"] == [{"image_id": image_id, "flag": "ground truth questionable"}]
    html = (new / "dossier.html").read_text()
    assert "records a review of v002" in html and "A. &lt;b&gt;Reader&lt;/b&gt;" in html
    assert CliRunner().invoke(cli, ["verify", str(new)], obj={}).exit_code == 0


def test_review_refuses_an_unknown_image(two_runs):
    tmp = two_runs["tmp"]
    args = ["review", "tiny", "v001", "--audits-dir", str(tmp / "audits"), "--reviewer", "R", "--decision", "approve"]
    bad = CliRunner().invoke(cli, args + ["--flag", "NO_SUCH_IMAGE=x"], obj={})
    assert bad.exit_code == 2 and "NO_SUCH_IMAGE" in bad.stderr


def test_failure_gallery_draws_every_failing_image_worst_first(two_runs):
    r = two_runs["first"]
    with AuditStore(r.database, readonly=True) as store:
        failing = store.rows(
            "select image_id, min(iou) as worst from image_metrics m join evaluations e on e.id = m.evaluation_id "
            "where m.iou < e.jaccard_threshold group by image_id order by worst, image_id")
        gallery = store.rows("select path, description from artifacts where kind = 'failure_gallery' order by path")
    html = r.html.read_text(encoding="utf-8")
    if not failing:
        assert gallery == [] and "Failure gallery" not in html
        return
    assert len(gallery) == -(-len(failing) // 8)
    assert gallery[0]["description"].startswith(f"Failures 1-{min(8, len(failing))} of {len(failing)}")
    for g in gallery:
        assert (r.path / g["path"]).is_file() and g["path"] in html


def test_operating_points_are_stored_per_threshold_and_match_the_summary_at_0_5(two_runs):
    r = two_runs["first"]
    with AuditStore(r.database, readonly=True) as store:
        for e in store.evaluations(r.run_id):
            rows = store.operating_points(e["id"])
            assert len(rows) >= 19
            at = next(row for row in rows if row["threshold"] == 0.5)
            assert at["macro_dice"] == pytest.approx(e["metrics"]["macro"]["dice"])
            assert at["micro_recall"] == pytest.approx(e["metrics"]["micro"]["recall"])
    assert "operating_points.png" in r.html.read_text(encoding="utf-8")


def test_train_never_uses_stored_models_of_other_settings_by_name_and_says_so(two_runs, caplog):
    from glassbox_audit.data import load_dataset
    from glassbox_audit.errors import ModelError
    from glassbox_audit.models import obtain_models

    tmp = two_runs["tmp"]
    cfg = load_config(overrides=tiny_overrides(tmp) + ["train.epochs=3"], train__mode="never")
    ds = load_dataset(cfg.data)
    with caplog.at_level(logging.WARNING, logger="glassbox_audit"):
        models = obtain_models(cfg, ds)
    assert [m.name for m in models] == [v.name for v in cfg.variants]
    assert any("using the stored" in r.getMessage() for r in caplog.records)
    # A stored model of another input size is never substituted.
    other = load_config(overrides=tiny_overrides(tmp) + ["model.input_size=48"], train__mode="never")
    with pytest.raises(ModelError, match="no stored model"):
        obtain_models(other, load_dataset(other.data))


def test_verify_catches_one_flipped_byte_in_any_file_of_a_real_version(two_runs, tmp_path):
    # Every file of a sealed version in turn, the manifest and its seal included: a single bit
    # flipped anywhere is reported for that file, and restoring the byte makes the version whole.
    import shutil

    from glassbox_audit.versions import MANIFEST, SEAL, verify_version

    audit = tmp_path / "tiny"
    shutil.copytree(two_runs["tmp"] / "audits" / "tiny", audit)
    version = audit / two_runs["second"].path.name
    files = sorted(p.relative_to(version).as_posix() for p in version.rglob("*") if p.is_file())
    assert {MANIFEST, SEAL, "audit.sqlite", "dossier.html"} <= set(files) and len(files) > 10
    rng = np.random.default_rng(5)
    for name in files:
        path = version / name
        original = path.read_bytes()
        flip_bit(path, int(rng.integers(len(original))), int(rng.integers(8)))
        report = verify_version(version)
        assert not report.ok, name
        if name in (MANIFEST, SEAL):
            assert report.seal != "ok" or report.changed == [MANIFEST], name
        else:
            assert (report.changed, report.added, report.removed, report.seal) == ([name], [], [], "ok"), name
        path.write_bytes(original)
        assert verify_version(version).ok, f"{name} restored"
    figure = next(f for f in files if f.startswith("figures/"))
    (version / figure).rename(tmp_path / "aside.png")
    assert verify_version(version).removed == [figure]
    (tmp_path / "aside.png").rename(version / figure)
    (version / "figures" / "extra.png").write_bytes(b"not part of the version")
    assert verify_version(version).added == ["figures/extra.png"]


@pytest.fixture(scope="module")
def other_models(two_runs):
    """One audit measured with the tiny models, then with the precision-optimized variant
    fine-tuned again under another Tversky weighting (the base and the other two unchanged)."""
    from glassbox_audit import run_audit

    base = tiny_models_overrides(two_runs["tmp"])
    first = run_audit(load_config(overrides=base))
    second = run_audit(load_config(overrides=base + OTHER_PRECISION_MODEL))
    return first, second


OTHER_PRECISION_MODEL = ["variants.0.loss.alpha=0.9", "variants.0.loss.beta=0.1"]


def tiny_models_overrides(tmp: Path) -> list[str]:
    """The tiny audit "tiny-models": no explanations or PDF, only the figures compared here."""
    return tiny_overrides(tmp) + ["name=tiny-models", "xai.enabled=false", "report.pdf=false"]


def test_a_run_after_a_review_of_an_older_version_compares_with_the_last_measurement(other_models):
    # v001 and v002 measured, v003 records a review of v001 (carrying v001's evaluation): the
    # next run's change log is against v002, the newest measurement, not v001 again.
    from glassbox_audit import run_audit
    from glassbox_audit.review import review_version

    first, _ = other_models  # v002 is the second of these
    audits = first.path.parent.parent
    review = review_version(audits, "tiny-models", first.path, "R", "approve", pdf=False)
    third = run_audit(load_config(overrides=tiny_models_overrides(audits.parent) + OTHER_PRECISION_MODEL))
    assert (review.name, third.version) == ("v003", "v004")
    assert json.loads(third.manifest.read_text())["previous_version"] == "v003"
    with AuditStore(third.database, readonly=True) as store:
        rows, changes = store.comparison(store.run()["id"])
    assert {r["against_version"] for r in rows} == {"v002"}
    assert all(r["delta"] == 0 for r in rows) and not [c for c in changes if c["what"].startswith("weights")]


def test_diff_of_runs_with_different_models_reports_each_delta_and_weight_hash(other_models):
    first, second = other_models
    result = CliRunner().invoke(cli, ["diff", "tiny-models", first.version, second.version, "--audits-dir",
                                      str(first.path.parent.parent), "--json"], obj={})
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)

    def per_image(db):
        with AuditStore(db, readonly=True) as store:
            return ({e["model_name"]: e["model_sha256"] for e in store.evaluations(store.run()["id"])},
                    {(r["model_name"], r["image_id"]): r for r in store.rows(
                        "select e.model_name, m.* from image_metrics m join evaluations e on e.id = m.evaluation_id")})

    sha_a, rows_a = per_image(first.database)
    sha_b, rows_b = per_image(second.database)
    # Only the retrained variant's weights changed, with the hashes each database records;
    # nothing else did but the configuration.
    assert sha_a["precision-optimized"] != sha_b["precision-optimized"]
    assert [(c["what"], c["a"], c["b"]) for c in doc["changes"] if c["what"].startswith("weights ")] == [
        ("weights precision-optimized", sha_a["precision-optimized"], sha_b["precision-optimized"])]
    assert {c["what"] for c in doc["changes"]} == {"config sha256", "weights precision-optimized"}
    # Each delta is the mean per-image change computed here straight from the two databases:
    # its sign and size for the retrained variant, exactly zero for the two unchanged ones.
    moved = 0
    for m in doc["metrics"]:
        keys = [k for k in rows_a if k[0] == m["model"]]
        expected = float(np.mean([rows_b[k][m["metric"]] - rows_a[k][m["metric"]] for k in keys]))
        assert m["delta"] == pytest.approx(expected, abs=1e-9), (m["model"], m["metric"])
        assert np.sign(m["delta"]) == np.sign(expected)
        assert m["significant"] == (m["ci_low"] > 0 or m["ci_high"] < 0)
        if m["model"] != "precision-optimized":
            assert m["delta"] == 0 and not m["significant"]
        moved += m["delta"] != 0
    assert moved > 0  # the retrained model really scores differently, so the signs above are tested
    # The new version carries the same comparison, made automatically when it was built.
    with AuditStore(second.database, readonly=True) as store:
        stored, _ = store.comparison(store.run()["id"])
    assert {(r["model"], r["metric"]): r["delta"] for r in stored} == pytest.approx(
        {(m["model"], m["metric"]): m["delta"] for m in doc["metrics"]})
