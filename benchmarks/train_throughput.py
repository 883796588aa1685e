"""Training cost per image of the Attention U-Net at several input sizes and widths.

Used to choose the shipped ISIC models' settings (accuracy per CPU-minute): for each
(input size, base filters) it builds the model, trains one warm-up pass and then one timed
pass over the same random batch stream (with the training augmentation), and prints
milliseconds per image and the cost relative to the first setting, all in one run.

    .venv/bin/python benchmarks/train_throughput.py                # default grid
    .venv/bin/python benchmarks/train_throughput.py 96x8 128x12     # chosen settings
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def measure(size: int, filters: int, images: int = 192, batch: int = 8) -> tuple[int, float]:
    import keras
    import tensorflow as tf

    from glassbox_audit.config import AugmentConfig, LossConfig
    from glassbox_audit.data.augment import make_augment
    from glassbox_audit.models.losses import dice_coefficient, make_loss
    from glassbox_audit.models.unet import build_attention_unet

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (images, size, size, 3), dtype=np.uint8)
    y = (rng.random((images, size, size, 1)) > 0.5).astype(np.float32)
    model = build_attention_unet(size, 4, filters, True, True, "batch", 0.1)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=make_loss(LossConfig("dice", bce_weight=0.5)),
                  metrics=[dice_coefficient])
    ds = (tf.data.Dataset.from_tensor_slices((x, y))
          .map(lambda a, b: (tf.cast(a, tf.float32) / 255.0, b))
          .map(make_augment(AugmentConfig(), size), num_parallel_calls=tf.data.AUTOTUNE)
          .batch(batch).prefetch(2))
    model.fit(ds.take(4), epochs=1, verbose=0)  # trace and warm up
    t0 = time.perf_counter()
    model.fit(ds, epochs=1, verbose=0)
    return model.count_params(), 1000 * (time.perf_counter() - t0) / images


def main(argv: list[str]) -> None:
    settings = [tuple(map(int, a.split("x"))) for a in argv] or [(96, 8), (128, 8), (128, 12), (160, 8), (128, 16)]
    print(f"{'input':>6} {'filters':>7} {'params':>10} {'ms/image':>9} {'x first':>8} {'min/epoch (1800 img)':>21}")
    first = None
    for size, filters in settings:
        params, ms = measure(size, filters)
        first = first or ms
        print(f"{size:>6} {filters:>7} {params:>10,} {ms:>9.1f} {ms / first:>8.2f} {ms * 1800 / 60000:>21.1f}",
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
