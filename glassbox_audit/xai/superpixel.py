"""SLIC superpixel confidence: where is the model sure, region by region.

The image is cut into SLIC superpixels (scikit-image; ``n_segments`` 200 by default,
computed at network resolution) and the model's lesion probability ``p = sigmoid(logit)``
is averaged in each: the **probability** map, and the **confidence** map, the mean of
``|2p - 1|`` (0 where the model hesitates at 0.5, 1 where it is certain either way). Both are
painted back on the superpixels' pixels and bounded in [0, 1].

This is a property of the prediction, not an attribution of a target: ``target`` and
``masks`` are accepted for a uniform interface and ignored.

Example::

    conf = SuperpixelConfidence(model).explain(images)                          # (N, H, W)
    prob = SuperpixelConfidence(model).explain(images, output="probability")
    both = SuperpixelConfidence(model).superpixels(images)                      # labels too
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from scipy.special import expit
from skimage.segmentation import slic

from .engine import predict_logits
from .maths import superpixel_statistics
from .views import logits_view

__all__ = ["SuperpixelConfidence", "SuperpixelMaps"]


@dataclass(frozen=True)
class SuperpixelMaps:
    """SLIC labels ``(N, H, W)`` int32 and the per-superpixel probability and confidence maps."""

    labels: np.ndarray
    probability: np.ndarray
    confidence: np.ndarray


def _slic(image: np.ndarray, n_segments: int, compactness: float) -> np.ndarray:
    grey = image.shape[-1] == 1
    pixels = (image[..., 0] if grey else image).astype(np.float64)
    return slic(pixels, n_segments=n_segments, compactness=compactness, channel_axis=None if grey else -1,
                start_label=0).astype(np.int32)


class SuperpixelConfidence:
    """Mean probability and confidence per SLIC superpixel."""

    name = "superpixel"

    def __init__(self, model: keras.Model):
        self.model = model

    def superpixels(self, images: np.ndarray, n_segments: int = 200, compactness: float = 10.0,
                    batch_size: int = 16) -> SuperpixelMaps:
        """Labels, probability and confidence maps of a batch (one SLIC run per image).

        Parameters
        ----------
        images : numpy.ndarray
            ``(N, H, W, C)`` float32 in [0, 1].
        n_segments : int, default 200
            Approximate number of superpixels (scikit-image ``slic``).
        compactness : float, default 10.0
            Colour against space trade-off of SLIC; higher gives squarer superpixels.
        batch_size : int, default 16
            Images per model call.
        """
        images = np.ascontiguousarray(images, dtype=np.float32)
        prob = expit(predict_logits(logits_view(self.model), images, batch_size).astype(np.float64))
        # SLIC itself is per image (its k-means is); the statistics below are one bincount.
        labels = (np.stack([_slic(im, n_segments, compactness) for im in images]) if len(images)
                  else np.zeros(prob.shape, np.int32))
        if labels.shape != prob.shape:
            raise ValueError(f"model output {prob.shape[1:]} differs from the input size {labels.shape[1:]}")
        mean_p, mean_c = superpixel_statistics(labels, prob)
        return SuperpixelMaps(labels, mean_p, mean_c)

    def explain(self, images: np.ndarray, target: object = None, masks: object = None, output: str = "confidence",
                n_segments: int = 200, compactness: float = 10.0, batch_size: int = 16) -> np.ndarray:
        """``(N, H, W)`` float32 map in [0, 1]: ``output="confidence"`` or ``"probability"``.

        Other parameters as :meth:`superpixels`; ``target`` and ``masks`` are ignored.
        """
        if output not in ("confidence", "probability"):
            raise ValueError(f"output must be 'confidence' or 'probability', got {output!r}")
        maps = self.superpixels(images, n_segments, compactness, batch_size)
        return maps.confidence if output == "confidence" else maps.probability
