"""Evaluation-loop throughput against bare ``model.predict`` on the same images, same run.

The evaluation loop decodes each test image from disk, resizes it, predicts, resizes the
probability map back to the mask's native size and counts TP/FP/FN/TN there. The baseline
is ``model.predict`` on the same images already decoded and resized in memory: the floor
the loop cannot beat. The goal is a ratio of at least 0.9.

    python benchmarks/eval_throughput.py                       # synthetic default test set
    python benchmarks/eval_throughput.py --layout isic --data ../shared/data/isic2017-256
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from glassbox_audit.config import load_config  # noqa: E402
from glassbox_audit.data import load_arrays, load_dataset  # noqa: E402
from glassbox_audit.evaluate import evaluate_models  # noqa: E402
from glassbox_audit.models.unet import build_attention_unet  # noqa: E402


class Handle:
    def __init__(self, model):
        self.name, self.model, self.sha256 = "bench", model, "0" * 64


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layout", default="synthetic")
    ap.add_argument("--data", default="")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], help="config override key=value")
    args = ap.parse_args()
    cfg = load_config(overrides=args.set, data__layout=args.layout, data__root=args.data or None)
    m = cfg.model
    ds = load_dataset(cfg.data)
    model = build_attention_unet(m.input_size, m.depth, m.base_filters, m.attention_gates,
                                 m.bottleneck_attention, m.norm, m.dropout)
    x, _ = load_arrays(ds, "test", m.input_size)
    x = x.astype(np.float32) / 255.0
    n = len(x)
    bs = cfg.evaluate.batch_size

    # Warm up both paths so tracing is not timed.
    model.predict(x[:bs], batch_size=bs, verbose=0)
    evaluate_models([Handle(model)], ds, m.input_size, cfg.evaluate)

    bare, loop = [], []
    for _ in range(args.repeats):  # alternate, so machine noise hits both alike
        t0 = time.perf_counter()
        model.predict(x, batch_size=bs, verbose=0)
        bare.append(n / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        evaluate_models([Handle(model)], ds, m.input_size, cfg.evaluate)
        loop.append(n / (time.perf_counter() - t0))
    b, e = statistics.median(bare), statistics.median(loop)
    print(f"test images: {n} ({ds.description}), network input {m.input_size} px, batch {bs}, "
          f"{os.cpu_count()} CPUs, median of {args.repeats}")
    print(f"{'path':<46} {'images/s':>9}")
    print(f"{'bare model.predict (in-memory arrays)':<46} {b:9.1f}")
    print(f"{'evaluation loop (decode, predict, native count)':<46} {e:9.1f}")
    print(f"ratio evaluation / bare: {e / b:.2f} (goal >= 0.90)")


if __name__ == "__main__":
    main()
