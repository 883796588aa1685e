"""Segmentation metrics from confusion counts: pure numpy, vectorised over images.

Two averages are kept apart everywhere, and named:

* **micro** (pixel-pooled): add the TP/FP/FN/TN counts of all images, then compute the
  metric once. Large lesions weigh more.
* **macro** (image-mean): compute the metric per image, then take the mean. Every image
  weighs the same; the ISIC challenge ranks by this kind of mean.

Empty masks: a ratio whose denominator is zero scores **1.0 when the image has no errors at
all** (nothing to find and nothing predicted) **and 0.0 otherwise**. So an empty prediction
on an empty ground truth scores 1 on every metric, and an empty prediction on an image with a
lesion scores 0 on Dice, IoU, precision and recall.

ISIC thresholded Jaccard: the per-image Jaccard (IoU), with values below 0.65 counted as 0,
averaged over images (ImageMarkup/isic-challenge-scoring).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "METRICS",
    "aggregate",
    "bootstrap_intervals",
    "operating_points",
    "threshold_counts",
    "confusion_counts",
    "metrics_from_counts",
    "thresholded_jaccard",
]

METRICS = ("dice", "iou", "precision", "recall", "f1", "pixel_accuracy", "specificity")


def confusion_counts(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Return ``[tp, fp, fn, tn]`` (int64) for two bool masks of the same shape."""
    if truth.shape != pred.shape:
        raise ValueError(f"mask shapes differ: {truth.shape} vs {pred.shape}")
    truth, pred = truth.astype(bool, copy=False), pred.astype(bool, copy=False)
    tp = np.count_nonzero(truth & pred)
    fp = np.count_nonzero(pred) - tp
    fn = np.count_nonzero(truth) - tp
    tn = truth.size - tp - fp - fn
    return np.array([tp, fp, fn, tn], dtype=np.int64)


def _ratio(num: np.ndarray, den: np.ndarray, flawless: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        value = num / den
    return np.where(den > 0, value, np.where(flawless, 1.0, 0.0))


def metrics_from_counts(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics from counts ``[..., 4]`` (tp, fp, fn, tn); returns arrays of shape ``[...]``."""
    c = np.asarray(counts, dtype=np.float64)
    tp, fp, fn, tn = c[..., 0], c[..., 1], c[..., 2], c[..., 3]
    flawless = (fp == 0) & (fn == 0)
    dice = _ratio(2 * tp, 2 * tp + fp + fn, flawless)
    return {
        "dice": dice,
        "iou": _ratio(tp, tp + fp + fn, flawless),
        "precision": _ratio(tp, tp + fp, flawless),
        "recall": _ratio(tp, tp + fn, flawless),
        "f1": dice,  # pixel-level F1 of a binary mask is the Dice coefficient
        "pixel_accuracy": _ratio(tp + tn, tp + fp + fn + tn, flawless),
        "specificity": _ratio(tn, tn + fp, flawless),
    }


def thresholded_jaccard(iou: np.ndarray, threshold: float = 0.65) -> float:
    """ISIC 2018 score: mean per-image Jaccard with values below ``threshold`` counted as 0."""
    iou = np.asarray(iou, dtype=np.float64)
    if iou.size == 0:
        return float("nan")
    return float(np.mean(np.where(iou < threshold, 0.0, iou)))


def aggregate(counts: np.ndarray, jaccard_threshold: float = 0.65) -> dict[str, dict[str, float]]:
    """Dataset figures from per-image counts ``(N, 4)``.

    Returns ``{"micro": {...}, "macro": {...}, "dataset": {...}}`` where ``dataset`` holds
    figures that have one natural averaging: the thresholded Jaccard, the false-positive and
    false-negative shares of all pixels, the lesion detection rate (share of images with a
    lesion where the prediction overlaps it) and the count of Jaccard failures.
    """
    counts = np.asarray(counts, dtype=np.int64).reshape(-1, 4)
    per_image = metrics_from_counts(counts)
    pooled = metrics_from_counts(counts.sum(axis=0))
    total = counts.sum()
    has_lesion = (counts[:, 0] + counts[:, 2]) > 0
    n = len(counts)
    dataset = {
        "thresholded_jaccard": thresholded_jaccard(per_image["iou"], jaccard_threshold),
        "fp_share": float(counts[:, 1].sum() / total) if total else 0.0,
        "fn_share": float(counts[:, 2].sum() / total) if total else 0.0,
        "lesion_detection_rate": float(np.mean(counts[has_lesion, 0] > 0)) if has_lesion.any() else float("nan"),
        "jaccard_failures": float(np.count_nonzero(per_image["iou"] < jaccard_threshold)),
        "n_images": float(n),
    }
    return {
        "micro": {k: float(v) for k, v in pooled.items()},
        "macro": {k: float(np.mean(v)) if n else float("nan") for k, v in per_image.items()},
        "dataset": dataset,
    }


def bootstrap_intervals(counts: np.ndarray, jaccard_threshold: float = 0.65, n_boot: int = 1000,
                        seed: int = 0, level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of the macro (image-mean) metrics and the thresholded
    Jaccard, resampling images with replacement.

    All resamples are one ``(n_boot, N)`` index matrix, so each metric's interval is a
    single vectorised mean.
    """
    counts = np.asarray(counts, dtype=np.int64).reshape(-1, 4)
    if len(counts) == 0:
        return {}
    per_image = metrics_from_counts(counts)
    per_image["thresholded_jaccard"] = np.where(per_image["iou"] < jaccard_threshold, 0.0, per_image["iou"])
    idx = np.random.default_rng(seed).integers(0, len(counts), size=(n_boot, len(counts)))
    tail = 100 * (1 - level) / 2
    out = {}
    for name, values in per_image.items():
        low, high = np.percentile(values[idx].mean(axis=1), [tail, 100 - tail])
        out[name] = (float(low), float(high))
    return out


def threshold_counts(prob: np.ndarray, truth: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Confusion counts ``(K, 4)`` of ``prob > t`` against ``truth`` for every threshold ``t``.

    One sort per class instead of one comparison per threshold: ``searchsorted`` gives, for
    all thresholds at once, how many foreground and background pixels lie at or below each.
    """
    p = np.asarray(prob, dtype=np.float32).ravel()
    t = np.asarray(truth).ravel().astype(bool)
    fg = np.sort(p[t])
    bg = np.sort(p[~t])
    thr = np.asarray(thresholds, dtype=np.float32)
    tp = fg.size - np.searchsorted(fg, thr, side="right")
    fp = bg.size - np.searchsorted(bg, thr, side="right")
    return np.stack([tp, fp, fg.size - tp, bg.size - fp], axis=1).astype(np.int64)


def operating_points(thresholds: np.ndarray, counts: np.ndarray, jaccard_threshold: float = 0.65
                     ) -> list[dict[str, float]]:
    """One row per threshold from per-image counts ``(N, K, 4)``: micro precision, recall,
    Dice and IoU (pooled pixels), macro Dice and IoU (image means) and the ISIC score."""
    counts = np.asarray(counts, dtype=np.int64)
    rows = []
    for k, thr in enumerate(np.asarray(thresholds, dtype=np.float64)):
        per_image = metrics_from_counts(counts[:, k])
        pooled = metrics_from_counts(counts[:, k].sum(axis=0))
        rows.append({
            "threshold": round(float(thr), 4),
            "micro_precision": float(pooled["precision"]), "micro_recall": float(pooled["recall"]),
            "micro_dice": float(pooled["dice"]), "micro_iou": float(pooled["iou"]),
            "macro_dice": float(per_image["dice"].mean()), "macro_iou": float(per_image["iou"].mean()),
            "thresholded_jaccard": thresholded_jaccard(per_image["iou"], jaccard_threshold),
        })
    return rows
