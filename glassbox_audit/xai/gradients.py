"""Gradient attributions: saliency, guided backpropagation, integrated gradients, SmoothGrad.

Each method is a class built from the model alone, explained with one call on a batch::

    maps = Saliency(model).explain(images)                                   # (N, H, W)
    maps, check = IntegratedGradients(model).explain(images, steps=50, return_completeness=True)
    maps = SmoothGrad(GuidedBackprop(model)).explain(images, samples=25, noise=0.15)

The explained scalar is the region-mean logit of :mod:`glassbox_audit.xai.target`. All rows
(noisy copies x integration steps x images) go through the model in chunks of
``batch_size`` inside one compiled graph per chunk; see :mod:`glassbox_audit.xai.engine`.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from .engine import POST_PROCESSING, chunked, current_options, gradient_function, predict_logits
from .maths import baseline_images, channel_reduce, integration_nodes
from .target import TargetRegion, target_region
from .views import folded_view, guided_view, logits_view

__all__ = ["Completeness", "GuidedBackprop", "IntegratedGradients", "Saliency", "SmoothGrad"]


@dataclass(frozen=True)
class _Plan:
    """How one gradient method turns rows into attributions (before any noise tunnel)."""

    guided: bool
    alphas: np.ndarray  # (K,) path points; [1.0] for plain gradients
    node_weights: np.ndarray  # (K,) summing to 1
    baselines: np.ndarray | None  # (N, H, W, C); None: zeros with alpha 1, the input itself
    times_delta: bool
    post: str  # "none" or "abs", per row
    reduce: str  # channel reduction of the final attributions


@dataclass(frozen=True)
class Completeness:
    """Integrated-gradients completeness: attributions should sum to ``F(x) - F(baseline)``.

    Attributes
    ----------
    attribution_sum, f_input, f_baseline, error, relative_error : numpy.ndarray
        ``(N,)`` each; ``error = attribution_sum - (f_input - f_baseline)`` and
        ``relative_error = |error| / |f_input - f_baseline|`` (the denominator floored at 1e-6).
    """

    attribution_sum: np.ndarray
    f_input: np.ndarray
    f_baseline: np.ndarray
    error: np.ndarray
    relative_error: np.ndarray

    def to_rows(self, model: str = "", method: str = "integrated_gradients") -> list[dict]:
        """One flat dict per image, for a table."""
        return [{"check": "completeness", "model": model, "method": method, "image": i,
                 "attribution_sum": float(self.attribution_sum[i]), "f_input": float(self.f_input[i]),
                 "f_baseline": float(self.f_baseline[i]), "error": float(self.error[i]),
                 "relative_error": float(self.relative_error[i])} for i in range(len(self.error))]


def _rows(n: int, samples: int, steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image, sample and step index of every row, image-major so a chunk touches few images."""
    grid = np.indices((n, samples, steps)).reshape(3, -1).astype(np.int32)
    return grid[0], grid[1], grid[2]


def _attribute(view: keras.Model, images: np.ndarray, region: TargetRegion, plan: _Plan, samples: int = 1,
               noise: float = 0.0, squared: bool = False, seed: int = 0, batch_size: int = 16) -> np.ndarray:
    """``(N, H, W, C)`` attributions: the plan's rows, optionally over noisy copies, summed per image."""
    n = len(images)
    noisy = samples > 1 or noise > 0
    image, sample, step = _rows(n, samples, len(plan.alphas))
    # Squaring is per noisy copy; with several path steps a copy spans several rows, so
    # each copy gets its own output slot and is squared once complete.
    per_sample = squared and len(plan.alphas) > 1
    post = plan.post if not squared or per_sample else "square"
    seg = image * samples + sample if per_sample else image
    n_out = n * samples if per_sample else n
    coef = plan.node_weights[step] / (1 if per_sample else samples)
    alpha = plan.alphas[step]
    baselines = plan.baselines if plan.baselines is not None else np.zeros_like(images)
    # Noise standard deviation relative to each image's value range (Smilkov et al., 2017).
    sigma = noise * (images.reshape(n, -1).max(axis=1) - images.reshape(n, -1).min(axis=1)) if n else []
    fn = gradient_function(view)
    shape = images.shape[1:]
    # Converted once: every chunk call reads the whole (small) batch and gathers its rows.
    shared = [tf.constant(images), tf.constant(baselines), tf.constant(region.weights)]
    flags = (tf.constant(plan.times_delta), tf.constant(POST_PROCESSING[post], tf.int32))
    no_noise = tf.zeros((1, 1, 1, 1), tf.float32)
    total = np.zeros((n_out, *shape), np.float32)

    def call(rows: slice) -> None:
        if noisy:
            # Seeded per (image, sample), so maps do not depend on how rows are chunked.
            noise_rows = np.stack([np.random.default_rng([seed, i, s]).standard_normal(shape, np.float32) * sigma[i]
                                   for i, s in zip(image[rows], sample[rows])])
        else:
            noise_rows = no_noise
        # Accumulated as chunks finish: memory stays one chunk plus one output.
        total[...] += fn(*shared, image[rows], seg[rows], alpha[rows], coef[rows], np.int32(n_out), noise_rows,
                         *flags)[0].numpy()

    chunked(len(image), batch_size, call)
    if per_sample:
        total = (total.reshape(n, samples, *shape) ** 2).mean(axis=1)
    return total


class _GradientMethod:
    """Shared ``explain`` of the gradient methods; subclasses only say how rows are made."""

    name = ""

    def __init__(self, model: keras.Model):
        self.model = model

    def _view(self, guided: bool) -> keras.Model:
        fold = current_options().fold_batchnorm
        if guided:
            return guided_view(self.model, fold_batchnorm=fold)
        return folded_view(self.model) if fold else logits_view(self.model)

    def _plan(self, images: np.ndarray, **options) -> _Plan:  # pragma: no cover - abstract
        raise NotImplementedError

    def _explain(self, images, target, masks, batch_size, samples=1, noise=0.0, squared=False, seed=0,
                 **options) -> tuple[np.ndarray, np.ndarray, _Plan, TargetRegion]:
        images = np.ascontiguousarray(images, dtype=np.float32)
        region = target_region(self.model, images, target, masks, batch_size)
        plan = self._plan(images, seed=seed, **options)
        raw = _attribute(self._view(plan.guided), images, region, plan, samples, noise, squared, seed, batch_size)
        return channel_reduce(raw, plan.reduce), raw, plan, region


class Saliency(_GradientMethod):
    """Vanilla gradient of the target with respect to the input pixels (Simonyan et al., 2014).

    Example
    -------
    >>> maps = Saliency(model).explain(images)            # doctest: +SKIP
    """

    name = "saliency"

    def _plan(self, images, seed=0, abs=True, reduce=None):
        return _Plan(False, np.ones(1, np.float32), np.ones(1, np.float32), None, False,
                     "abs" if abs else "none", reduce or ("max" if abs else "sum"))

    def explain(self, images: np.ndarray, target: str | np.ndarray | TargetRegion = "predicted",
                masks: np.ndarray | None = None, abs: bool = True, reduce: str | None = None,
                batch_size: int = 16) -> np.ndarray:
        """Saliency maps of a batch.

        Parameters
        ----------
        images : numpy.ndarray
            ``(N, H, W, C)`` float32 in [0, 1].
        target, masks
            The explained region; see :func:`glassbox_audit.xai.target.target_region`.
        abs : bool, default True
            Take absolute gradients.
        reduce : str, optional
            Channel reduction (:func:`~glassbox_audit.xai.maths.channel_reduce`); default
            ``max`` of the absolute gradients, or the signed ``sum`` when ``abs=False``.
        batch_size : int, default 16
            Images per model call.

        Returns
        -------
        numpy.ndarray
            ``(N, H, W)`` float32.
        """
        return self._explain(images, target, masks, batch_size, abs=abs, reduce=reduce)[0]


class GuidedBackprop(_GradientMethod):
    """Guided backpropagation: gradients through guided ReLUs (only positive signals flow back).

    Runs on :func:`~glassbox_audit.xai.views.guided_view`; the map is the max over channels
    of the absolute guided gradient by default.

    Example
    -------
    >>> maps = GuidedBackprop(model).explain(images)      # doctest: +SKIP
    """

    name = "guided_backprop"

    def _plan(self, images, seed=0, reduce="absmax"):
        return _Plan(True, np.ones(1, np.float32), np.ones(1, np.float32), None, False, "none", reduce)

    def explain(self, images: np.ndarray, target: str | np.ndarray | TargetRegion = "predicted",
                masks: np.ndarray | None = None, reduce: str = "absmax", batch_size: int = 16) -> np.ndarray:
        """Guided-backprop maps ``(N, H, W)`` float32 of a batch; parameters as :meth:`Saliency.explain`."""
        return self._explain(images, target, masks, batch_size, reduce=reduce)[0]


class IntegratedGradients(_GradientMethod):
    """Integrated gradients (Sundararajan et al., 2017) along the straight path from a baseline.

    Attributions are ``(x - b) * integral_0^1 dF(b + a (x - b)) / dx da`` per pixel and
    channel, summed over channels, so a map sums to about ``F(x) - F(b)`` (completeness).

    Example
    -------
    >>> maps, check = IntegratedGradients(model).explain(images, steps=50, return_completeness=True)  # doctest: +SKIP
    >>> float(abs(check.relative_error).max()) < 0.05                                                # doctest: +SKIP
    True
    """

    name = "integrated_gradients"

    def _plan(self, images, seed=0, steps=32, baseline="black", rule="gausslegendre", blur_sigma=0.05,
              reduce="sum"):
        if isinstance(baseline, str):
            base = baseline_images(images, baseline, seed, blur_sigma)
        else:
            base = np.broadcast_to(np.asarray(baseline, np.float32), images.shape).copy()
        alphas, weights = integration_nodes(steps, rule)
        return _Plan(False, alphas, weights, base, True, "none", reduce)

    def explain(self, images: np.ndarray, target: str | np.ndarray | TargetRegion = "predicted",
                masks: np.ndarray | None = None, steps: int = 32, baseline: str | np.ndarray = "black",
                rule: str = "gausslegendre", blur_sigma: float = 0.05, seed: int = 0, reduce: str = "sum",
                return_completeness: bool = False, batch_size: int = 16):
        """Integrated-gradients maps of a batch.

        Parameters
        ----------
        images, target, masks, batch_size
            As :meth:`Saliency.explain`; ``batch_size`` counts path points, not images.
        steps : int, default 32
            Points on the path per image.
        baseline : str or numpy.ndarray, default "black"
            ``black``, ``blurred``, ``uniform`` (see
            :func:`~glassbox_audit.xai.maths.baseline_images`) or an array broadcastable to
            the images.
        rule : str, default "gausslegendre"
            Quadrature rule (:func:`~glassbox_audit.xai.maths.integration_nodes`).
        blur_sigma : float, default 0.05
            Sigma of the ``blurred`` baseline as a fraction of the image side.
        seed : int, default 0
            Seeds the ``uniform`` baseline.
        reduce : str, default "sum"
            Channel reduction; the signed sum keeps completeness.
        return_completeness : bool, default False
            Also return a :class:`Completeness` check.

        Returns
        -------
        numpy.ndarray or (numpy.ndarray, Completeness)
            ``(N, H, W)`` float32 maps (and the check).
        """
        maps, raw, plan, region = self._explain(images, target, masks, batch_size, seed=seed, steps=steps,
                                                baseline=baseline, rule=rule, blur_sigma=blur_sigma, reduce=reduce)
        if not return_completeness:
            return maps
        view = self._view(False)
        both = np.concatenate([np.asarray(images, np.float32), plan.baselines])
        values = (predict_logits(view, both, batch_size) * np.concatenate([region.weights] * 2)).sum(axis=(1, 2))
        n = len(maps)
        f_x, f_b = values[:n].astype(np.float64), values[n:].astype(np.float64)
        total = raw.reshape(n, -1).sum(axis=1, dtype=np.float64)
        error = total - (f_x - f_b)
        return maps, Completeness(total, f_x, f_b, error, np.abs(error) / np.maximum(np.abs(f_x - f_b), 1e-6))


class SmoothGrad:
    """SmoothGrad (Smilkov et al., 2017) around any gradient method, like Captum's ``NoiseTunnel``.

    Each image is explained ``samples`` times with Gaussian noise added (standard deviation
    ``noise`` x the image's value range) and the method's attributions are averaged
    (``smoothgrad``) or their squares averaged (``smoothgrad_sq``) before the channel
    reduction. The target region is fixed on the clean image. Noise is seeded per image and
    sample, so results do not depend on ``batch_size``.

    Parameters
    ----------
    method : Saliency, GuidedBackprop, IntegratedGradients or keras.Model
        The wrapped method; a bare model is wrapped around :class:`Saliency`.

    Example
    -------
    >>> maps = SmoothGrad(Saliency(model)).explain(images, samples=50, noise=0.15)   # doctest: +SKIP
    """

    name = "smoothgrad"

    def __init__(self, method: _GradientMethod | keras.Model):
        self.method = method if isinstance(method, _GradientMethod) else Saliency(method)
        self.model = self.method.model

    def explain(self, images: np.ndarray, target: str | np.ndarray | TargetRegion = "predicted",
                masks: np.ndarray | None = None, samples: int = 25, noise: float = 0.15,
                nt_type: str = "smoothgrad", seed: int = 0, batch_size: int = 16, **method_options) -> np.ndarray:
        """SmoothGrad maps ``(N, H, W)`` float32 of a batch.

        Parameters
        ----------
        images, target, masks, batch_size
            As :meth:`Saliency.explain`; ``batch_size`` counts noisy rows.
        samples : int, default 25
            Noisy copies per image.
        noise : float, default 0.15
            Noise standard deviation as a fraction of each image's value range.
        nt_type : str, default "smoothgrad"
            ``smoothgrad`` or ``smoothgrad_sq``.
        seed : int, default 0
            Seeds the noise.
        **method_options
            Passed to the wrapped method (e.g. ``steps``, ``baseline`` for integrated
            gradients, ``abs`` for saliency).
        """
        if nt_type not in ("smoothgrad", "smoothgrad_sq"):
            raise ValueError(f"unknown nt_type {nt_type!r}")
        if samples < 1:
            raise ValueError(f"samples must be at least 1, got {samples}")
        return self.method._explain(images, target, masks, batch_size, samples=samples, noise=noise,
                                    squared=nt_type == "smoothgrad_sq", seed=seed, **method_options)[0]
