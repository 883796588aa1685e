"""Segmentation metrics: the one registry of metric names, and their maths from confusion counts.

Every module that names a metric takes the name, label, averaging and direction from
:data:`REGISTRY` here: the store's columns, the dossier's labels, the diff, the acceptance
criteria, the regression keys and the question reader's vocabulary.

Two averages are kept apart everywhere, and named:

* **micro** (pixel-pooled): add the TP/FP/FN/TN counts of all images, then compute the
  metric once. Large lesions weigh more.
* **macro** (image-mean): compute the metric per image, then take the mean. Every image
  weighs the same; the ISIC challenge ranks by this kind of mean.

Zero denominators (:data:`UNDEFINED_RULES`), decided per metric as MONAI does for empty masks:

* **Dice, IoU** (and F1): an empty prediction on an empty ground truth scores **1** (nothing to
  find, nothing predicted: a perfect answer); any error on an empty truth makes the
  denominator positive, so the usual ratio applies.
* **Recall** is undefined on an image without lesion pixels, **precision** on an image
  without predicted pixels, **specificity** on an image without background pixels. An
  undefined value is stored as NULL, left out of the image mean, and counted: the count
  stands beside each macro figure.
* **Pixel accuracy** always has a denominator (the image's pixels).

ISIC thresholded Jaccard: the per-image Jaccard (IoU), with values below 0.65 counted as 0,
averaged over images (ImageMarkup/isic-challenge-scoring).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ACCEPTANCE_METRICS",
    "COMPARED_METRICS",
    "DATASET_FIGURES",
    "DEFAULT_ACCEPTANCE",
    "HEADLINE_METRICS",
    "IMAGE_COLUMNS",
    "IMAGE_METRICS",
    "METRIC_RULES_VERSION",
    "REGISTRY",
    "REVIEW_METRICS",
    "UNDEFINED_RULES",
    "UNSUPPORTED_METRICS",
    "WATCHED_METRICS",
    "Metric",
    "aggregate",
    "bootstrap_intervals",
    "confusion_counts",
    "error_shares",
    "image_mean",
    "label",
    "metrics_from_counts",
    "operating_points",
    "per_image_scores",
    "threshold_counts",
    "thresholded_jaccard",
]


@dataclass(frozen=True)
class Metric:
    """One metric: its stored name and everything other modules need to say it right."""

    name: str  # the one spelling: store columns, config keys, diff rows, LLM intents
    label: str  # as the dossier titles it
    phrase: str  # as a sentence says it ("the Dice of model 1")
    # "image": a value per image (stored per image and per batch; micro and macro figures);
    # "dataset": one figure for the whole test set.
    level: str
    higher_is_better: bool | None  # None: a count, no direction
    synonyms: tuple[str, ...] = ()  # how people write it in a question (lower case)
    same_as: str | None = None  # another name of the same number (F1 is Dice for a binary mask)
    compared: bool = False  # compared image by image between versions (diff, regressions)
    watched: bool = False  # a regression key by default (evaluate.regression_metrics)
    accept_at: float | None = None  # default acceptance criterion: at least this (report.acceptance)
    headline: bool = False  # one of the few figures a one-line summary shows (fleet table, CLI)
    undefined_when: str = ""  # the per-image case without a denominator, if any
    reviewed: bool = False  # a column of the review workstation's image table (per image, per variant)
    short: str = ""  # a table header where the label is too long


_ENTRIES = (
    Metric("dice", "Dice", "Dice", "image", True,
           ("dice coefficient", "dice score", "dice", "dsc", "sorensen"), compared=True, watched=True,
           accept_at=0.85, headline=True, reviewed=True),
    Metric("iou", "IoU (Jaccard)", "IoU", "image", True,
           ("intersection over union", "jaccard index", "jaccard", "iou"), compared=True, watched=True,
           headline=True, reviewed=True, short="IoU"),
    Metric("precision", "Precision", "precision", "image", True,
           ("positive predictive value", "precision", "ppv", "how precise"), compared=True,
           undefined_when="nothing predicted (TP + FP = 0)"),
    Metric("recall", "Recall (sensitivity)", "recall", "image", True,
           ("true positive rate", "sensitivity", "recall", "tpr", "hit rate"), compared=True,
           undefined_when="no lesion pixels in the ground truth (TP + FN = 0)"),
    Metric("f1", "F1", "F1", "image", True, ("f1 score", "f1", "f score"), same_as="dice"),
    Metric("specificity", "Specificity", "specificity", "image", True,
           ("true negative rate", "specificity", "tnr"), compared=True,
           undefined_when="no background pixels in the ground truth (TN + FP = 0)"),
    Metric("pixel_accuracy", "Pixel accuracy", "pixel accuracy", "image", True,
           ("pixel accuracy", "pixelwise accuracy", "accuracy")),
    Metric("thresholded_jaccard", "ISIC thresholded Jaccard", "ISIC thresholded Jaccard", "dataset", True,
           ("thresholded jaccard", "isic thresholded jaccard", "isic score", "isic jaccard", "thresholded iou"),
           compared=True, accept_at=0.75, headline=True),
    Metric("lesion_detection_rate", "Lesion detection rate", "lesion detection rate", "dataset", True,
           ("lesion detection rate", "detection rate", "lesions detected")),
    Metric("fp_share", "False-positive share of pixels", "false-positive share of pixels", "dataset", False,
           ("false positive share", "share of false positives", "false positive pixels"), reviewed=True,
           short="FP share"),
    Metric("fn_share", "False-negative share of pixels", "false-negative share of pixels", "dataset", False,
           ("false negative share", "share of false negatives", "false negative pixels"), reviewed=True,
           short="FN share"),
    Metric("jaccard_failures", "Images with Jaccard < threshold", "Jaccard failures (images)", "dataset", False,
           ("jaccard failures", "failed images", "failures", "failed the jaccard threshold",
            "below the jaccard threshold", "images failed")),
    Metric("n_images", "Images", "number of images", "dataset", None, ("number of images", "image count")),
)

REGISTRY: dict[str, Metric] = {m.name: m for m in _ENTRIES}

# Metrics with a value per image, in the order tables show them (and the question reader lists
# them: its small model reads this order best).
IMAGE_METRICS = tuple(m.name for m in _ENTRIES if m.level == "image")
# The columns of a per-image row: every image metric, and the image's ISIC score (its Jaccard,
# or 0 below the threshold), which the dataset figure averages.
IMAGE_COLUMNS = IMAGE_METRICS + ("thresholded_jaccard",)
# Figures with one natural averaging, for the whole test set only.
DATASET_FIGURES = tuple(m.name for m in _ENTRIES if m.level == "dataset")
# Compared image by image between versions (the diff, the regression keys).
COMPARED_METRICS = tuple(m.name for m in _ENTRIES if m.compared)
# What an acceptance criterion may name: a macro metric, or a dataset figure with a direction.
ACCEPTANCE_METRICS = tuple(m.name for m in _ENTRIES if m.higher_is_better is not None)
UNDEFINED_RULES = {m.name: m.undefined_when for m in _ENTRIES if m.undefined_when}
WATCHED_METRICS = tuple(m.name for m in _ENTRIES if m.watched)
HEADLINE_METRICS = tuple(m.name for m in _ENTRIES if m.headline)
# The review workstation's image table: per image, stored (Dice, IoU) or from the counts (error_shares).
REVIEW_METRICS = tuple(m.name for m in _ENTRIES if m.reviewed)
DEFAULT_ACCEPTANCE = tuple(f"{m.name} >= {m.accept_at}" for m in _ENTRIES if m.accept_at is not None)

# Metrics people ask about that no run stores: a question naming one is "not found", never
# read as another metric.
UNSUPPORTED_METRICS: dict[str, tuple[str, ...]] = {
    "Hausdorff distance": ("hausdorff distance", "hausdorff", "hd95", "hd 95"),
    "surface distance": ("average surface distance", "surface distance", "assd", "surface dice", "nsd"),
    "AUC": ("area under the curve", "roc auc", "auroc", "auc", "roc"),
    "average precision": ("average precision", "mean average precision"),
    "volume similarity": ("volume similarity", "volumetric similarity", "relative volume difference"),
    "Cohen's kappa": ("cohen s kappa", "kappa"),
    "Matthews correlation": ("matthews correlation", "mcc"),
    "balanced accuracy": ("balanced accuracy",),
    "false positive rate": ("false positive rate", "fpr", "fall out"),
    "false negative rate": ("false negative rate", "fnr", "miss rate"),
    "negative predictive value": ("negative predictive value", "npv"),
}

# Bumped when a definition changes what a stored figure means; each version's database records
# the rules it was computed under, and the diff names a change of rules.
METRIC_RULES_VERSION = "2"
METRIC_RULES = {
    "1": "every zero denominator scored 1 on a flawless image, 0 otherwise",
    "2": "Dice and IoU: empty/empty = 1; recall, precision and specificity undefined without their "
         "denominator (left out of image means and counted)",
}


def label(name: str) -> str:
    """The dossier label of a metric name (the name itself when it is not a metric)."""
    return REGISTRY[name].label if name in REGISTRY else name


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


def _ratio(num: np.ndarray, den: np.ndarray, empty: float) -> np.ndarray:
    """``num / den``, and ``empty`` where the denominator is zero (NaN: undefined)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        value = num / den
    return np.where(den > 0, value, empty)


def metrics_from_counts(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics from counts ``[..., 4]`` (tp, fp, fn, tn); returns arrays of shape ``[...]``.

    Undefined values (see the module's rules) are NaN.
    """
    c = np.asarray(counts, dtype=np.float64)
    tp, fp, fn, tn = c[..., 0], c[..., 1], c[..., 2], c[..., 3]
    # The denominator of Dice and IoU is zero only when truth and prediction are both empty.
    dice = _ratio(2 * tp, 2 * tp + fp + fn, 1.0)
    return {
        "dice": dice,
        "iou": _ratio(tp, tp + fp + fn, 1.0),
        "precision": _ratio(tp, tp + fp, np.nan),
        "recall": _ratio(tp, tp + fn, np.nan),
        "f1": dice,  # pixel-level F1 of a binary mask is the Dice coefficient
        "pixel_accuracy": _ratio(tp + tn, tp + fp + fn + tn, np.nan),
        "specificity": _ratio(tn, tn + fp, np.nan),
    }


def error_shares(counts: np.ndarray) -> dict[str, np.ndarray]:
    """False-positive and false-negative pixels as shares of all pixels, from counts ``[..., 4]``.

    With the Dice, they say where an image's errors are: over-segmentation (FP) or missed lesion
    (FN). An image (or a pool of images) without pixels has no errors: 0.
    """
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum(axis=-1)
    return {"fp_share": _ratio(c[..., 1], total, 0.0), "fn_share": _ratio(c[..., 2], total, 0.0)}


def per_image_scores(counts: np.ndarray, jaccard_threshold: float = 0.65) -> dict[str, np.ndarray]:
    """Every column of :data:`IMAGE_COLUMNS` for per-image counts ``(N, 4)``."""
    scores = metrics_from_counts(counts)
    scores["thresholded_jaccard"] = np.where(scores["iou"] < jaccard_threshold, 0.0, scores["iou"])
    return scores


def image_mean(values: np.ndarray) -> float:
    """Mean over images of the defined values; NaN when none is defined."""
    values = np.asarray(values, dtype=np.float64)
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


def thresholded_jaccard(iou: np.ndarray, threshold: float = 0.65) -> float:
    """ISIC 2018 score: mean per-image Jaccard with values below ``threshold`` counted as 0."""
    iou = np.asarray(iou, dtype=np.float64)
    if iou.size == 0:
        return float("nan")
    return float(np.mean(np.where(iou < threshold, 0.0, iou)))


def aggregate(counts: np.ndarray, jaccard_threshold: float = 0.65) -> dict[str, dict[str, float]]:
    """Dataset figures from per-image counts ``(N, 4)``.

    Returns ``{"micro": {...}, "macro": {...}, "dataset": {...}, "undefined": {...}}`` where
    ``dataset`` holds figures that have one natural averaging: the thresholded Jaccard, the
    false-positive and false-negative shares of all pixels, the lesion detection rate (share
    of images with a lesion where the prediction overlaps it) and the count of Jaccard
    failures; ``undefined`` counts, per image metric, the images its macro figure leaves out.
    """
    counts = np.asarray(counts, dtype=np.int64).reshape(-1, 4)
    per_image = metrics_from_counts(counts)
    pooled = metrics_from_counts(counts.sum(axis=0))
    has_lesion = (counts[:, 0] + counts[:, 2]) > 0
    n = len(counts)
    shares = error_shares(counts.sum(axis=0))
    dataset = {
        "thresholded_jaccard": thresholded_jaccard(per_image["iou"], jaccard_threshold),
        "fp_share": float(shares["fp_share"]),
        "fn_share": float(shares["fn_share"]),
        "lesion_detection_rate": float(np.mean(counts[has_lesion, 0] > 0)) if has_lesion.any() else float("nan"),
        "jaccard_failures": float(np.count_nonzero(per_image["iou"] < jaccard_threshold)),
        "n_images": float(n),
    }
    return {
        "micro": {k: float(v) for k, v in pooled.items()},
        "macro": {k: image_mean(v) for k, v in per_image.items()},
        "dataset": dataset,
        "undefined": {k: int(np.count_nonzero(np.isnan(v))) for k, v in per_image.items()},
    }


def bootstrap_intervals(counts: np.ndarray, jaccard_threshold: float = 0.65, n_boot: int = 1000,
                        seed: int = 0, level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of the macro (image-mean) metrics and the thresholded
    Jaccard, resampling images with replacement.

    All resamples are one ``(n_boot, N)`` index matrix, so each metric's interval is a
    single vectorised mean (over the defined values of each resample). A metric defined on
    no image has no interval.
    """
    counts = np.asarray(counts, dtype=np.int64).reshape(-1, 4)
    if len(counts) == 0:
        return {}
    per_image = per_image_scores(counts, jaccard_threshold)
    idx = np.random.default_rng(seed).integers(0, len(counts), size=(n_boot, len(counts)))
    tail = 100 * (1 - level) / 2
    out = {}
    for name, values in per_image.items():
        if np.isnan(values).all():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a resample of only undefined images: NaN, dropped below
            means = np.nanmean(values[idx], axis=1)
        low, high = np.percentile(means[~np.isnan(means)], [tail, 100 - tail])
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
            "macro_dice": image_mean(per_image["dice"]), "macro_iou": image_mean(per_image["iou"]),
            "thresholded_jaccard": thresholded_jaccard(per_image["iou"], jaccard_threshold),
        })
    return rows
