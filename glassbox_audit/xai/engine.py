"""The batched engine every method runs on: row chunking and compiled model calls.

Work is described as *rows*: one row is one model input (an image, a noisy copy, a point
on an integration path, a perturbed image). :func:`chunked` is the one place rows are cut
into model calls of at most ``batch_size``; each call is a single ``tf.function`` graph
call, so 50 integration steps of 8 images cost ``ceil(400 / batch_size)`` graph calls and
no Python per step.

Compiled functions are cached per view (weakly, so a model dropped by the caller is freed)
and traced with ``None`` batch dimensions: chunk sizes and image counts change without
retracing.

Inside ``engine_options(jit_compile=True)``, the model passes (forward, and forward +
backward of the gradient methods) are also compiled by XLA (``tf.function(jit_compile=True)``): XLA fuses the
element-wise work around each convolution (batch normalisation, ReLU and their gradients)
and is faster on the CPU once compiled, but it compiles once per distinct chunk shape
(seconds each), so it pays off on long runs (many integration steps or noise samples),
not on a handful of images. Results agree with the non-XLA ones to float32 rounding.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TypeVar

import keras
import numpy as np
import tensorflow as tf

T = TypeVar("T")

# The compiled functions of each model view, by what they compute: made once, reused by every
# method and batch of a run (tests count their traces here).
COMPILED: "weakref.WeakKeyDictionary[keras.Model, dict]" = weakref.WeakKeyDictionary()
_BUILDERS = ("logits_function", "gradient_function", "layer_cam_function", "layer_output_function")
__all__ = ["COMPILED", "POST_PROCESSING", "EngineOptions", "chunked", "compiled", "current_options", "engine_options", "gradient_function",
           "layer_cam_function", "layer_output_function", "logits_function", "predict_logits"]


@dataclass(frozen=True)
class EngineOptions:
    """How model passes are run; set for a block with :func:`engine_options`.

    Attributes
    ----------
    jit_compile : bool
        Compile the forward passes and the forward + backward passes of the gradient methods
        with XLA.
    fold_batchnorm : bool
        Run the gradient methods on :func:`~glassbox_audit.xai.views.folded_view`: batch
        normalisations folded into their convolutions.
    """

    jit_compile: bool = False
    fold_batchnorm: bool = False


_OPTIONS: contextvars.ContextVar[EngineOptions] = contextvars.ContextVar("glassbox_xai_engine",
                                                                          default=EngineOptions())


def current_options() -> EngineOptions:
    """The :class:`EngineOptions` in force."""
    return _OPTIONS.get()


@contextlib.contextmanager
def engine_options(**changes: bool) -> Iterator[EngineOptions]:
    """Run the explanations computed inside this block with other :class:`EngineOptions`.

    Example::

        with engine_options(jit_compile=True, fold_batchnorm=True):
            maps = IntegratedGradients(model).explain(images, steps=50)
    """
    token = _OPTIONS.set(replace(_OPTIONS.get(), **changes))
    try:
        yield _OPTIONS.get()
    finally:
        _OPTIONS.reset(token)


class _OneTracePerView(logging.Filter):
    """Drop TensorFlow's "frequent retracing" warning for this module's functions only.

    TensorFlow counts traces per Python code object, so one trace for each of several views
    (variants, guided clones, randomised copies) reads to it like retracing. Each of these
    functions is traced once per view (``input_signature`` with ``None`` batch dimensions);
    the tests check the tracing counts.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not ("tf.function retracing" in msg and any(f"{b}.<locals>" in msg for b in _BUILDERS))


logging.getLogger("tensorflow").addFilter(_OneTracePerView())


def chunked(n_rows: int, batch_size: int, call: Callable[[slice], T]) -> list[T]:
    """Call ``call(rows)`` on consecutive slices covering ``range(n_rows)``.

    Slices hold at most ``batch_size`` rows and differ in size by at most one, so the
    last call is never a wasteful sliver (10 rows at 4 run as 3 + 4 + 3).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if n_rows <= 0:
        return []
    n_chunks = math.ceil(n_rows / batch_size)
    bounds = np.linspace(0, n_rows, n_chunks + 1).round().astype(int)
    return [call(slice(int(a), int(b))) for a, b in zip(bounds[:-1], bounds[1:])]


def compiled(view: keras.Model, key: tuple, build: Callable[[Callable[[], keras.Model]], Callable]) -> Callable:
    """The function ``build(get_view)`` made once per ``(view, key)``.

    ``build`` receives a zero-argument getter instead of the view: the traced function then
    holds the view weakly and the cache entry does not keep the model alive.
    """
    per_view = COMPILED.setdefault(view, {})
    fn = per_view.get(key)
    if fn is None:
        ref = weakref.ref(view)
        fn = build(ref)
        per_view[key] = fn
    return fn


def _spec(view: keras.Model) -> tuple[int | None, int | None, int | None]:
    shape = view.input_shape
    if isinstance(shape, list):
        shape = shape[0]
    return tuple(shape[1:4])  # type: ignore[return-value]


def _image_spec(view: keras.Model) -> tf.TensorSpec:
    return tf.TensorSpec([None, *_spec(view)], tf.float32)


def logits_function(view: keras.Model) -> Callable:
    """Compiled ``x (B, H, W, C) -> logits (B, H', W')`` (first output channel)."""

    jit = current_options().jit_compile

    def build(get):
        @tf.function(input_signature=[_image_spec(view)], jit_compile=jit)
        def fn(x):
            # float32 whatever the model computes in (float64 for exact checks, float16 mixed).
            return tf.cast(get()(x, training=False)[..., 0], tf.float32)

        return fn

    return compiled(view, ("logits", jit), build)


def predict_logits(view: keras.Model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """``(N, H', W')`` float32 logits of ``images`` in chunks of ``batch_size``."""
    fn = logits_function(view)
    parts = chunked(len(images), batch_size, lambda s: fn(images[s]).numpy())
    return np.concatenate(parts) if parts else np.zeros((0, *view.output_shape[1:3]), np.float32)


# How a gradient map is post-processed inside the compiled graph, as the integer flag it takes.
POST_PROCESSING = {"none": 0, "abs": 1, "square": 2}


def gradient_function(view: keras.Model) -> Callable:
    """Compiled per-chunk attribution: gradients of the region-weighted logits, summed per slot.

    ``fn(x_all, b_all, w_all, idx, seg, alpha, coef, n, noise, times_delta, post)``: row ``r``
    explains image ``idx[r]`` at the input ``b + alpha[r] * (x + noise[r] - b)`` (``b`` the
    baseline; with ``alpha = 1`` and a zero baseline that is the image itself, exactly).
    ``noise`` is ``(B, H, W, C)`` or a broadcast ``(1, 1, 1, 1)`` zero. The gradient is
    multiplied by ``x + noise - b`` when ``times_delta`` (integrated gradients), then
    ``abs``-ed or squared (``post`` = 1 or 2), weighted by ``coef[r]``, and summed into slot
    ``seg[r]`` of an ``(n, H, W, C)`` output (its image, or its image and noise sample when
    samples must stay apart). The second output is each row's target value (region-mean
    logit).

    The options are tensors, not Python flags, so every gradient method of a view shares
    this one trace. With ``jit_compile`` (:class:`EngineOptions`) the forward and backward pass is one XLA
    function (the segment sum, whose output size is a runtime value, stays outside it).
    """
    spec = _image_spec(view)
    h_out, w_out = view.output_shape[1:3]
    signature = [spec, spec, tf.TensorSpec([None, h_out, w_out], tf.float32),
                 tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.int32),
                 tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.float32),
                 tf.TensorSpec([], tf.int32), tf.TensorSpec([None, None, None, None], tf.float32),
                 tf.TensorSpec([], tf.bool), tf.TensorSpec([], tf.int32)]

    jit = current_options().jit_compile

    def build(get):
        @tf.function(jit_compile=jit)
        def passes(inputs, w):
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                logits = tf.cast(get()(inputs, training=False)[..., 0], tf.float32)
                values = tf.reduce_sum(logits * w, axis=[1, 2])
                # Images are independent at inference, so the gradient of the sum is each
                # row's own gradient: one backward pass for the whole chunk.
                total = tf.reduce_sum(values)
            return tape.gradient(total, inputs), values

        @tf.function(input_signature=signature)
        def fn(x_all, b_all, w_all, idx, seg, alpha, coef, n, noise, times_delta, post):
            x = tf.gather(x_all, idx) + noise
            b = tf.gather(b_all, idx)
            inputs = b + alpha[:, None, None, None] * (x - b)
            g, values = passes(inputs, tf.gather(w_all, idx))
            g = tf.cond(times_delta, lambda: g * (x - b), lambda: g)
            g = tf.switch_case(post, [lambda: g, lambda: tf.abs(g), lambda: g * g])
            g = g * coef[:, None, None, None]
            return tf.math.unsorted_segment_sum(g, seg, n), values

        return fn

    return compiled(view, ("gradient", jit), build)


def layer_cam_function(view: keras.Model, names: tuple[str, ...]) -> Callable:
    """Compiled Grad-CAM of the named layers: ``(x, w) -> (B, L, H, W)`` non-normalised maps.

    For a layer output ``A`` (h x w x K) and target ``F``: channel weights are the spatial
    mean of ``dF/dA``; the map is ``relu(sum_k weight_k A_k)``, resized bilinearly to the
    input size. All layers share one forward and one backward pass.
    """
    from .views import layer_view

    sub = layer_view(view, names)
    h_out, w_out = view.output_shape[1:3]
    signature = [_image_spec(view), tf.TensorSpec([None, h_out, w_out], tf.float32)]

    def build(get):
        @tf.function(input_signature=signature)
        def fn(x, w):
            size = tf.shape(x)[1:3]
            with tf.GradientTape() as tape:
                *acts, logits = sub(x, training=False)
                total = tf.reduce_sum(tf.cast(logits[..., 0], tf.float32) * w)
            grads = tape.gradient(total, acts)
            cams = []
            for a, g in zip(acts, grads):
                if g is None:  # a layer the target does not depend on explains nothing
                    g = tf.zeros_like(a)
                weights = tf.reduce_mean(g, axis=[1, 2], keepdims=True)
                cam = tf.cast(tf.nn.relu(tf.reduce_sum(weights * a, axis=-1, keepdims=True)), tf.float32)
                cams.append(tf.image.resize(cam, size, method="bilinear")[..., 0])
            return tf.stack(cams, axis=1)

        return fn

    return compiled(view, ("cam", names), build)


def layer_output_function(view: keras.Model, names: tuple[str, ...]) -> Callable:
    """Compiled ``x -> (B, L, H, W)``: the named 1-channel layer outputs at input size."""
    from .views import layer_view

    sub = layer_view(view, names)

    def build(get):
        @tf.function(input_signature=[_image_spec(view)])
        def fn(x):
            size = tf.shape(x)[1:3]
            *acts, _ = sub(x, training=False)
            maps = [tf.image.resize(tf.cast(a[..., :1], tf.float32), size, method="bilinear")[..., 0] for a in acts]
            return tf.stack(maps, axis=1)

        return fn

    return compiled(view, ("outputs", names), build)
