"""XAI speed: each method against the naive eager reference and the batched floor, same run.

One batch of 8 images at 128 px, one ``build_attention_unet(128, depth=4, base_filters=16)``
(about 2.2 M parameters, the size of the anchor models), and for each method three timings:

* **naive**: what a straightforward port does, one ``tf.GradientTape`` (or one eager model
  call) per image and per integration step / noise sample, in eager mode;
* **ours**: the ``glassbox_audit.xai`` class, one ``explain`` call on the batch;
* **floor**: the same number of forward (+ backward) passes as bare compiled batched calls
  on inputs already built in memory, with nothing else: no target, no noise, no
  interpolation, no bookkeeping. One call for all 400 rows of integrated gradients would
  need about 20 GB, so the floor uses the same chunk size as ours.

All three are warmed up first (tracing is not timed; the first call of ours is printed as
"1st s", which includes tracing and, with XLA, compiling), then timed in ``--rounds``
interleaved rounds (naive, ours, floor, naive, ...), keeping each one's best time, so that
load from other processes on a shared machine does not land on one of them only. The naive
path of integrated gradients and SmoothGrad is timed on ``--naive-images`` images and
extrapolated linearly to the batch; the table says so. Targets: integrated gradients (50 steps) and SmoothGrad
(50 samples) at least 10x faster than naive and within 1.5x of the floor.

``--variants`` also times the gradient methods with engine options
(:class:`glassbox_audit.xai.EngineOptions`): ``fold`` (batch normalisation folded into the
convolutions), ``xla`` (XLA-compiled passes), ``fold+xla``. Each variant's floor uses the
same option, so "/ floor" compares like with like; "plain floor" is the floor without it,
and the naive reference is always the plain eager loop.

    python benchmarks/xai_bench.py
    python benchmarks/xai_bench.py --only integrated_gradients,smoothgrad --variants plain,fold,xla
    python benchmarks/xai_bench.py --naive-images 8      # no extrapolation (slow)

``--audit --before REV`` times the default audit's explanation stage as a whole instead (every
method and check, three variants, the batches the dossier explains) with the code of ``REV``
and with this checkout's, in one run, and checks that every map and check value is the same
(``benchmarks/xai_audit.py``):

    python benchmarks/xai_bench.py --audit --before HEAD~1
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from skimage.segmentation import slic  # noqa: E402

from glassbox_audit.models.unet import build_attention_unet  # noqa: E402
from glassbox_audit.xai import (AttentionMaps, GradCAM, GuidedBackprop, IntegratedGradients,  # noqa: E402
                                LayerGradCAM, Saliency, SmoothGrad, SuperpixelConfidence, attention_layers,
                                default_cam_layer, engine_options, folded_view, group_layers, guided_view,
                                target_region)
from glassbox_audit.xai.maths import integration_nodes  # noqa: E402

SIZE, N = 128, 8
VARIANTS = {"plain": {}, "fold": {"fold_batchnorm": True}, "xla": {"jit_compile": True},
            "fold+xla": {"fold_batchnorm": True, "jit_compile": True}}
GRADIENT_METHODS = ("saliency", "guided_backprop", "integrated_gradients", "smoothgrad")


def _images(n: int, size: int) -> np.ndarray:
    """Dark irregular blobs on textured skin tones: enough structure for every method."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size] / size
    out = []
    for _ in range(n):
        skin = np.array([0.85, 0.68, 0.58]) + rng.normal(0, 0.04, 3)
        img = np.broadcast_to(skin, (size, size, 3)).copy() + rng.normal(0, 0.03, (size, size, 3))
        cy, cx, r = rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65), rng.uniform(0.12, 0.25)
        angle = np.arctan2(yy - cy, xx - cx)
        radius = r * (1 + 0.15 * np.sin(3 * angle + rng.uniform(0, 6)))
        lesion = (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2
        img[lesion] = img[lesion] * 0.45 + np.array([0.25, 0.12, 0.08])
        out.append(np.clip(img, 0, 1))
    return np.stack(out).astype(np.float32)


def _timed(fn, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


# --------------------------------------------------------------------------- naive references


def _naive_grad(model, x1: np.ndarray, w1: np.ndarray) -> np.ndarray:
    x1 = tf.convert_to_tensor(x1[None])
    with tf.GradientTape() as tape:
        tape.watch(x1)
        f = tf.reduce_sum(model(x1, training=False)[0, ..., 0] * w1)
    return tape.gradient(f, x1).numpy()[0]


def naive_saliency(model, x, w):
    return np.stack([np.abs(_naive_grad(model, x[i], w[i])).max(-1) for i in range(len(x))])


def naive_ig(model, x, w, steps):
    alphas, weights = integration_nodes(steps)
    maps = []
    for i in range(len(x)):
        total = np.zeros_like(x[i])
        for a, wt in zip(alphas, weights):  # black baseline
            total += wt * _naive_grad(model, a * x[i], w[i])
        maps.append((total * x[i]).sum(-1))
    return np.stack(maps)


def naive_smoothgrad(model, x, w, samples, noise):
    maps = []
    for i in range(len(x)):
        sigma = noise * (x[i].max() - x[i].min())
        total = np.zeros_like(x[i])
        for s in range(samples):
            eps = np.random.default_rng([0, i, s]).standard_normal(x[i].shape, np.float32) * sigma
            total += np.abs(_naive_grad(model, x[i] + eps, w[i])) / samples
        maps.append(total.max(-1))
    return np.stack(maps)


def naive_gradcam(model, x, w, layers):
    sub = keras.Model(model.input, [model.get_layer(n).output for n in layers] + [model.output])
    maps = []
    for i in range(len(x)):
        xi = tf.convert_to_tensor(x[i:i + 1])
        per_layer = []
        for k in range(len(layers)):  # one tape per image and layer, as a per-layer loop would
            with tf.GradientTape() as tape:
                *acts, out = sub(xi, training=False)
                f = tf.reduce_sum(out[0, ..., 0] * w[i])
            g = tape.gradient(f, acts[k])
            cam = tf.nn.relu(tf.reduce_sum(tf.reduce_mean(g, axis=[1, 2], keepdims=True) * acts[k], -1))
            per_layer.append(tf.image.resize(cam[..., None], (SIZE, SIZE))[0, ..., 0].numpy())
        maps.append(per_layer)
    return maps


def naive_attention(model, x):
    names = attention_layers(model)
    sub = keras.Model(model.input, [model.get_layer(n).output for n in names])
    return [[tf.image.resize(a, (SIZE, SIZE)).numpy() for a in sub(x[i:i + 1], training=False)] for i in range(len(x))]


def naive_superpixel(model, x, n_segments):
    out = []
    for i in range(len(x)):
        p = tf.sigmoid(model(x[i:i + 1], training=False))[0, ..., 0].numpy()
        labels = slic(x[i].astype(np.float64), n_segments=n_segments, channel_axis=-1, start_label=0)
        conf = np.zeros_like(p)
        for k in np.unique(labels):  # one mask per superpixel
            conf[labels == k] = np.abs(2 * p[labels == k] - 1).mean()
        out.append(conf)
    return np.stack(out)


# --------------------------------------------------------------------------- floor


def floor_gradient(model, rows: np.ndarray, batch_size: int, jit_compile: bool = False):
    """Bare compiled batched forward+backward passes over ``rows`` inputs (warmed up; call to run)."""

    @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)], jit_compile=jit_compile)
    def grad(xb):
        with tf.GradientTape() as tape:
            tape.watch(xb)
            f = tf.reduce_sum(model(xb, training=False))
        return tape.gradient(f, xb)

    chunks = [tf.constant(rows[i:i + batch_size]) for i in range(0, len(rows), batch_size)]
    for size in {len(c) for c in chunks}:
        grad(chunks[[len(c) for c in chunks].index(size)])  # warm-up per shape
    return lambda: [grad(c).numpy() for c in chunks]


def floor_forward(model, rows: np.ndarray, batch_size: int, outputs=None):
    sub = model if outputs is None else keras.Model(model.input, outputs)

    @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
    def fwd(xb):
        return sub(xb, training=False)

    chunks = [tf.constant(rows[i:i + batch_size]) for i in range(0, len(rows), batch_size)]
    fwd(chunks[0])
    return lambda: [tf.nest.map_structure(lambda t: t.numpy(), fwd(c)) for c in chunks]


def floor_layer_gradient(model, x: np.ndarray, layers: list[str], batch_size: int):
    sub = keras.Model(model.input, [model.get_layer(n).output for n in layers] + [model.output])

    @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
    def grad(xb):
        with tf.GradientTape() as tape:
            *acts, out = sub(xb, training=False)
            f = tf.reduce_sum(out)
        return tape.gradient(f, acts)

    chunks = [tf.constant(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    grad(chunks[0])
    return lambda: [[g.numpy() for g in grad(c)] for c in chunks]


# --------------------------------------------------------------------------- main


def _gradient_view(model, guided: bool, options: dict):
    """The model the floor runs a variant on: the same view ours uses under those options."""
    fold = options.get("fold_batchnorm", False)
    if guided:
        return guided_view(model, fold_batchnorm=fold)
    return folded_view(model) if fold else model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=50, help="integrated-gradients steps")
    ap.add_argument("--samples", type=int, default=50, help="SmoothGrad samples")
    ap.add_argument("--batch-size", type=int, default=16, help="rows per model call (ours and floor)")
    ap.add_argument("--naive-images", type=int, default=1,
                    help="images the naive IG / SmoothGrad loops run on (then extrapolated to 8)")
    ap.add_argument("--only", default="", help="comma-separated methods to run (default: all)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="timed rounds of naive, ours and floor, interleaved; the best of each is kept")
    ap.add_argument("--variants", default="plain",
                    help=f"comma-separated engine options for the gradient methods: {', '.join(VARIANTS)}")
    ap.add_argument("--audit", action="store_true",
                    help="time the default audit's explanation stage, before (--before) and after")
    ap.add_argument("--before", default="HEAD", help="with --audit: the git revision to compare with")
    ap.add_argument("--json", type=Path, help="with --audit: write the figures here")
    args = ap.parse_args()
    if args.audit:
        import xai_audit

        raise SystemExit(xai_audit.main(args.before, max(1, args.rounds // 2), args.json))
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant {unknown[0]!r}; known: {', '.join(VARIANTS)}")

    keras.utils.set_random_seed(0)
    model = build_attention_unet(SIZE, depth=4, base_filters=16)
    x = _images(N, SIZE)
    bs = args.batch_size
    region = target_region(model, x, batch_size=bs)
    w = region.weights
    cam_layer = default_cam_layer(model)
    groups = ["encoder", "bottleneck", "attention", "decoder", "output"]
    group_members = [n for g in groups for n in group_layers(model, g)]
    k = max(1, min(N, args.naive_images))
    rows_ig = np.concatenate([a * x for a in integration_nodes(args.steps)[0]])
    rows_sg = np.repeat(x, args.samples, axis=0)
    guided = guided_view(model)

    # name -> (naive thunk, images the naive thunk covers, ours thunk, floor(options) thunk, passes)
    cases = {
        "saliency": (lambda: naive_saliency(model, x, w), N,
                     lambda: Saliency(model).explain(x, region, batch_size=bs),
                     lambda o: floor_gradient(_gradient_view(model, False, o), x, bs, **_jit(o)), f"{N} fwd+bwd"),
        "guided_backprop": (lambda: naive_saliency(guided, x, w), N,
                            lambda: GuidedBackprop(model).explain(x, region, batch_size=bs),
                            lambda o: floor_gradient(_gradient_view(model, True, o), x, bs, **_jit(o)),
                            f"{N} fwd+bwd"),
        "integrated_gradients": (lambda: naive_ig(model, x[:k], w[:k], args.steps), k,
                                 lambda: IntegratedGradients(model).explain(x, region, steps=args.steps,
                                                                            batch_size=bs),
                                 lambda o: floor_gradient(_gradient_view(model, False, o), rows_ig, bs, **_jit(o)),
                                 f"{N * args.steps} fwd+bwd"),
        "smoothgrad": (lambda: naive_smoothgrad(model, x[:k], w[:k], args.samples, 0.15), k,
                       lambda: SmoothGrad(Saliency(model)).explain(x, region, samples=args.samples, noise=0.15,
                                                                   batch_size=bs),
                       lambda o: floor_gradient(_gradient_view(model, False, o), rows_sg, bs, **_jit(o)),
                       f"{N * args.samples} fwd+bwd"),
        "gradcam": (lambda: naive_gradcam(model, x, w, [cam_layer]), N,
                    lambda: GradCAM(model).explain(x, region, layer=cam_layer, batch_size=bs),
                    lambda o: floor_layer_gradient(model, x, [cam_layer], bs), f"{N} fwd+bwd"),
        "layer_gradcam (5 groups)": (lambda: naive_gradcam(model, x, w, group_members), N,
                                     lambda: LayerGradCAM(model).explain(x, region, groups=groups, batch_size=bs),
                                     lambda o: floor_layer_gradient(model, x, group_members, bs),
                                     f"{N} fwd+bwd ({len(group_members)} layers)"),
        "attention": (lambda: naive_attention(model, x), N,
                      lambda: AttentionMaps(model).explain(x, batch_size=bs),
                      lambda o: floor_forward(model, x, bs,
                                              [model.get_layer(n).output for n in attention_layers(model)]),
                      f"{N} fwd"),
        "superpixel (200)": (lambda: naive_superpixel(model, x, 200), N,
                             lambda: SuperpixelConfidence(model).explain(x, n_segments=200, batch_size=bs),
                             lambda o: floor_forward(model, x, bs), f"{N} fwd (+ SLIC)"),
    }
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    print(f"xai benchmark: {N} images at {SIZE} px, attention U-Net depth 4 / 16 filters "
          f"({model.count_params():,} parameters), batch_size {bs}, {os.cpu_count()} CPUs, "
          f"TensorFlow {tf.__version__}, Keras {keras.__version__}")
    header = (f"{'method':<26} {'variant':<9} {'passes':<22} {'naive s':>9} {'1st s':>7} {'ours s':>8} "
              f"{'floor s':>8} {'plain floor s':>13} {'vs naive':>9} {'/ floor':>8}")
    print(header)
    print("-" * len(header))
    results = {}
    for name, (naive, covered, ours, floor, passes) in cases.items():
        if only and not any(name.startswith(o) for o in only):
            continue
        run = variants if name in GRADIENT_METHODS else ["plain"]
        naive()  # warm-up: eager kernels and the sub-models' first calls
        floors = {v: floor(VARIANTS[v]) for v in dict.fromkeys(["plain", *run])}  # traced and warmed up
        first = {}
        for v in run:
            with engine_options(**VARIANTS[v]):
                first[v] = _timed(ours)  # traces (and with XLA compiles) our functions
        # Rounds interleave naive, ours and floor, and keep each one's best time: a burst of
        # load from other processes then spoils one round of one of them, not the ratio.
        best: dict = {}
        for _ in range(args.rounds):
            best["naive"] = min(best.get("naive", float("inf")), _timed(naive))
            for v, thunk in floors.items():
                if v in run:
                    with engine_options(**VARIANTS[v]):
                        best[v] = min(best.get(v, float("inf")), _timed(ours))
                best[f"floor {v}"] = min(best.get(f"floor {v}", float("inf")), _timed(thunk))
        t_naive = best["naive"] * N / covered
        mark = "*" if covered < N else " "
        t_plain_floor = best["floor plain"]
        for v in run:
            t_ours, t_floor = best[v], best[f"floor {v}"]
            results[(name, v)] = (t_naive, t_ours, t_floor)
            print(f"{name:<26} {v:<9} {passes:<22} {t_naive:8.2f}{mark} {first[v]:7.2f} {t_ours:8.2f} "
                  f"{t_floor:8.2f} {t_plain_floor:13.2f} {t_naive / t_ours:8.1f}x {t_ours / t_floor:7.2f}x",
                  flush=True)
    if any(c < N for _, c, *_ in cases.values()):
        print(f"* naive timed on {k} of {N} images and extrapolated linearly (x{N / k:g}): one tape per image "
              f"per step costs the same for every image")
    for (name, variant), (t_naive, t_ours, t_floor) in results.items():
        if name in ("integrated_gradients", "smoothgrad"):
            ok = t_naive / t_ours >= 10 and t_ours / t_floor <= 1.5
            print(f"target {name} [{variant}]: >= 10x vs naive ({t_naive / t_ours:.1f}x) and <= 1.5x floor "
                  f"({t_ours / t_floor:.2f}x): {'met' if ok else 'NOT met'}")


def _jit(options: dict) -> dict:
    return {"jit_compile": options.get("jit_compile", False)}


if __name__ == "__main__":
    main()
