"""Pure NumPy functions behind the XAI methods and checks: no model, no state.

Every function takes and returns arrays, vectorised over the batch axis, so each can be
tested on hand-made inputs.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage, stats

__all__ = [
    "baseline_images",
    "blur_images",
    "channel_reduce",
    "curve_auc",
    "integration_nodes",
    "normalise_unit",
    "pixel_ranks",
    "region_weights",
    "smooth_maps",
    "spearman_rows",
    "superpixel_statistics",
]


def region_weights(region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image weights averaging over a region, and which images fell back to the whole image.

    Parameters
    ----------
    region : numpy.ndarray
        ``(N, H, W)`` bool.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``(N, H, W)`` float32 weights, each image's summing to 1 (uniform over its region, or
        over the whole image when the region is empty), and the ``(N,)`` bool fallback flags.

    Example
    -------
    >>> w, empty = region_weights(np.zeros((1, 2, 2), bool))
    >>> float(w.sum()), bool(empty[0])
    (1.0, True)
    """
    region = np.asarray(region, dtype=bool)
    counts = region.sum(axis=(1, 2))
    empty = counts == 0
    # An empty region has no mean; the whole image is the least surprising stand-in.
    filled = np.where(empty[:, None, None], True, region)
    sizes = filled.sum(axis=(1, 2)).astype(np.float64)
    return (filled / sizes[:, None, None]).astype(np.float32), empty


def integration_nodes(steps: int, rule: str = "gausslegendre") -> tuple[np.ndarray, np.ndarray]:
    """Points ``alpha`` in [0, 1] and weights (summing to 1) for integrating along a path.

    ``gausslegendre`` is exact for polynomials of degree ``2 * steps - 1``, so it needs far
    fewer steps than the Riemann sums for the same completeness error.

    Example
    -------
    >>> a, w = integration_nodes(2, "riemann_trapezoid")
    >>> a.tolist(), w.tolist()
    ([0.0, 1.0], [0.5, 0.5])
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if rule == "gausslegendre":
        t, w = np.polynomial.legendre.leggauss(steps)
        return ((t + 1) / 2).astype(np.float32), (w / 2).astype(np.float32)
    if rule == "riemann_middle":
        return ((np.arange(steps) + 0.5) / steps).astype(np.float32), np.full(steps, 1 / steps, np.float32)
    if rule == "riemann_trapezoid":
        if steps < 2:
            raise ValueError("riemann_trapezoid needs at least 2 steps")
        w = np.full(steps, 1.0 / (steps - 1))
        w[[0, -1]] /= 2
        return np.linspace(0, 1, steps, dtype=np.float32), w.astype(np.float32)
    raise ValueError(f"unknown integration rule {rule!r}")


def blur_images(images: np.ndarray, sigma_fraction: float) -> np.ndarray:
    """Gaussian-blur ``(N, H, W, C)`` images; sigma is a fraction of the longer image side."""
    sigma = sigma_fraction * max(images.shape[1:3])
    return ndimage.gaussian_filter(images, sigma=(0, sigma, sigma, 0), mode="reflect").astype(np.float32)


def baseline_images(images: np.ndarray, kind: str, seed: int = 0, blur_sigma: float = 0.05) -> np.ndarray:
    """The reference images of integrated gradients and of the deletion curves.

    Parameters
    ----------
    images : numpy.ndarray
        ``(N, H, W, C)`` float32 in [0, 1].
    kind : str
        ``black`` (zeros), ``blurred`` (Gaussian blur, sigma ``blur_sigma`` x side),
        ``mean`` (each image's mean colour, flat) or ``uniform`` (uniform noise in [0, 1],
        seeded per image index).
    """
    images = np.asarray(images, dtype=np.float32)
    if kind == "black":
        return np.zeros_like(images)
    if kind == "blurred":
        return blur_images(images, blur_sigma)
    if kind == "mean":
        return np.broadcast_to(images.mean(axis=(1, 2), keepdims=True), images.shape).astype(np.float32)
    if kind == "uniform":
        shape = images.shape[1:]
        return np.stack([np.random.default_rng([seed, i]).random(shape, dtype=np.float32)
                         for i in range(len(images))]) if len(images) else np.zeros_like(images)
    raise ValueError(f"unknown baseline {kind!r}; use black, blurred, mean or uniform")


def channel_reduce(attributions: np.ndarray, how: str) -> np.ndarray:
    """Reduce ``(N, H, W, C)`` attributions to ``(N, H, W)`` maps.

    ``max`` / ``absmax``: largest (absolute) value over channels; ``sum``: signed sum (keeps
    integrated gradients' completeness); ``abs_sum``; ``l2``: Euclidean norm.
    """
    a = np.asarray(attributions)
    if how == "max":
        out = a.max(axis=-1)
    elif how == "absmax":
        out = np.abs(a).max(axis=-1)
    elif how == "sum":
        out = a.sum(axis=-1)
    elif how == "abs_sum":
        out = np.abs(a).sum(axis=-1)
    elif how == "l2":
        out = np.sqrt((a.astype(np.float64) ** 2).sum(axis=-1))
    else:
        raise ValueError(f"unknown channel reduction {how!r}")
    return out.astype(np.float32)


def normalise_unit(maps: np.ndarray) -> np.ndarray:
    """Scale each ``(H, W)`` map of a batch to [0, 1] by its maximum; all-zero maps stay zero.

    Negative values are clipped first (Grad-CAM keeps positive evidence only).
    """
    m = np.clip(np.asarray(maps, dtype=np.float32), 0, None)
    peak = m.reshape(len(m), -1).max(axis=1) if m.size else np.zeros(len(m), np.float32)
    scale = np.where(peak > 0, peak, 1.0).astype(np.float32)
    return m / scale[:, None, None]


def smooth_maps(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-smooth each map of an ``(N, H, W)`` stack (sigma in pixels; 0 is a no-op)."""
    if sigma <= 0:
        return np.asarray(maps, dtype=np.float32)
    return ndimage.gaussian_filter(np.asarray(maps, np.float32), sigma=(0, sigma, sigma), mode="nearest")


def pixel_ranks(maps: np.ndarray) -> np.ndarray:
    """Rank of every pixel by decreasing map value, per image (0 = most important).

    Ties keep raster order (stable sort), so equal maps give equal rankings everywhere.
    """
    flat = np.asarray(maps, dtype=np.float32).reshape(len(maps), -1)
    order = np.argsort(-flat, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None, :].repeat(len(flat), 0), axis=1)
    return ranks.reshape(np.shape(maps)).astype(np.int32)


def curve_auc(curves: np.ndarray) -> np.ndarray:
    """Area under ``(N, K+1)`` curves sampled at fractions ``0, 1/K, ..., 1`` (trapezoid rule)."""
    c = np.asarray(curves, dtype=np.float64)
    k = c.shape[1] - 1
    return ((c[:, :-1] + c[:, 1:]).sum(axis=1) / (2 * k)).astype(np.float64)


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of each image's map in ``a`` with its map in ``b``.

    Ties get average ranks; a constant map has no ranking, so its correlation is NaN.
    """
    fa = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    fb = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    ra = stats.rankdata(fa, axis=1)
    rb = stats.rankdata(fb, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denom = np.sqrt((ra ** 2).sum(axis=1) * (rb ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (ra * rb).sum(axis=1) / np.where(denom > 0, denom, 1), np.nan)


def superpixel_statistics(labels: np.ndarray, probability: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean probability and mean confidence ``|2p - 1|`` per superpixel, painted back on pixels.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(N, H, W)`` int superpixel labels (any non-negative integers, per image).
    probability : numpy.ndarray
        ``(N, H, W)`` lesion probability in [0, 1].

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        ``(N, H, W)`` float32 mean probability and confidence maps, both within [0, 1].
        Confidence is the mean of the per-pixel confidence, so a superpixel straddling the
        boundary (half sure lesion, half sure skin) stays confident where ``|2 mean(p) - 1|``
        would call it uncertain.
    """
    lab = np.asarray(labels, dtype=np.int64)
    p = np.clip(np.asarray(probability, dtype=np.float64), 0.0, 1.0)
    n = len(lab)
    # One bincount over the whole batch: offset each image's labels past the previous ones.
    per_image = lab.reshape(n, -1).max(axis=1) + 1 if lab.size else np.zeros(n, np.int64)
    offsets = np.concatenate([[0], np.cumsum(per_image)[:-1]]).astype(np.int64)
    flat = (lab + offsets[:, None, None]).ravel()
    total = int(per_image.sum())
    counts = np.bincount(flat, minlength=total)
    safe = np.maximum(counts, 1)
    mean_p = np.bincount(flat, weights=p.ravel(), minlength=total) / safe
    mean_c = np.bincount(flat, weights=np.abs(2 * p - 1).ravel(), minlength=total) / safe
    shape = lab.shape
    return (np.clip(mean_p[flat], 0, 1).reshape(shape).astype(np.float32),
            np.clip(mean_c[flat], 0, 1).reshape(shape).astype(np.float32))
