"""Segmentation losses on logits: Dice, Tversky and their hybrid, plus optional BCE.

Soft counts are taken per image and the loss is the mean over images, so a small lesion
counts as much as a large one (the ISIC score is a mean over images too).
"""

from __future__ import annotations

from typing import Callable

import keras
from keras import ops

from ..config import LossConfig

__all__ = ["LossWeights", "dice_coefficient", "dice_loss", "make_loss", "tversky_loss"]

_SMOOTH = 1.0  # keeps empty masks finite and their gradient gentle


def _soft_counts(y_true, logits):
    p = ops.sigmoid(logits)
    y = ops.cast(y_true, p.dtype)
    axes = (1, 2, 3)
    tp = ops.sum(p * y, axis=axes)
    fp = ops.sum(p * (1 - y), axis=axes)
    fn = ops.sum((1 - p) * y, axis=axes)
    return tp, fp, fn


def tversky_loss(y_true, logits, alpha: float = 0.5, beta: float = 0.5):
    """1 - TP / (TP + alpha FP + beta FN): alpha > beta punishes false positives more."""
    tp, fp, fn = _soft_counts(y_true, logits)
    return 1 - ops.mean((tp + _SMOOTH) / (tp + alpha * fp + beta * fn + _SMOOTH))


def dice_loss(y_true, logits):
    """1 - 2 TP / (2 TP + FP + FN): the Tversky loss with alpha = beta = 0.5."""
    return tversky_loss(y_true, logits, 0.5, 0.5)


def _term_weights(cfg: LossConfig) -> tuple[float, float]:
    """The weights of the Dice and the Tversky term in the loss of ``cfg.kind``."""
    return {"dice": (1.0, 0.0), "tversky": (0.0, 1.0)}.get(cfg.kind, (cfg.dice_weight, 1 - cfg.dice_weight))


def make_loss(cfg: LossConfig) -> Callable:
    """The loss a :class:`LossConfig` describes, as ``loss(y_true, logits)``."""
    dice, tversky = _term_weights(cfg)

    def loss(y_true, logits):
        value = 0.0
        if dice:  # a term of weight 0 is left out, not computed
            value = dice * dice_loss(y_true, logits)
        if tversky:
            value = value + tversky * tversky_loss(y_true, logits, cfg.alpha, cfg.beta)
        if cfg.bce_weight:
            bce = keras.losses.binary_crossentropy(y_true, logits, from_logits=True)
            value = value + cfg.bce_weight * ops.mean(bce)
        return value

    loss.__name__ = f"{cfg.kind}_loss"
    return loss


class LossWeights:
    """Every :class:`LossConfig` as one loss whose settings are variables.

    ``dice * Dice loss + tversky * Tversky loss (alpha, beta) + bce * BCE``: ``dice`` kind is
    (1, 0), ``tversky`` (0, 1), ``hybrid`` (dice_weight, 1 - dice_weight). A train step
    compiled with it is traced once and serves the base and every variant after
    :meth:`assign` (tracing a step takes longer than a short fine-tune's epochs on 2 cores).
    The value is :func:`make_loss`'s: the terms a kind leaves out are added with weight 0.
    """

    def __init__(self, cfg: LossConfig | None = None):
        def var(name):
            return keras.Variable(0.0, trainable=False, name=f"loss_{name}", dtype="float32")

        self.dice, self.tversky, self.alpha, self.beta, self.bce = (
            var(n) for n in ("dice", "tversky", "alpha", "beta", "bce"))
        self.__name__ = "segmentation_loss"
        if cfg is not None:
            self.assign(cfg)

    def assign(self, cfg: LossConfig) -> None:
        dice, tversky = _term_weights(cfg)
        for v, value in ((self.dice, dice), (self.tversky, tversky), (self.alpha, cfg.alpha), (self.beta, cfg.beta),
                         (self.bce, cfg.bce_weight)):
            v.assign(value)

    def __call__(self, y_true, logits):
        bce = ops.mean(keras.losses.binary_crossentropy(y_true, logits, from_logits=True))
        return (self.dice * dice_loss(y_true, logits) + self.tversky * tversky_loss(y_true, logits, self.alpha, self.beta)
                + self.bce * bce)


def dice_coefficient(y_true, logits):
    """Training-time metric: per-image Dice of the thresholded prediction (logit > 0), mean."""
    pred = ops.cast(logits > 0, "float32")
    y = ops.cast(y_true > 0.5, "float32")
    tp = ops.sum(pred * y, axis=(1, 2, 3))
    total = ops.sum(pred, axis=(1, 2, 3)) + ops.sum(y, axis=(1, 2, 3))
    return ops.mean(ops.where(total > 0, 2 * tp / ops.maximum(total, 1e-9), 1.0))


dice_coefficient.__name__ = "dice"
