"""The segmentation target: which scalar per image an explanation explains.

A segmentation model has one logit per pixel, an attribution method needs one number per
image. The target is the **mean of the logits over a region** of that image:

* ``"predicted"`` (default): the pixels the model itself calls lesion (logit > 0, i.e.
  probability > 0.5) on the unperturbed image. "Why did the model segment this?"
* ``"truth"``: the ground-truth mask. "What made the model respond (or not) on the lesion?"
* a bool array ``(N, H, W)`` or ``(H, W)`` (one region for every image): any region of
  interest, e.g. a false-negative area.

The region is fixed once, on the unperturbed images: noisy SmoothGrad copies, points on an
integration path, perturbed images of the deletion curve and randomised models are all
scored on the same pixels. An image whose region is empty (nothing predicted, no lesion in
the mask) is explained over the whole image instead, and flagged in ``TargetRegion.fallback``.
Masks of another size than the network output are resized (nearest neighbour).

Example::

    region = target_region(model, images)                    # predicted mask
    region = target_region(model, images, "truth", masks)    # ground truth
    maps = Saliency(model).explain(images, target=region)    # reuse it across methods
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import keras
import numpy as np

from .engine import predict_logits
from .maths import region_weights
from .views import logits_view

__all__ = ["TargetRegion", "target_region"]


@dataclass(frozen=True)
class TargetRegion:
    """The pixels whose mean logit is explained, per image.

    Attributes
    ----------
    weights : numpy.ndarray
        ``(N, H, W)`` float32, uniform over each image's region and summing to 1, so
        ``sum(weights * logits)`` is the region's mean logit.
    fallback : numpy.ndarray
        ``(N,)`` bool: the region was empty and the whole image is used.
    kind : str
        ``predicted``, ``truth`` or ``roi``.
    """

    weights: np.ndarray
    fallback: np.ndarray
    kind: str

    def describe(self) -> str:
        """One line for figure captions, e.g. ``mean logit over the predicted mask``."""
        what = {"predicted": "the predicted mask", "truth": "the ground-truth mask",
                "roi": "the region of interest"}[self.kind]
        n = int(self.fallback.sum())
        extra = f" ({n} empty, whole image used)" if n else ""
        return f"mean logit over {what}{extra}"


def _as_region(masks: np.ndarray, n: int, size: tuple[int, int], name: str) -> np.ndarray:
    arr = np.asarray(masks)
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.broadcast_to(arr, (n, *arr.shape))
    if arr.ndim != 3 or len(arr) != n:
        raise ValueError(f"{name} must be (N, H, W) with N = {n} images, got shape {np.shape(masks)}")
    if arr.dtype == bool:
        region = arr
    elif arr.dtype.kind == "f":
        region = arr > 0.5
    else:
        region = arr > 0
    if region.shape[1:] != tuple(size):
        h, w = size
        region = np.stack([cv2.resize(r.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
                           for r in region]) if n else np.zeros((0, h, w), bool)
    return np.ascontiguousarray(region)


def target_region(model: keras.Model, images: np.ndarray, target: str | np.ndarray | TargetRegion = "predicted",
                  masks: np.ndarray | None = None, batch_size: int = 16) -> TargetRegion:
    """Resolve a target specification to per-image region weights.

    Parameters
    ----------
    model : keras.Model
        The model explained (its logits view decides ``predicted``).
    images : numpy.ndarray
        ``(N, H, W, C)`` float32 network inputs in [0, 1].
    target : str, numpy.ndarray or TargetRegion, default "predicted"
        ``"predicted"``, ``"truth"`` (needs ``masks``), a bool region of interest, or an
        already resolved :class:`TargetRegion` (returned as is).
    masks : numpy.ndarray, optional
        ``(N, h, w)`` ground-truth masks (bool, 0/1, 0/255 or float > 0.5) for ``"truth"``.
    batch_size : int, default 16
        Images per model call when the prediction is needed.
    """
    if isinstance(target, TargetRegion):
        return target
    images = np.asarray(images, dtype=np.float32)
    view = logits_view(model)
    n = len(images)
    size = tuple(view.output_shape[1:3])
    if size[0] is None:
        size = images.shape[1:3]
    if isinstance(target, str):
        if target == "predicted":
            region, kind = predict_logits(view, images, batch_size) > 0, "predicted"
        elif target == "truth":
            if masks is None:
                raise ValueError('target="truth" needs the ground-truth masks (masks=...)')
            region, kind = _as_region(masks, n, size, "masks"), "truth"
        else:
            raise ValueError(f"unknown target {target!r}; use 'predicted', 'truth' or a bool array")
    else:
        region, kind = _as_region(target, n, size, "target"), "roi"
    weights, fallback = region_weights(region)
    return TargetRegion(weights, fallback, kind)
