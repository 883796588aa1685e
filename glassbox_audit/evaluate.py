"""Evaluation: stream the test partition through every model and count at native resolution.

For each batch the images are decoded once (in a background thread, while the previous
batch is on the CPU), every model predicts, and each probability map is resized back to
its ground truth's native size before thresholding, so the figures are those of the masks
the annotators drew, not of a resized copy.
"""

from __future__ import annotations

import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import cv2
import numpy as np
from tqdm import tqdm

from .config import EvalConfig
from .data import Dataset, iter_batches
from .metrics import (IMAGE_METRICS, aggregate, bootstrap_intervals, confusion_counts, image_mean, metrics_from_counts,
                      operating_points, per_image_scores, threshold_counts)
from .postprocess import postprocess

__all__ = ["BatchView", "ModelEvaluation", "ShardResult", "Thumbnail", "binarize", "evaluate_models",
           "evaluate_shard", "iter_views", "merge_shards", "n_batches", "predict_batches", "predict_thumbnails",
           "predictor", "select_batches", "shard_batches", "to_native"]

log = logging.getLogger(__name__)


@dataclass
class ModelEvaluation:
    name: str
    sha256: str
    ids: list[str]
    batch_index: np.ndarray  # (N,) batch of each image
    sizes: np.ndarray  # (N, 2) native height, width
    counts: np.ndarray  # (N, 4) tp, fp, fn, tn at native resolution
    threshold: float
    jaccard_threshold: float
    seconds: float = 0.0
    summary: dict[str, dict[str, float]] = field(default_factory=dict)
    # 95% bootstrap intervals (per-image resampling) of the macro metrics and the ISIC score
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    # Operating-point curves: counts (N, K, 4) of the raw probability map at K thresholds
    curve_thresholds: np.ndarray | None = None
    curve_counts: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.summary = aggregate(self.counts, self.jaccard_threshold)
        self.intervals = bootstrap_intervals(self.counts, self.jaccard_threshold)

    @property
    def per_image(self) -> dict[str, np.ndarray]:
        """Every per-image column (:data:`~glassbox_audit.metrics.IMAGE_COLUMNS`); NaN where undefined."""
        return per_image_scores(self.counts, self.jaccard_threshold)

    def operating_points(self) -> list[dict[str, float]]:
        """Metrics at each curve threshold (empty when no curve was computed)."""
        if self.curve_thresholds is None or self.curve_counts is None or not len(self.curve_counts):
            return []
        return operating_points(self.curve_thresholds, self.curve_counts, self.jaccard_threshold)

    def batches(self) -> list[dict[str, Any]]:
        """One row per batch: pooled counts, metrics from them (micro) and the mean Dice (macro)."""
        per_image = self.per_image
        rows = []
        for b in np.unique(self.batch_index):
            sel = self.batch_index == b
            pooled = self.counts[sel].sum(axis=0)
            m = metrics_from_counts(pooled)
            rows.append({
                "batch_index": int(b), "n_images": int(sel.sum()),
                "tp": int(pooled[0]), "fp": int(pooled[1]), "fn": int(pooled[2]), "tn": int(pooled[3]),
                **{k: float(m[k]) for k in IMAGE_METRICS},
                "mean_dice": image_mean(per_image["dice"][sel]),
                "mean_iou": image_mean(per_image["iou"][sel]),
            })
        return rows


_PREDICTORS: "weakref.WeakKeyDictionary[Any, dict[bool, Any]]" = weakref.WeakKeyDictionary()


def predictor(model, tta: bool = False) -> Any:
    """A compiled ``x -> sigmoid(logits)`` for batches of any size, made once per model so
    evaluation and the figure batches share its traces.

    ``tta``: the mean probability over the input and its horizontal, vertical and double
    flips, each flipped back; the four views go through the model as one batch.
    """
    fns = _PREDICTORS.setdefault(model, {})
    fn = fns.get(tta)
    if fn is None:
        import tensorflow as tf

        if tta:
            @tf.function(reduce_retracing=True)
            def fn(x):
                views = tf.concat([x, x[:, :, ::-1], x[:, ::-1], x[:, ::-1, ::-1]], axis=0)
                p = tf.split(tf.sigmoid(model(views, training=False)), 4, axis=0)
                return (p[0] + p[1][:, :, ::-1] + p[2][:, ::-1] + p[3][:, ::-1, ::-1]) / 4.0
        else:
            @tf.function(reduce_retracing=True)
            def fn(x):
                return tf.sigmoid(model(x, training=False))

        fns[tta] = fn
    return fn


def to_native(prob: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a network-size probability map back to the ground truth's size."""
    return cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR)


def curve_thresholds(cfg: EvalConfig) -> np.ndarray:
    """The thresholds of the operating-point curves, always including the operating one."""
    grid = np.linspace(0.05, 0.95, cfg.curve_points)
    return np.unique(np.round(np.append(grid, cfg.threshold), 4))


def binarize(prob: np.ndarray, cfg: EvalConfig) -> np.ndarray:
    """The predicted mask scored and drawn: threshold, then the configured clean-up."""
    return postprocess(prob > cfg.threshold, cfg.postprocess)


@dataclass
class ShardResult:
    """What one shard of the test partition gave: plain arrays, so a Dask worker can return it.

    ``counts[k]`` and ``curves[k]`` belong to the k-th model evaluated; rows are images in
    partition order within the shard.
    """

    batches: list[int]  # the batch indices evaluated, ascending
    ids: list[str]
    batch_index: np.ndarray  # (n,)
    sizes: np.ndarray  # (n, 2) native height, width
    counts: list[np.ndarray]  # per model, (n, 4) tp, fp, fn, tn
    curves: list[np.ndarray]  # per model, (n, K, 4) at curve_thresholds(cfg)
    seconds: list[float]  # per model: prediction and counting time


def n_batches(ds: Dataset, cfg: EvalConfig, partition: str = "test") -> int:
    """Batches of ``cfg.batch_size`` images in the partition (the last one may be short)."""
    return -(-len(ds.samples[partition]) // cfg.batch_size)


def shard_batches(total: int, n_shards: int) -> list[list[int]]:
    """Batch indices ``0..total-1`` split into at most ``n_shards`` contiguous, near-equal runs."""
    n_shards = max(1, min(n_shards, total))
    bounds = np.linspace(0, total, n_shards + 1).round().astype(int)
    return [list(range(a, b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def evaluate_shard(models: Iterable, ds: Dataset, input_size: int, cfg: EvalConfig,
                   batches: Iterable[int] | None = None, partition: str = "test",
                   progress: bool = True) -> ShardResult:
    """Evaluate ``models`` on some batches of a partition (``None``: all of them).

    The one evaluation loop: a local run is one shard holding every batch, a Dask run
    sends contiguous shards to workers and :func:`merge_shards` puts them back in order,
    so both give the same arrays.
    """
    models = list(models)
    fns = [predictor(m.model, cfg.tta) for m in models]
    only = None if batches is None else set(batches)
    samples = ds.samples[partition]
    n = len(samples) if only is None else sum(
        1 for i in range(len(samples)) if i // cfg.batch_size in only)
    ids: list[str] = []
    batch_of: list[int] = []
    sizes: list[tuple[int, int]] = []
    counts = [[] for _ in models]
    curves = [[] for _ in models]
    thresholds = curve_thresholds(cfg)
    seconds = [0.0] * len(models)
    seen: list[int] = []
    with tqdm(total=n, desc="evaluating", unit="img", disable=None if progress else True, leave=False) as bar:
        for batch in iter_batches(ds, partition, input_size, cfg.batch_size, only=only):
            seen.append(batch.index)
            ids.extend(batch.ids)
            batch_of.extend([batch.index] * len(batch.ids))
            sizes.extend(m.shape for m in batch.masks)
            for k, fn in enumerate(fns):
                t0 = time.perf_counter()
                probs = fn(batch.x).numpy()[..., 0]
                for prob, mask in zip(probs, batch.masks):
                    native = to_native(prob, *mask.shape)
                    counts[k].append(confusion_counts(mask, binarize(native, cfg)))
                    curves[k].append(threshold_counts(native, mask, thresholds))
                seconds[k] += time.perf_counter() - t0
            bar.update(len(batch.ids))
    return ShardResult(seen, ids, np.array(batch_of, dtype=int), np.array(sizes, dtype=int).reshape(-1, 2),
                       [np.array(c).reshape(-1, 4) for c in counts],
                       [np.array(c).reshape(-1, len(thresholds), 4) for c in curves], seconds)


def _joined(parts: list[np.ndarray], *shape: int, dtype=float) -> np.ndarray:
    """Shard arrays end to end as rows of ``shape`` (no shards: zero rows)."""
    return np.concatenate(parts).reshape(-1, *shape) if parts else np.zeros((0, *shape), dtype)


def merge_shards(models: Iterable, shards: Iterable[ShardResult], cfg: EvalConfig) -> list[ModelEvaluation]:
    """One :class:`ModelEvaluation` per model from shards in any order (sorted by batch here)."""
    models = list(models)
    shards = sorted(shards, key=lambda s: s.batches[0] if s.batches else -1)
    thresholds = curve_thresholds(cfg)
    ids = [i for s in shards for i in s.ids]
    batch_of = _joined([s.batch_index for s in shards], dtype=int)
    sizes = _joined([s.sizes for s in shards], 2, dtype=int)
    results = []
    for k, m in enumerate(models):
        counts = _joined([s.counts[k] for s in shards], 4)
        curves = _joined([s.curves[k] for s in shards], len(thresholds), 4)
        ev = ModelEvaluation(m.name, m.sha256, list(ids), batch_of, sizes, counts, cfg.threshold,
                             cfg.jaccard_threshold, sum(s.seconds[k] for s in shards),
                             curve_thresholds=thresholds, curve_counts=curves)
        s = ev.summary
        log.info("evaluate %s on %d images: Dice micro %.4f macro %.4f, IoU macro %.4f, "
                 "thresholded Jaccard %.4f", m.name, len(ids), s["micro"]["dice"], s["macro"]["dice"],
                 s["macro"]["iou"], s["dataset"]["thresholded_jaccard"])
        results.append(ev)
    return results


def evaluate_models(models: Iterable, ds: Dataset, input_size: int, cfg: EvalConfig,
                    partition: str = "test") -> list[ModelEvaluation]:
    """Evaluate ``models`` (objects with ``name``, ``sha256`` and a Keras ``model``) on a partition,
    in this process (``glassbox_audit.executor`` shards the same loop over Dask workers)."""
    models = list(models)
    return merge_shards(models, [evaluate_shard(models, ds, input_size, cfg, None, partition)], cfg)


def select_batches(evals: list[ModelEvaluation], cfg: EvalConfig) -> list[tuple[int, str]]:
    """The batches the dossier draws, each with the reason it was chosen.

    The configured ones, or by ``cfg.auto_select`` on the reference variant's batch mean
    Dice: ``mean`` (closest to the test-set mean Dice, as the seed's batch 78), ``worst``,
    ``best``. A batch chosen for two reasons appears once, with both.
    """
    n_batches = int(evals[0].batch_index.max()) + 1 if len(evals[0].batch_index) else 0
    if cfg.selected_batches:
        bad = [b for b in cfg.selected_batches if b >= n_batches]
        if bad:
            from .errors import ConfigError
            raise ConfigError(f"config key 'evaluate.selected_batches': batch {bad[0]} does not exist "
                              f"(the test set has {n_batches} batches, 0..{n_batches - 1})")
        return [(b, "selected in the configuration (evaluate.selected_batches)") for b in cfg.selected_batches]
    names = [e.name for e in evals]
    ref_name = cfg.reference_variant or ("balanced" if "balanced" in names else names[0])
    ref = evals[names.index(ref_name)]
    target = ref.summary["macro"]["dice"]
    rows = ref.batches()
    picks = {
        "mean": min(rows, key=lambda r: (abs(r["mean_dice"] - target), r["batch_index"])),
        "worst": min(rows, key=lambda r: (r["mean_dice"], r["batch_index"])),
        "best": max(rows, key=lambda r: (r["mean_dice"], -r["batch_index"])),
    }
    why = {
        "mean": f"mean Dice closest to the test-set mean Dice of {ref_name} ({target:.4f})",
        "worst": f"lowest mean Dice of {ref_name}",
        "best": f"highest mean Dice of {ref_name}",
    }
    chosen: dict[int, list[str]] = {}
    for kind in cfg.auto_select:
        r = picks[kind]
        chosen.setdefault(r["batch_index"], []).append(f"{kind}: {why[kind]} ({r['mean_dice']:.4f})")
    return [(b, "; ".join(reasons)) for b, reasons in chosen.items()]


@dataclass
class BatchView:
    """Everything needed to draw one batch: native images, masks and per-model probabilities."""

    index: int
    ids: list[str]
    images: list[np.ndarray]
    masks: list[np.ndarray]
    probs: dict[str, list[np.ndarray]]  # model name -> native-size probability maps
    x: np.ndarray | None = None  # the network inputs (N, S, S, 3), for the explanations
    preds: dict[str, list[np.ndarray]] | None = None  # the masks as scored (threshold + clean-up)


def iter_views(models: Iterable, ds: Dataset, input_size: int, cfg: EvalConfig,
               indices: Iterable[int], partition: str = "test") -> Iterator[BatchView]:
    """Re-run the given batches only, one at a time, keeping native images and probability maps."""
    models = list(models)
    fns = {m.name: predictor(m.model, cfg.tta) for m in models}
    wanted = set(indices)
    for batch in iter_batches(ds, partition, input_size, cfg.batch_size, keep_images=True, only=wanted):
        probs = {}
        for name, fn in fns.items():
            p = fn(batch.x).numpy()[..., 0]
            probs[name] = [to_native(pi, *mask.shape) for pi, mask in zip(p, batch.masks)]
        preds = {name: [binarize(p, cfg) for p in ps] for name, ps in probs.items()}
        yield BatchView(batch.index, batch.ids, batch.images, batch.masks, probs, batch.x, preds)


def predict_batches(models: Iterable, ds: Dataset, input_size: int, cfg: EvalConfig,
                    indices: list[int], partition: str = "test") -> list[BatchView]:
    """Re-run the selected batches only, keeping native images and probability maps."""
    return list(iter_views(models, ds, input_size, cfg, indices, partition))


@dataclass
class Thumbnail:
    """One image of the failure gallery, shrunk for the page: image, truth, each model's mask."""

    image_id: str
    image: np.ndarray
    mask: np.ndarray
    preds: dict[str, np.ndarray]


def predict_thumbnails(models: Iterable, ds: Dataset, input_size: int, cfg: EvalConfig, ids: list[str],
                       max_side: int = 320, partition: str = "test") -> list[Thumbnail]:
    """The named images (e.g. every failure) with each model's scored mask, in ``ids`` order.

    Only the batches holding them are read, one batch at a time, and each image is shrunk to
    ``max_side`` at once, so memory stays bounded however many images fail.
    """
    order = {image_id: k for k, image_id in enumerate(ids)}
    samples = ds.samples[partition]
    batches = {i // cfg.batch_size for i, s in enumerate(samples) if s.id in order}
    out: list[Thumbnail] = []
    for view in iter_views(models, ds, input_size, cfg, batches, partition):
        for j, image_id in enumerate(view.ids):
            if image_id not in order:
                continue
            h, w = view.masks[j].shape
            f = min(1.0, max_side / max(h, w))
            size = (max(1, round(w * f)), max(1, round(h * f)))

            def shrink(a: np.ndarray, nearest: bool = True) -> np.ndarray:
                if f >= 1.0:
                    return a
                return cv2.resize(a, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)

            out.append(Thumbnail(image_id, shrink(view.images[j], nearest=False),
                                 shrink(view.masks[j].astype(np.uint8)).astype(bool),
                                 {n: shrink(p[j].astype(np.uint8)).astype(bool) for n, p in view.preds.items()}))
    return sorted(out, key=lambda t: order[t.image_id])
