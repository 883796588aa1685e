"""The model's own attention: each attention gate's coefficient map at input size.

An Attention U-Net gate multiplies its skip connection by a coefficient in [0, 1] per pixel
(layer ``att<level>_coef`` of ``glassbox_audit.models.unet``). These maps are read straight
from the model, not inferred from gradients; they are resized bilinearly to the input size
and not rescaled, so 0.5 means "half of the skip features pass".

This is a property of the forward pass, not an attribution of a target: ``target`` and
``masks`` are accepted for a uniform interface and ignored.

Example::

    maps = AttentionMaps(model).explain(images)              # (N, H, W), mean over the gates
    per_gate = AttentionMaps(model).explain_layers(images)   # {"att1_coef": ..., "att2_coef": ...}
"""

from __future__ import annotations

import keras
import numpy as np

from glassbox_audit.models.unet import layer_group

from .engine import chunked, layer_output_function
from .views import logits_view

__all__ = ["AttentionMaps", "attention_layers"]


def attention_layers(model: keras.Model) -> list[str]:
    """Names of the attention-gate coefficient layers (``att*_coef``), finest level first."""
    view = logits_view(model)
    names = [layer.name for layer in view.layers
             if layer_group(layer.name) == "attention" and layer.name.endswith("_coef")]
    # Level 1 is the finest (full resolution) in the U-Net builder's naming.
    return sorted(names, key=lambda n: (len(n), n))


class AttentionMaps:
    """Attention-gate coefficients of the model, as maps at input size."""

    name = "attention"

    def __init__(self, model: keras.Model):
        self.model = model

    def explain_layers(self, images: np.ndarray, layers: list[str] | None = None,
                       batch_size: int = 16) -> dict[str, np.ndarray]:
        """Each gate's ``(N, H, W)`` float32 coefficient map in [0, 1], keyed by layer name.

        Parameters
        ----------
        images : numpy.ndarray
            ``(N, H, W, C)`` float32 in [0, 1].
        layers : list of str, optional
            Gate layers to read; default :func:`attention_layers`.
        batch_size : int, default 16
            Images per model call.
        """
        names = tuple(layers or attention_layers(self.model))
        if not names:
            raise ValueError(f"model {self.model.name!r} has no attention gates (no att*_coef layer)")
        images = np.ascontiguousarray(images, dtype=np.float32)
        fn = layer_output_function(logits_view(self.model), names)
        parts = chunked(len(images), batch_size, lambda s: fn(images[s]).numpy())
        stack = np.concatenate(parts) if parts else np.zeros((0, len(names), *images.shape[1:3]), np.float32)
        return {name: np.clip(stack[:, i], 0.0, 1.0) for i, name in enumerate(names)}

    def explain(self, images: np.ndarray, target: object = None, masks: object = None,
                layers: list[str] | None = None, batch_size: int = 16) -> np.ndarray:
        """``(N, H, W)`` float32 in [0, 1]: the mean of the gates' coefficient maps.

        Parameters as :meth:`explain_layers`; ``target`` and ``masks`` are ignored.
        """
        maps = self.explain_layers(images, layers, batch_size)
        return np.mean(list(maps.values()), axis=0).astype(np.float32)
