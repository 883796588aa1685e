"""Checks of the explanations: deletion / insertion curves and model-parameter randomisation.

**Deletion / insertion** (Petsiuk et al., 2018): pixels are ranked by a map, most important
first; the deletion curve replaces the top ``k / K`` of them by a baseline image (by default
each image's mean colour) and records
the region-mean lesion probability, the insertion curve starts from the baseline and puts
the original pixels back in the same order. A faithful map makes the deletion curve fall
fast (low area under the curve) and the insertion curve rise fast (high area). A seeded
random ranking is the reference to beat. All perturbed images of all methods go through the
model as rows of one chunked, compiled prediction; the unperturbed and fully-perturbed ends,
shared by every method, are predicted once.

**Randomisation** (Adebayo et al., 2018): the model's weights are re-initialised block by
block from the output backwards (``logits``, then ``dec1``, ``att1``, ..., ``enc1``) and the
maps recomputed on the same target pixels. Maps that explain what the model learned must
change: their Spearman rank correlation and SSIM with the original maps drop towards 0.
Both are computed on the map magnitudes (``|map|``; SSIM on each scaled by its maximum).

Every result is a dataclass with ``to_rows()`` (one flat dict per image) and
``summary_rows()`` (one per method, and per cascade depth), the same keys for every method
and model, ready for a SQLite table; :data:`READING` has one line per check on how to read it.

Example::

    curves = perturbation_curves(model, images, {"saliency": sal, "gradcam": cam})
    rows = [r for c in curves for r in c.summary_rows()]
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import keras
import numpy as np
from scipy.special import expit
from skimage.metrics import structural_similarity

from .engine import chunked, logits_function, predict_logits
from .maths import baseline_images, curve_auc, pixel_ranks, spearman_rows
from .target import TargetRegion, target_region
from .views import folded_view, logits_view

__all__ = [
    "READING",
    "PerturbationCurves",
    "RandomisationResult",
    "cascade_blocks",
    "map_similarity",
    "perturbation_curves",
    "randomisation_check",
    "randomised_copy",
]

READING: dict[str, str] = {
    "deletion": ("Deletion: lesion probability over the target region as the pixels a map ranks highest are "
                 "replaced by the baseline first; lower area under the curve = more faithful. Compare with 'random'."),
    "insertion": ("Insertion: the same probability as the highest-ranked pixels are restored into the baseline "
                  "image first; higher area under the curve = more faithful. Compare with 'random'."),
    "randomisation": ("Randomisation: similarity of each map with the map of a copy whose weights are "
                      "re-initialised from the output backwards; a map that reflects what the model learned drops "
                      "towards 0 (Spearman, SSIM); values near 1 mean it mostly shows the image, not the model."),
    "completeness": ("Completeness: integrated-gradients attributions should sum to F(image) - F(baseline); "
                     "the relative error should be a few percent at most, else raise the number of steps."),
}


# --------------------------------------------------------------------------- deletion / insertion


@dataclass(frozen=True)
class PerturbationCurves:
    """One method's deletion or insertion curves on a batch.

    Attributes
    ----------
    check : str
        ``deletion`` or ``insertion``.
    method, model : str
        Map key (``saliency``, ``layer_gradcam/encoder``, ``random``) and model name.
    fractions : numpy.ndarray
        ``(K + 1,)`` share of pixels perturbed, ``0 .. 1``.
    curves : numpy.ndarray
        ``(N, K + 1)`` region-mean lesion probability.
    auc : numpy.ndarray
        ``(N,)`` area under each curve.
    """

    check: str
    method: str
    model: str
    fractions: np.ndarray
    curves: np.ndarray
    auc: np.ndarray

    def to_rows(self) -> list[dict]:
        """One dict per image: check, model, method, image, auc, start, end."""
        return [{"check": self.check, "model": self.model, "method": self.method, "image": i,
                 "auc": float(self.auc[i]), "start": float(self.curves[i, 0]), "end": float(self.curves[i, -1])}
                for i in range(len(self.auc))]

    def summary_rows(self) -> list[dict]:
        """One dict: check, model, method, n_images, auc_mean, auc_std."""
        return [{"check": self.check, "model": self.model, "method": self.method, "n_images": len(self.auc),
                 "auc_mean": float(np.mean(self.auc)) if len(self.auc) else float("nan"),
                 "auc_std": float(np.std(self.auc)) if len(self.auc) else float("nan")}]


def perturbation_curves(model: keras.Model, images: np.ndarray, maps: Mapping[str, np.ndarray],
                        target: str | np.ndarray | TargetRegion = "predicted", masks: np.ndarray | None = None,
                        steps: int = 20, baseline: str = "mean", blur_sigma: float = 0.05, seed: int = 0,
                        random_reference: bool = True, model_name: str = "",
                        batch_size: int = 16) -> list[PerturbationCurves]:
    """Deletion and insertion curves of every map, for one model on one batch.

    Parameters
    ----------
    model : keras.Model
        The model the maps explain.
    images : numpy.ndarray
        ``(N, H, W, C)`` float32 in [0, 1].
    maps : dict of str to numpy.ndarray
        Method name to ``(N, H, W)`` maps; higher = more important.
    target, masks
        The scored region (see :func:`~glassbox_audit.xai.target.target_region`); use the
        region the maps were computed for.
    steps : int, default 20
        ``K``: curve points are at ``0, 1/K, ..., 1`` of the pixels.
    baseline : str, default "mean"
        What perturbed pixels become: ``mean`` (the image's mean colour), ``blurred``,
        ``black`` or ``uniform`` (see :func:`~glassbox_audit.xai.maths.baseline_images`).
    blur_sigma : float, default 0.05
        Blur sigma as a fraction of the image side.
    seed : int, default 0
        Seeds the random reference ranking and a ``uniform`` baseline.
    random_reference : bool, default True
        Add the curves of a random ranking under the method name ``random``.
    model_name : str, default ""
        Stored in the results.
    batch_size : int, default 16
        Perturbed images per model call.

    Returns
    -------
    list of PerturbationCurves
        Deletion then insertion for each method, in ``maps`` order.
    """
    images = np.ascontiguousarray(images, dtype=np.float32)
    n, h, w = images.shape[:3]
    maps = dict(maps)
    if random_reference:
        maps["random"] = np.random.default_rng([seed, 7]).random((n, h, w), dtype=np.float32)
    for name, m in maps.items():
        if np.shape(m) != (n, h, w):
            raise ValueError(f"map {name!r} has shape {np.shape(m)}, expected {(n, h, w)}")
    region = target_region(model, images, target, masks, batch_size)
    base = baseline_images(images, baseline, seed, blur_sigma)
    # The perturbed images are most of an audit's model passes, so they run on the copy with the
    # batch normalisations folded into the convolutions: the same function at inference, 1.25x
    # faster on the CPU here. Forward passes only: a region-mean probability moves by float32
    # rounding (1e-6), where gradient maps through the folded copy can differ by 1e-2 of their
    # scale (ReLUs near zero flip), so the methods fold only with xai.fold_batchnorm.
    view = folded_view(model)
    fn = logits_function(view)
    names = list(maps)
    ranks = pixel_ranks(np.stack([maps[k] for k in names])) if names else np.zeros((0, n, h, w), np.int32)
    counts = np.round(np.linspace(0, h * w, steps + 1)).astype(np.int64)

    def score(logits: np.ndarray, image: np.ndarray) -> np.ndarray:
        return (expit(logits.astype(np.float64)) * region.weights[image]).sum(axis=(1, 2))

    ends = score(predict_logits(view, np.concatenate([images, base]), batch_size), np.tile(np.arange(n), 2))
    original, perturbed = ends[:n], ends[n:]

    # Interior points only: (method, image, step 1..K-1, deletion/insertion), method-major.
    grid = np.indices((len(names), n, steps - 1, 2)).reshape(4, -1)
    method_i, image_i, step_i, insert_i = grid[0], grid[1], grid[2] + 1, grid[3].astype(bool)

    def call(rows: slice) -> np.ndarray:
        im = image_i[rows]
        chosen = (ranks[method_i[rows], im] < counts[step_i[rows]][:, None, None])[..., None]
        # Deletion swaps the chosen pixels to the baseline; insertion keeps only them.
        keep_original = chosen == insert_i[rows][:, None, None, None]
        return score(fn(np.where(keep_original, images[im], base[im])).numpy(), im)

    parts = chunked(len(image_i), batch_size, call)
    inner = (np.concatenate(parts) if parts else np.zeros(0)).reshape(len(names), n, steps - 1, 2)
    fractions = counts / float(h * w)
    results = []
    for k, name in enumerate(names):
        for check, first, last, col in (("deletion", original, perturbed, 0), ("insertion", perturbed, original, 1)):
            curves = np.concatenate([first[:, None], inner[k, :, :, col], last[:, None]], axis=1)
            results.append(PerturbationCurves(check, name, model_name, fractions, curves, curve_auc(curves)))
    return results


# --------------------------------------------------------------------------- randomisation


@dataclass(frozen=True)
class RandomisationResult:
    """Similarity of one method's maps with those of cascading randomised copies.

    Attributes
    ----------
    method, model : str
        Map key and model name.
    blocks : list of str
        Cascade order, output first (see :func:`cascade_blocks`).
    depths : list of int
        Blocks randomised at each checkpoint (``depths[-1] == len(blocks)``: all).
    spearman, ssim : numpy.ndarray
        ``(len(depths), N)`` similarity per checkpoint and image.
    """

    method: str
    model: str
    blocks: list[str]
    depths: list[int]
    spearman: np.ndarray
    ssim: np.ndarray = field(repr=False)

    def _label(self, d: int) -> str:
        return self.blocks[d - 1]

    def to_rows(self) -> list[dict]:
        """One dict per checkpoint and image: check, model, method, depth, down_to, image, spearman, ssim."""
        return [{"check": "randomisation", "model": self.model, "method": self.method, "depth": d,
                 "down_to": self._label(d), "image": i, "spearman": float(self.spearman[j, i]),
                 "ssim": float(self.ssim[j, i])}
                for j, d in enumerate(self.depths) for i in range(self.spearman.shape[1])]

    def summary_rows(self) -> list[dict]:
        """One dict per checkpoint: check, model, method, depth, down_to, n_images, spearman_mean, ssim_mean."""
        with np.errstate(all="ignore"):
            return [{"check": "randomisation", "model": self.model, "method": self.method, "depth": d,
                     "down_to": self._label(d), "n_images": int(self.spearman.shape[1]),
                     "spearman_mean": float(np.nanmean(self.spearman[j])) if np.isfinite(self.spearman[j]).any()
                     else float("nan"),
                     "ssim_mean": float(np.mean(self.ssim[j]))}
                    for j, d in enumerate(self.depths)]


def cascade_blocks(model: keras.Model) -> list[tuple[str, list[str]]]:
    """Blocks with weights, output first: ``[(block, [layer names]), ...]``.

    A block is a layer-name prefix before the first ``_``; blocks are ordered by the position
    of their last weighted layer, from the output backwards.
    """
    last: dict[str, int] = {}
    members: dict[str, list[str]] = {}
    for pos, layer in enumerate(model.layers):
        if not layer.weights:
            continue
        block = layer.name.split("_")[0]
        last[block] = pos
        members.setdefault(block, []).append(layer.name)
    return [(b, members[b]) for b in sorted(last, key=lambda b: -last[b])]


def _reinitialised(variable, rng: np.random.Generator) -> np.ndarray:
    """A fresh draw for one weight: He-normal kernels, initial values for the rest."""
    shape = tuple(variable.shape)
    name = variable.name.split("/")[-1].split(":")[0]
    if name in ("gamma", "moving_variance"):
        return np.ones(shape, np.float32)
    if len(shape) < 2:  # bias, beta, moving_mean
        return np.zeros(shape, np.float32)
    fan_in = int(np.prod(shape[:-1]))
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


# One clone per model, kept while the model lives: each randomisation check overwrites its
# weights, so the functions traced for it (every method's, on every view) serve every batch
# of a run instead of being traced again for each. A worker with several threads can check
# two batches of one model at once: each check holds the copy's lock from its first weight
# write to its last map, so no check reads weights of another's depth.
_COPIES: "weakref.WeakKeyDictionary[keras.Model, tuple[keras.Model, threading.Lock]]" = weakref.WeakKeyDictionary()
_COPIES_LOCK = threading.Lock()


def _reusable_copy(model: keras.Model) -> tuple[keras.Model, threading.Lock]:
    with _COPIES_LOCK:
        entry = _COPIES.get(model)
        if entry is None:
            entry = _COPIES[model] = (keras.models.clone_model(model), threading.Lock())
    return entry


def randomised_copy(model: keras.Model, depth: int, seed: int = 0, copy: keras.Model | None = None) -> keras.Model:
    """A copy of ``model`` with its first ``depth`` cascade blocks re-initialised.

    Kernels get a seeded He-normal draw (per layer and weight, so deeper cascades extend
    shallower ones), biases zeros, normalisation layers their identity values.

    Parameters
    ----------
    copy : keras.Model, optional
        A clone of ``model`` to overwrite instead of cloning anew; reusing it keeps the
        compiled explanation functions.
    """
    copy = copy or keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    chosen = {name for _, names in cascade_blocks(model)[:depth] for name in names}
    for li, layer in enumerate(copy.layers):
        if layer.name not in chosen:
            continue
        for vi, var in enumerate(layer.weights):
            var.assign(_reinitialised(var, np.random.default_rng([seed, li, vi])))
    return copy


def map_similarity(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spearman rank correlation and SSIM of the magnitudes of paired ``(N, H, W)`` maps."""
    ma, mb = np.abs(np.asarray(a, np.float64)), np.abs(np.asarray(b, np.float64))
    rho = spearman_rows(ma, mb)

    def unit(m: np.ndarray) -> np.ndarray:
        peak = m.max()
        return m / peak if peak > 0 else m

    ssim = np.array([structural_similarity(unit(x), unit(y), data_range=1.0) for x, y in zip(ma, mb)])
    return rho, ssim


def _checkpoints(n_blocks: int, steps: int) -> list[int]:
    """``steps`` cascade depths from 1 (output only) to ``n_blocks`` (all), evenly spread."""
    if n_blocks == 0:
        return []
    return sorted({int(round(d)) for d in np.linspace(1, n_blocks, max(1, min(steps, n_blocks)))} | {n_blocks})


def randomisation_check(model: keras.Model, original: Mapping[str, np.ndarray],
                        explain: Callable[[keras.Model], Mapping[str, np.ndarray]], steps: int = 3,
                        seed: int = 0, model_name: str = "") -> list[RandomisationResult]:
    """Cascading model-parameter randomisation of ``model``, compared map by map.

    Parameters
    ----------
    model : keras.Model
        The trained model.
    original : dict of str to numpy.ndarray
        Its maps, method name to ``(N, H, W)``.
    explain : callable
        ``explain(model_copy) -> {method: maps}``: recomputes the same maps on a copy. Pass
        the original model's :class:`~glassbox_audit.xai.target.TargetRegion` as the
        target inside it, so the same pixels are explained.
    steps : int, default 3
        Cascade depths evaluated, from "output layer only" to "all layers".
    seed : int, default 0
        Seeds the re-initialised weights.
    model_name : str, default ""
        Stored in the results.
    """
    blocks = cascade_blocks(model)
    depths = _checkpoints(len(blocks), steps)
    names = list(original)
    rho = {k: [] for k in names}
    ssim = {k: [] for k in names}
    copy, lock = _reusable_copy(model)
    with lock:
        for depth in depths:
            maps = explain(randomised_copy(model, depth, seed, copy))
            for k in names:
                r, s = map_similarity(original[k], maps[k])
                rho[k].append(r)
                ssim[k].append(s)
    labels = [b for b, _ in blocks]
    return [RandomisationResult(k, model_name, labels, depths, np.array(rho[k]), np.array(ssim[k])) for k in names]
