"""Training augmentation as TensorFlow ops, applied jointly to image and mask.

Geometric transforms run on the image and mask stacked into one 4-channel tensor, so the
mask can never drift from the image; photometric transforms touch the image only.
"""

from __future__ import annotations

import math
from typing import Callable

import tensorflow as tf

from ..config import AugmentConfig

__all__ = ["make_augment", "make_batch_augment"]


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


def make_batch_augment(cfg: AugmentConfig, size: int) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """Return ``augment(images, masks)`` for whole batches: float images in [0, 1] ``(B, S, S, 3)``.

    Each sample's flips, right-angle and free rotation and scale/crop compose into one affine
    map, so a batch costs one ``ImageProjectiveTransformV3`` call on image and mask stacked
    together (the mask cannot drift from its image; reflected border). Colour jitter is
    per-sample broadcasting, the hue shift a rotation about the grey axis.
    """
    c = (size - 1) / 2.0

    def uniform(b, lo, hi):
        return tf.random.uniform((b,), lo, hi)

    def affine(b):
        # Output pixel -> input pixel: in = c + M (out - c) + t, M = s R(phi) F.
        fx = tf.where(uniform(b, 0, 1) < 0.5, -1.0, 1.0) if cfg.hflip else tf.ones((b,))
        fy = tf.where(uniform(b, 0, 1) < 0.5, -1.0, 1.0) if cfg.vflip else tf.ones((b,))
        phi = tf.zeros((b,))
        if cfg.rot90:
            phi += tf.cast(tf.random.uniform((b,), 0, 4, dtype=tf.int32), tf.float32) * (math.pi / 2)
        if cfg.rotate:
            phi += uniform(b, -cfg.rotate, cfg.rotate) * (math.pi / 180)
        s = uniform(b, cfg.min_scale, 1.0) if cfg.scale_crop and cfg.min_scale < 1 else tf.ones((b,))
        room = (1.0 - s) * c  # a zoomed-in crop stays inside the image
        tx, ty = uniform(b, -1, 1) * room, uniform(b, -1, 1) * room
        cos, sin = tf.cos(phi) * s, tf.sin(phi) * s
        m00, m01, m10, m11 = cos * fx, -sin * fy, sin * fx, cos * fy
        ox = c + tx - (m00 * c + m01 * c)
        oy = c + ty - (m10 * c + m11 * c)
        zero = tf.zeros((b,))
        return tf.stack([m00, m01, ox, m10, m11, oy, zero, zero], axis=1)

    def colour(img, b):
        if cfg.brightness:
            img += uniform(b, -cfg.brightness, cfg.brightness)[:, None, None, None]
        if cfg.contrast:
            mean = tf.reduce_mean(img, axis=(1, 2), keepdims=True)
            img = (img - mean) * uniform(b, 1 - cfg.contrast, 1 + cfg.contrast)[:, None, None, None] + mean
        if cfg.saturation:
            grey = tf.reduce_sum(img * tf.constant([0.299, 0.587, 0.114]), axis=-1, keepdims=True)
            img = grey + (img - grey) * uniform(b, 1 - cfg.saturation, 1 + cfg.saturation)[:, None, None, None]
        if cfg.hue:
            t = uniform(b, -cfg.hue, cfg.hue) * (2 * math.pi)  # hue in turns
            k = 1 / math.sqrt(3.0)
            cos, sin = tf.cos(t)[:, None, None], tf.sin(t)[:, None, None]
            cross = tf.constant([[0, -k, k], [k, 0, -k], [-k, k, 0]], tf.float32)[None]
            rot = cos * tf.eye(3)[None] + sin * cross + (1 - cos) * tf.fill((1, 3, 3), k * k)
            img = tf.einsum("bhwc,bdc->bhwd", img, rot)
        return tf.clip_by_value(img, 0.0, 1.0)

    def augment(images: tf.Tensor, masks: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        if not cfg.enabled:
            return images, masks
        b = tf.shape(images)[0]
        both = tf.concat([images, tf.cast(masks, images.dtype)], axis=-1)
        both = tf.raw_ops.ImageProjectiveTransformV3(
            images=both, transforms=affine(b), output_shape=tf.constant([size, size]),
            fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")
        return colour(both[..., :3], b), tf.cast(both[..., 3:], masks.dtype)

    return augment
