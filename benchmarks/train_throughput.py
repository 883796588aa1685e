"""Training throughput of the Attention U-Net: the real loop against the bare step, and fixes.

All in one run, on the same machine state, so the ratios are comparable:

* ``real``: the project's training loop as ``models/train.py::fit`` sets it up: uint8
  arrays -> ``tf.data`` (shuffle, /255, ``make_augment`` per sample, batch, prefetch) ->
  ``model.fit`` with the project loss and the Dice metric.
* ``bare``: the same compiled model fed the same batches, already augmented and held in
  memory (no per-sample work left), so the difference to ``real`` is the input pipeline.
* candidate fixes: augmentation done per batch in one graph op (``batched``: one
  projective transform per sample computed for the whole batch, covering flips, rot90,
  free rotation and scale/crop, plus batched colour jitter); the same with
  ``keras.layers.RandomRotation`` on the batch; batch sizes 8/16/32; thread settings
  (each in its own subprocess, since TensorFlow fixes them at start-up); base filters
  8/12/16; a stride-2 stem at full resolution in front of a U-Net at half resolution.

Each configuration trains a few warm-up steps (tracing excluded); then, round-robin over the
configurations of one process so a slow phase of the shared machine hits them all alike, each
gets ``--rounds`` timed windows of steady-state steps; the median is reported as images per
second and as the ratio to ``real`` measured in the same run.

    .venv/bin/python benchmarks/train_throughput.py            # the whole table (~8 min)
    .venv/bin/python benchmarks/train_throughput.py --quick    # fewer configurations
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, str(Path(__file__).resolve().parent))  # recipe_probe's batched augmentation

import numpy as np  # noqa: E402

log = logging.getLogger("train_throughput")

IMAGES = 256  # distinct images in the synthetic training stream (uint8, like load_arrays)


def _model(size: int, filters: int, stem: bool = False):
    from recipe_probe import build_model

    return build_model(size, filters, stem=stem, deep_supervision=False)[0]


def _compile(model):
    import keras

    from glassbox_audit.config import LossConfig
    from glassbox_audit.models.losses import dice_coefficient, make_loss

    # The loss, metric and optimizer of train.fit (base loss of configs/isic2017.toml).
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss=make_loss(LossConfig("dice", bce_weight=0.5)),
                  metrics=[dice_coefficient], jit_compile=False)
    return model


def _arrays(size: int, seed: int = 0):
    # Random content costs the same as real images here: every op is dense.
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 255, (IMAGES, size, size, 3), dtype=np.uint8)
    y = (rng.random((IMAGES, size, size, 1)) > 0.5).astype(np.float32)
    return x, y


def _pipeline(kind: str, size: int, batch: int):
    """The training ``tf.data`` stream of one kind (repeating)."""
    import tensorflow as tf

    from glassbox_audit.config import AugmentConfig
    from glassbox_audit.data.augment import make_augment
    from recipe_probe import augment_config, make_batch_augment

    x, y = _arrays(size)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(IMAGES, seed=0).repeat()
    if kind == "real":  # exactly train._datasets(training=True)
        ds = ds.map(lambda a, b: (tf.cast(a, tf.float32) / 255.0, b), num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.map(make_augment(AugmentConfig(), size), num_parallel_calls=tf.data.AUTOTUNE)
        return ds.batch(batch).prefetch(tf.data.AUTOTUNE)
    ds = ds.batch(batch, drop_remainder=True)
    if kind == "batched":  # one graph call per batch: affine warp + colour jitter
        aug = make_batch_augment(augment_config(180.0, 0.75), size)
        ds = ds.map(aug, num_parallel_calls=tf.data.AUTOTUNE)
    elif kind == "keras_layers":  # Keras preprocessing layers on the stacked image+mask batch
        import keras

        flip = keras.layers.RandomFlip("horizontal_and_vertical", seed=0)
        rot = keras.layers.RandomRotation(0.5, fill_mode="reflect", seed=0)
        zoom = keras.layers.RandomZoom((-0.25, 0.0), fill_mode="reflect", seed=0)

        def k_aug(a, b):
            both = tf.concat([tf.cast(a, tf.float32) / 255.0, b], axis=-1)
            both = zoom(rot(flip(both, training=True), training=True), training=True)
            return both[..., :3], both[..., 3:]

        ds = ds.map(k_aug, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        raise ValueError(kind)
    return ds.prefetch(tf.data.AUTOTUNE)


def _bare_stream(size: int, batch: int, steps: int):
    """Batches of the real pipeline, materialised once, replayed from memory."""
    import tensorflow as tf

    held = list(_pipeline("real", size, batch).take(steps))
    xs = tf.stack([b[0] for b in held])
    ys = tf.stack([b[1] for b in held])
    return tf.data.Dataset.from_tensor_slices((xs, ys)).repeat().prefetch(tf.data.AUTOTUNE)


class Runner:
    """One configuration: its model and stream, timed in windows of steady-state steps."""

    def __init__(self, cfg: dict):
        import keras

        keras.utils.set_random_seed(0)
        self.cfg = cfg
        size, batch = cfg["size"], cfg["batch"]
        self.model = _compile(_model(size, cfg["filters"], cfg.get("stem", False)))
        self.ds = _bare_stream(size, batch, 8) if cfg["pipeline"] == "bare" else _pipeline(cfg["pipeline"], size, batch)
        self.window(3)  # trace + warm up (excluded)
        t0 = time.perf_counter()
        self.window(2)
        self.per_step = (time.perf_counter() - t0) / 2
        self.samples: list[float] = []

    def window(self, steps: int) -> float:
        """Seconds for ``steps`` train steps from a fresh iterator, after one untimed step
        (so the pipeline is running, but has had no idle time to fill its buffer ahead)."""
        it = iter(self.ds)
        x, y = next(it)
        self.model.train_on_batch(x, y)
        t0 = time.perf_counter()
        for _ in range(steps):
            x, y = next(it)
            self.model.train_on_batch(x, y)
        return time.perf_counter() - t0

    def sample(self, seconds: float) -> None:
        steps = max(2, round(seconds / max(self.per_step, 1e-3)))
        self.samples.append(self.window(steps) / (steps * self.cfg["batch"]))

    def row(self) -> dict:
        ms = 1000 * float(np.median(self.samples))
        return {**self.cfg, "params": int(self.model.count_params()), "rounds": len(self.samples),
                "ms_per_img": ms, "img_per_s": 1000 / ms,
                "spread_ms": [round(1000 * min(self.samples), 1), round(1000 * max(self.samples), 1)]}


def measure_all(cfgs: list[dict], seconds: float, rounds: int) -> list[dict]:
    """Round-robin: every round times each configuration once, so slow phases of a shared
    machine hit all configurations alike; the median over rounds is reported."""
    runners = []
    for cfg in cfgs:
        runners.append(Runner(cfg))
        log.info("built %s (%.0f ms/step)", cfg["name"], 1000 * runners[-1].per_step)
    for r in range(rounds):
        for run in runners:
            run.sample(seconds / rounds)
        log.info("round %d/%d done", r + 1, rounds)
    return [run.row() for run in runners]


def configs(quick: bool) -> list[dict]:
    base = {"size": 128, "batch": 8, "filters": 12, "pipeline": "real", "threads": "default"}

    def c(**kw):
        return {**base, **kw}

    rows = [c(name="real (train.fit)"), c(name="bare step", pipeline="bare"),
            c(name="batched aug", pipeline="batched"), c(name="keras layers aug", pipeline="keras_layers")]
    rows += [c(name=f"batched aug b{b}", pipeline="batched", batch=b) for b in (16, 32)]
    if not quick:
        rows += [c(name="bare b32", pipeline="bare", batch=32)]
        rows += [c(name=f"batched aug f{f}", pipeline="batched", filters=f) for f in (8, 16)]
        rows += [c(name="batched 160px f12", pipeline="batched", size=160),
                 c(name="batched 192px f12", pipeline="batched", size=192),
                 c(name="batched 256px stem+128 f12", pipeline="batched", size=256, stem=True),
                 c(name="batched 192px stem+96 f12", pipeline="batched", size=192, stem=True)]
        for t in ("intra2-inter1", "intra1-inter2"):
            rows += [c(name=f"real {t}", threads=t), c(name=f"batched {t}", pipeline="batched", threads=t)]
    return rows


def _child(cfgs: list[dict], seconds: float, rounds: int) -> list[dict]:
    """Measure configurations in a fresh interpreter (thread settings apply at start-up)."""
    cmd = [sys.executable, __file__, "--child", json.dumps(cfgs), "--seconds", str(seconds),
           "--rounds", str(rounds)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines()[::-1]:
        if line.startswith("["):
            return json.loads(line)
    raise RuntimeError(f"child failed:\n{out.stderr[-3000:]}")


def _set_threads(spec: str) -> None:
    import tensorflow as tf

    if spec == "default":
        return
    intra, inter = (int(part[5:]) for part in spec.split("-"))
    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=12.0, help="timed seconds per configuration, all rounds")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, help="also write the rows as JSON lines here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.child:
        cfgs = json.loads(args.child)
        _set_threads(cfgs[0]["threads"])
        print(json.dumps(measure_all(cfgs, args.seconds, args.rounds)), flush=True)
        return
    groups: dict[str, list[dict]] = {}
    for cfg in configs(args.quick):
        groups.setdefault(cfg["threads"], []).append(cfg)
    rows = []
    for threads, cfgs in groups.items():
        t0 = time.perf_counter()
        rows += _child(cfgs, args.seconds, args.rounds)
        log.info("threads %s: %d configurations in %.0f s", threads, len(cfgs), time.perf_counter() - t0)
    ref = rows[0]["img_per_s"]
    print(f"\n{'configuration':<28} {'px':>4} {'b':>3} {'f':>3} {'params':>10} {'img/s':>7} "
          f"{'ms/img':>7} {'min-max':>11} {'x real':>7} {'min/epoch 1800':>15}")
    for r in rows:
        print(f"{r['name']:<28} {r['size']:>4} {r['batch']:>3} {r['filters']:>3} {r['params']:>10,} "
              f"{r['img_per_s']:>7.1f} {r['ms_per_img']:>7.1f} {r['spread_ms'][0]:>5.0f}-{r['spread_ms'][1]:<5.0f} "
              f"{r['img_per_s'] / ref:>7.2f} "
              f"{1800 / r['img_per_s'] / 60:>15.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        with args.json.open("a") as fh:
            for r in rows:
                fh.write(json.dumps({**r, "x_real": r["img_per_s"] / ref,
                                     "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
