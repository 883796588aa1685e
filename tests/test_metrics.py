"""Metrics against hand-computed cases, including the empty-mask conventions."""

import numpy as np
import pytest

from glassbox_audit.metrics import (aggregate, bootstrap_intervals, confusion_counts, metrics_from_counts,
                                    thresholded_jaccard)


def masks(truth_rows, pred_rows):
    return np.array(truth_rows, bool), np.array(pred_rows, bool)


def test_confusion_counts_on_a_hand_drawn_case():
    truth, pred = masks([[1, 1, 0, 0], [1, 1, 0, 0]], [[0, 1, 1, 0], [0, 1, 1, 0]])
    assert confusion_counts(truth, pred).tolist() == [2, 2, 2, 2]


def test_metrics_match_hand_computation():
    # tp=6, fp=2, fn=4, tn=88
    m = {k: float(v) for k, v in metrics_from_counts(np.array([6, 2, 4, 88])).items()}
    assert m["dice"] == pytest.approx(12 / 18)
    assert m["iou"] == pytest.approx(6 / 12)
    assert m["precision"] == pytest.approx(6 / 8)
    assert m["recall"] == pytest.approx(6 / 10)
    assert m["f1"] == pytest.approx(m["dice"])
    assert m["pixel_accuracy"] == pytest.approx(94 / 100)
    assert m["specificity"] == pytest.approx(88 / 90)


def _values(m, keys):
    return [float(m[k]) for k in keys]


def test_both_masks_empty_scores_one_on_overlap_and_leaves_recall_and_precision_undefined():
    truth = pred = np.zeros((4, 4), bool)
    m = metrics_from_counts(confusion_counts(truth, pred))
    assert _values(m, ("dice", "iou", "f1", "pixel_accuracy", "specificity")) == [1, 1, 1, 1, 1]
    assert np.isnan(m["recall"]) and np.isnan(m["precision"])


def test_empty_prediction_on_a_lesion_scores_zero_overlap_and_has_no_precision():
    truth = np.zeros((4, 4), bool)
    truth[1:3, 1:3] = True
    m = metrics_from_counts(confusion_counts(truth, np.zeros_like(truth)))
    assert _values(m, ("dice", "iou", "recall")) == [0, 0, 0]
    assert np.isnan(m["precision"])  # nothing predicted: no predicted positive to be right about
    assert float(m["specificity"]) == 1.0


def test_one_false_positive_pixel_on_a_lesion_free_image_leaves_recall_undefined_not_zero():
    pred = np.zeros((4, 4), bool)
    pred[0, 0] = True
    m = metrics_from_counts(confusion_counts(np.zeros_like(pred), pred))
    assert _values(m, ("dice", "iou", "precision")) == [0, 0, 0]
    assert np.isnan(m["recall"])  # no lesion pixel to recall (the old rule scored this image 0)
    assert float(m["specificity"]) == pytest.approx(15 / 16)


def test_one_missed_pixel_on_an_all_lesion_image_leaves_specificity_undefined_not_zero():
    truth = np.ones((4, 4), bool)
    pred = truth.copy()
    pred[0, 0] = False
    m = metrics_from_counts(confusion_counts(truth, pred))
    assert float(m["recall"]) == pytest.approx(15 / 16)
    assert np.isnan(m["specificity"])  # no background pixel (the old rule scored this image 0)


def test_image_means_leave_undefined_values_out_and_count_them():
    # A lesion found perfectly, a lesion-free image with one false alarm, a lesion-free image left empty.
    counts = np.array([[10, 0, 0, 90], [0, 1, 0, 99], [0, 0, 0, 100]])
    agg = aggregate(counts)
    assert agg["macro"]["recall"] == 1.0  # the two lesion-free images have no recall
    assert agg["undefined"]["recall"] == 2
    assert agg["macro"]["precision"] == pytest.approx(0.5)  # (1 + 0) / 2; the empty image predicted nothing
    assert agg["undefined"]["precision"] == 1
    assert agg["undefined"]["dice"] == 0 and agg["macro"]["dice"] == pytest.approx((1 + 0 + 1) / 3)


def test_bootstrap_intervals_skip_undefined_values():
    counts = np.array([[10, 0, 0, 90], [0, 1, 0, 99], [8, 0, 2, 90]])
    low, high = bootstrap_intervals(counts)["recall"]
    assert 0.8 <= low <= high <= 1.0  # only the two lesion images' recalls (0.8 and 1.0) count
    assert "recall" not in bootstrap_intervals(np.array([[0, 1, 0, 99]]))  # defined nowhere: no interval


def test_thresholded_jaccard_zeroes_scores_below_threshold():
    assert thresholded_jaccard(np.array([0.9, 0.64, 0.65, 0.3])) == pytest.approx((0.9 + 0.65) / 4)


def test_micro_and_macro_differ_as_defined():
    # Image A: large lesion found perfectly; image B: small lesion missed entirely.
    counts = np.array([[100, 0, 0, 0], [0, 0, 10, 90]])
    agg = aggregate(counts)
    assert agg["micro"]["dice"] == pytest.approx(200 / 210)
    assert agg["macro"]["dice"] == pytest.approx(0.5)
    assert agg["dataset"]["lesion_detection_rate"] == 0.5
    assert agg["dataset"]["fn_share"] == pytest.approx(10 / 200)
    assert agg["dataset"]["jaccard_failures"] == 1
    assert agg["dataset"]["thresholded_jaccard"] == pytest.approx(0.5)


def test_metrics_are_vectorised_over_images():
    counts = np.array([[6, 2, 4, 88], [0, 0, 0, 100]])
    m = metrics_from_counts(counts)
    assert m["dice"].shape == (2,)
    assert m["dice"][1] == 1.0


def test_shapes_must_match():
    with pytest.raises(ValueError):
        confusion_counts(np.zeros((3, 3), bool), np.zeros((3, 4), bool))


def test_bootstrap_intervals_contain_the_mean_and_shrink_with_more_images():
    from glassbox_audit.metrics import bootstrap_intervals

    rng = np.random.default_rng(0)

    def counts(n):
        tp = rng.integers(50, 100, n)
        return np.stack([tp, rng.integers(0, 30, n), rng.integers(0, 30, n), np.full(n, 500)], axis=1)

    small, large = counts(20), counts(400)
    ci_small, ci_large = bootstrap_intervals(small), bootstrap_intervals(large)
    mean = aggregate(large)["macro"]["dice"]
    assert ci_large["dice"][0] < mean < ci_large["dice"][1]
    assert np.diff(ci_large["dice"]) < np.diff(ci_small["dice"])
    assert set(ci_large) >= {"dice", "iou", "precision", "recall", "thresholded_jaccard"}


def test_bootstrap_interval_of_identical_images_is_a_point():
    from glassbox_audit.metrics import bootstrap_intervals

    ci = bootstrap_intervals(np.array([[6, 2, 4, 88]] * 10))
    assert ci["dice"][0] == pytest.approx(ci["dice"][1])


def test_threshold_counts_match_a_plain_threshold_at_every_threshold():
    from glassbox_audit.metrics import threshold_counts

    rng = np.random.default_rng(3)
    prob = rng.random((37, 41)).astype(np.float32)
    truth = rng.random((37, 41)) > 0.6
    thresholds = np.array([0.05, 0.3, 0.5, 0.77, 0.95])
    got = threshold_counts(prob, truth, thresholds)
    for k, t in enumerate(thresholds):
        assert got[k].tolist() == list(confusion_counts(truth, prob > np.float32(t)))


def test_operating_points_at_the_operating_threshold_equal_the_summary():
    from glassbox_audit.metrics import operating_points, threshold_counts

    rng = np.random.default_rng(4)
    probs = [rng.random((20, 20)).astype(np.float32) for _ in range(5)]
    truths = [rng.random((20, 20)) > 0.5 for _ in range(5)]
    thresholds = np.array([0.25, 0.5, 0.75])
    counts = np.stack([threshold_counts(p, t, thresholds) for p, t in zip(probs, truths)])
    row = operating_points(thresholds, counts)[1]
    plain = aggregate(np.stack([confusion_counts(t, p > 0.5) for p, t in zip(probs, truths)]))
    assert row["macro_dice"] == pytest.approx(plain["macro"]["dice"])
    assert row["micro_precision"] == pytest.approx(plain["micro"]["precision"])
    assert row["thresholded_jaccard"] == pytest.approx(plain["dataset"]["thresholded_jaccard"])
    # Recall can only fall as the threshold rises.
    rows = operating_points(thresholds, counts)
    assert rows[0]["micro_recall"] >= rows[1]["micro_recall"] >= rows[2]["micro_recall"]


def _metric_collections(path):
    """Literal lists, tuples, sets and dicts in ``path`` that name two or more registry metrics."""
    import ast

    from glassbox_audit.metrics import REGISTRY

    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        items = node.keys if isinstance(node, ast.Dict) else node.elts if isinstance(node, (ast.List, ast.Tuple, ast.Set)) else []
        names = [i.value for i in items if isinstance(i, ast.Constant) and i.value in REGISTRY]
        if len(names) >= 2:
            found.append(f"{path}:{node.lineno}: {names}")
    return found


def test_metric_names_are_listed_in_the_registry_only():
    # Every list of metrics (store columns, diff, acceptance, regression keys, dossier tables,
    # LLM vocabulary) is derived from metrics.REGISTRY, so adding or renaming a metric is one edit.
    # The LLM prompt's worked examples are questions with their answers, not a list of metrics.
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "glassbox_audit"
    allowed = {package / "metrics.py", package / "llm" / "prompt.py"}
    found = [f for p in sorted(package.rglob("*.py")) if p not in allowed for f in _metric_collections(p)]
    assert not found, "metric lists outside the registry:\n" + "\n".join(found)


def test_the_registry_derives_every_list_the_other_modules_use():
    from glassbox_audit.metrics import (ACCEPTANCE_METRICS, COMPARED_METRICS, DATASET_FIGURES, DEFAULT_ACCEPTANCE,
                                        IMAGE_COLUMNS, IMAGE_METRICS, REGISTRY, WATCHED_METRICS)

    assert IMAGE_METRICS == ("dice", "iou", "precision", "recall", "f1", "specificity", "pixel_accuracy")
    assert IMAGE_COLUMNS == IMAGE_METRICS + ("thresholded_jaccard",)
    assert set(COMPARED_METRICS) <= set(IMAGE_COLUMNS) and set(WATCHED_METRICS) <= set(COMPARED_METRICS)
    assert "n_images" in DATASET_FIGURES and "n_images" not in ACCEPTANCE_METRICS  # a count has no direction
    assert DEFAULT_ACCEPTANCE == ("dice >= 0.85", "thresholded_jaccard >= 0.75")
    assert all(REGISTRY[m].label for m in REGISTRY)
