"""Training augmentation as TensorFlow ops, applied jointly to image and mask.

Geometric transforms run on the image and mask stacked into one 4-channel tensor, so the
mask can never drift from the image; photometric transforms touch the image only.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from ..config import AugmentConfig

__all__ = ["make_augment"]


def make_augment(cfg: AugmentConfig, size: int) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """Return ``augment(image, mask)`` for float images in [0, 1] ``(S, S, 3)`` and masks ``(S, S, 1)``."""

    def coin() -> tf.Tensor:
        return tf.random.uniform(()) < 0.5

    def augment(image: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        if not cfg.enabled:
            return image, mask
        both = tf.concat([image, mask], axis=-1)
        if cfg.hflip:
            both = tf.cond(coin(), lambda: tf.image.flip_left_right(both), lambda: both)
        if cfg.vflip:
            both = tf.cond(coin(), lambda: tf.image.flip_up_down(both), lambda: both)
        if cfg.rot90:
            both = tf.image.rot90(both, k=tf.random.uniform((), 0, 4, dtype=tf.int32))
        if cfg.scale_crop and cfg.min_scale < 1:
            scale = tf.random.uniform((), cfg.min_scale, 1.0)
            y0 = tf.random.uniform(()) * (1.0 - scale)
            x0 = tf.random.uniform(()) * (1.0 - scale)
            box = tf.stack([y0, x0, y0 + scale, x0 + scale])[None]
            both = tf.image.crop_and_resize(both[None], box, [0], [size, size])[0]
        image, mask = both[..., :3], both[..., 3:]
        if cfg.brightness > 0:
            image = tf.image.random_brightness(image, cfg.brightness)
        if cfg.contrast > 0:
            image = tf.image.random_contrast(image, 1 - cfg.contrast, 1 + cfg.contrast)
        if cfg.saturation > 0:
            image = tf.image.random_saturation(image, 1 - cfg.saturation, 1 + cfg.saturation)
        if cfg.hue > 0:
            image = tf.image.random_hue(image, cfg.hue)
        return tf.clip_by_value(image, 0.0, 1.0), mask

    return augment
