"""Version comparison: paired bootstrap signs, intervals and changed hashes."""

import numpy as np
import pytest

from glassbox_audit.compare import paired_bootstrap


def test_bootstrap_interval_brackets_a_clear_improvement():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.6, 0.9, 200)
    low, high, p = paired_bootstrap(a, a + 0.05 + rng.normal(0, 0.01, 200))
    assert 0.04 < low < 0.05 < high < 0.06
    assert p < 0.01


def test_bootstrap_sees_no_change_in_noise():
    rng = np.random.default_rng(1)
    a = rng.uniform(0.6, 0.9, 200)
    low, high, p = paired_bootstrap(a, a + rng.normal(0, 0.02, 200))
    assert low < 0 < high and p > 0.05


def test_bootstrap_of_identical_scores_is_exactly_zero():
    a = np.array([0.5, 0.7, 0.9])
    assert paired_bootstrap(a, a) == (0.0, 0.0, 1.0)


def test_a_regression_is_negative():
    a = np.linspace(0.7, 0.9, 50)
    low, high, _ = paired_bootstrap(a, a - 0.1)
    assert high == pytest.approx(-0.1) and low == pytest.approx(-0.1)


def _version_db(path, version, model_sha, counts):
    from test_store import FakeModel, dataset

    from glassbox_audit.evaluate import ModelEvaluation
    from glassbox_audit.store import AuditStore

    ids = [str(i) for i in range(len(counts))]
    ev = ModelEvaluation("balanced", model_sha, ids, np.zeros(len(ids), int), np.full((len(ids), 2), 10),
                         np.array(counts), 0.5, 0.65)
    with AuditStore(path) as store:
        store.start_run({"id": f"run{version}", "audit_name": "a", "version": version, "started_at": "t",
                         "config_json": {}, "code_version": "git abc", "code_sha256": "c" * 64,
                         "config_sha256": "f" * 64, "packages_json": {"keras": "3"}})
        fp = store.record_dataset(dataset())
        store.record_models([FakeModel("balanced", model_sha)])
        store.record_evaluation(f"run{version}", ev, fp, "test")
    return path


def test_diff_of_two_databases_reports_signs_and_changed_weights(tmp_path):
    from glassbox_audit.compare import diff_databases

    worse = [[50, 10, 10, 30]] * 20
    better = [[60, 2, 0, 38]] * 20
    a = _version_db(tmp_path / "a.sqlite", 1, "a" * 64, worse)
    b = _version_db(tmp_path / "b.sqlite", 2, "b" * 64, better)
    d = diff_databases(a, b)
    dice = next(m for m in d.metrics if m.metric == "dice")
    assert dice.delta > 0 and dice.significant
    assert next(m for m in d.metrics if m.metric == "recall").delta > 0
    assert [(c.what, c.a, c.b) for c in d.changes] == [("weights balanced", "a" * 64, "b" * 64)]
    assert d.regressions(0.01) == []
    back = diff_databases(b, a)
    assert [m.metric for m in back.regressions(0.01, ("dice", "iou"))] == ["dice", "iou"]


def test_the_same_predictions_under_new_metric_rules_change_no_dice_or_iou_and_the_log_says_why(tmp_path):
    """The release database (schema 1, old rules) re-recorded from its own confusion counts by
    today's code: Dice and IoU, whose rules did not change, move by exactly 0; the change log
    names the change of metric rules."""
    from pathlib import Path

    from glassbox_audit.compare import diff_databases
    from glassbox_audit.evaluate import ModelEvaluation
    from glassbox_audit.store import AuditStore

    release = Path(__file__).parent / "data" / "release-0.1.0" / "audit.sqlite"
    again = tmp_path / "audit.sqlite"
    with AuditStore(release, readonly=True) as old, AuditStore(again) as new:
        run = old.run()
        new.start_run({k: run[k] for k in ("id", "audit_name", "started_at", "code_version", "code_sha256",
                                           "config_sha256", "command")}
                      | {"version": run["version"] + 1, "config_json": run["config"], "packages_json": run["packages"],
                         "machine_json": run["machine"], "notes_json": run["notes"]})
        for e in old.evaluations(run["id"]):
            rows = old.image_metrics(e["id"])
            counts = np.array([[r["tp"], r["fp"], r["fn"], r["tn"]] for r in rows])
            ev = ModelEvaluation(e["model_name"], e["model_sha256"], [r["image_id"] for r in rows],
                                 np.array([r["batch_index"] for r in rows]), np.array([[r["height"], r["width"]] for r in rows]),
                                 counts, e["threshold"], e["jaccard_threshold"])
            new.db["models"].insert(old.rows("select * from models where sha256 = ?", [e["model_sha256"]])[0],
                                    pk="sha256", replace=True)
            new.db["datasets"].insert(old.rows("select * from datasets where fingerprint = ?",
                                               [e["dataset_fingerprint"]])[0], pk="fingerprint", replace=True)
            new.record_evaluation(run["id"], ev, e["dataset_fingerprint"], "test")
    d = diff_databases(release, again)
    overlap = [m for m in d.metrics if m.metric in ("dice", "iou", "thresholded_jaccard")]
    assert overlap and all(m.delta == 0.0 for m in overlap)
    assert ("metric rules", "1", "2") in [(c.what, c.a, c.b) for c in d.changes]
    assert any("metric rules changed (1 -> 2)" in n for n in d.notes)
