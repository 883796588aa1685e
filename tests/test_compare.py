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
