"""Model views the explanations run on: pre-sigmoid logits, and guided-ReLU gradients.

A *view* is a Keras model computing the same function as the model it comes from, changed
only where an explanation needs it:

* :func:`logits_view` returns the pre-activation output. Models built by
  ``glassbox_audit.models.unet`` already end in a linear ``logits`` layer and are returned
  as they are. A model whose last layer applies a sigmoid gets a clone whose last activation
  is linear (a trailing ``Activation("sigmoid")`` layer is cut off instead). Explanations of
  logits do not saturate where the sigmoid is flat at 0 or 1.
* :func:`guided_view` returns a clone of the logits view in which every ReLU (``Activation``
  layers, ReLU activations inside ``Conv2D``/``Dense``, and plain ``ReLU`` layers) is
  :func:`guided_relu`, whose gradient passes only positive gradients through positive
  inputs (Springenberg et al., 2015). Keras 3 has no gradient-override registry, so the rule
  lives in a ``tf.custom_gradient`` activation instead.

* With ``fold_batchnorm=True`` both views are made from a clone in which every
  ``BatchNormalization`` that directly follows a linear ``Conv2D`` (its only consumer) is
  folded into that convolution's kernel and bias: at inference, batch normalisation is a
  fixed per-channel affine map, so the function is the same (to float32 rounding) and its
  gradients too, with one layer (and its gradient) less per block. The folded layer stays in
  the graph as a pass-through under its own name, so layer names (Grad-CAM) still resolve.

Clones are made once per model and hold a copy of its weights, refreshed from the model on
every call of :func:`logits_view` / :func:`guided_view`, so a model trained further or
re-randomised after a first explanation is explained with its current weights.

Example::

    view = logits_view(model)          # the model itself for a U-Net ending in logits
    guided = guided_view(model)        # same forward values, guided-ReLU gradients
"""

from __future__ import annotations

import weakref

import keras
import numpy as np
import tensorflow as tf

__all__ = ["folded_view", "guided_relu", "guided_view", "layer_view", "logits_view"]

_LOGITS: "weakref.WeakKeyDictionary[keras.Model, keras.Model]" = weakref.WeakKeyDictionary()
_GUIDED: "weakref.WeakKeyDictionary[keras.Model, keras.Model]" = weakref.WeakKeyDictionary()
_LAYERS: "weakref.WeakKeyDictionary[keras.Model, dict]" = weakref.WeakKeyDictionary()
_FOLDED: "weakref.WeakKeyDictionary[keras.Model, keras.Model]" = weakref.WeakKeyDictionary()
_GUIDED_FOLDED: "weakref.WeakKeyDictionary[keras.Model, keras.Model]" = weakref.WeakKeyDictionary()


@tf.custom_gradient
def guided_relu(x):
    """ReLU whose gradient is ``dy * (x > 0) * (dy > 0)``: only positive signals flow back."""
    y = tf.nn.relu(x)

    def grad(dy):
        return dy * tf.cast(x > 0, dy.dtype) * tf.cast(dy > 0, dy.dtype)

    return y, grad


def _activation_name(layer) -> str | None:
    act = getattr(layer, "activation", None)
    return getattr(act, "__name__", None) if act is not None else None


def _single_input(model: keras.Model):
    # A one-input functional model called with a bare tensor wants its input unwrapped.
    return model.inputs[0] if len(model.inputs) == 1 else model.inputs


def _clone(model: keras.Model, change) -> keras.Model:
    def clone_layer(layer):
        new = layer.__class__.from_config(layer.get_config())
        return change(layer, new)

    clone = keras.models.clone_model(model, clone_function=clone_layer)
    clone.set_weights(model.get_weights())
    return clone


def _sync(view: keras.Model, source: keras.Model) -> keras.Model:
    view.set_weights(source.get_weights())
    return view


def logits_view(model: keras.Model) -> keras.Model:
    """The model up to its pre-sigmoid output (the model itself when it already ends in logits).

    Parameters
    ----------
    model : keras.Model
        A functional model whose output is ``(N, H, W, 1)`` logits or probabilities.

    Returns
    -------
    keras.Model
        ``model`` itself, a sub-model sharing its weights (trailing ``Activation`` layer), or
        a clone with a linear last activation whose weights are refreshed from ``model``.
    """
    last = model.layers[-1]
    if _activation_name(last) != "sigmoid":
        return model
    view = _LOGITS.get(model)
    if view is None:
        if isinstance(last, keras.layers.Activation):
            view = keras.Model(_single_input(model), last.input, name=f"{model.name}_logits")
        else:
            def linear_last(old, new):
                if old is last:
                    new.activation = keras.activations.linear
                return new

            view = _clone(model, linear_last)
        _LOGITS[model] = view
        return view
    return view if isinstance(last, keras.layers.Activation) else _sync(view, model)


class FoldedNormalization(keras.layers.Layer):
    """Where a batch normalisation folded into the convolution before it stood: passes its input on."""

    def call(self, inputs, training=None, mask=None):
        return inputs


def _folds(model: keras.Model) -> dict[str, keras.layers.BatchNormalization]:
    """Convolution name -> the batch normalisation that can be folded into it."""
    out = {}
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization) or layer.axis not in (-1, 3):
            continue
        history = getattr(layer.input, "_keras_history", None)
        conv = history.operation if history is not None else None
        # Only when the convolution's raw output feeds nothing else, and nothing sits between.
        if (isinstance(conv, keras.layers.Conv2D) and conv.data_format == "channels_last"
                and _activation_name(conv) == "linear" and len(conv._outbound_nodes) == 1):
            out[conv.name] = layer
    return out


def _fold_weights(source: keras.Model, view: keras.Model, folds: dict) -> keras.Model:
    folded_norms = {bn.name for bn in folds.values()}
    for layer in source.layers:
        if layer.name in folded_norms or not layer.weights:
            continue
        target = view.get_layer(layer.name)
        if layer.name not in folds:
            target.set_weights(layer.get_weights())
            continue
        bn = folds[layer.name]
        c = int(layer.filters)
        gamma = np.asarray(bn.gamma.numpy(), np.float64) if bn.scale else np.ones(c)
        beta = np.asarray(bn.beta.numpy(), np.float64) if bn.center else np.zeros(c)
        mean = np.asarray(bn.moving_mean.numpy(), np.float64)
        scale = gamma / np.sqrt(np.asarray(bn.moving_variance.numpy(), np.float64) + bn.epsilon)
        bias = np.asarray(layer.bias.numpy(), np.float64) if layer.use_bias else 0.0
        dtype = layer.kernel.dtype
        target.set_weights([(np.asarray(layer.kernel.numpy(), np.float64) * scale).astype(dtype),
                            ((bias - mean) * scale + beta).astype(dtype)])
    return view


def folded_view(model: keras.Model) -> keras.Model:
    """:func:`logits_view` with batch normalisations folded into their convolutions (inference only).

    Returns the logits view itself when there is nothing to fold.
    """
    base = logits_view(model)
    folds = _folds(base)
    if not folds:
        return base
    view = _FOLDED.get(model)
    if view is None:
        folded_norms = {bn.name for bn in folds.values()}

        def clone_layer(layer):
            if layer.name in folded_norms:
                return FoldedNormalization(name=layer.name, dtype=layer.dtype_policy.name)
            config = layer.get_config()
            if layer.name in folds:
                config["use_bias"] = True
            return layer.__class__.from_config(config)

        view = keras.models.clone_model(base, clone_function=clone_layer)
        _FOLDED[model] = view
    return _fold_weights(base, view, folds)


def guided_view(model: keras.Model, fold_batchnorm: bool = False) -> keras.Model:
    """A clone of :func:`logits_view` (or :func:`folded_view`) with :func:`guided_relu` in place of every ReLU."""
    base = folded_view(model) if fold_batchnorm else logits_view(model)
    cache = _GUIDED_FOLDED if fold_batchnorm else _GUIDED
    view = cache.get(model)
    if view is not None:
        return _sync(view, base)

    def guide(old, new):
        if isinstance(old, keras.layers.ReLU):
            cfg = old.get_config()
            if cfg.get("max_value") is None and not cfg.get("negative_slope") and not cfg.get("threshold"):
                return keras.layers.Activation(guided_relu, name=old.name)
        if _activation_name(old) == "relu":
            new.activation = guided_relu
        return new

    view = _clone(base, guide)
    cache[model] = view
    return view


def layer_view(view: keras.Model, names: tuple[str, ...]) -> keras.Model:
    """A model sharing ``view``'s weights that returns the named layers' outputs, then the output."""
    per_view = _LAYERS.setdefault(view, {})
    sub = per_view.get(names)
    if sub is None:
        outputs = [view.get_layer(n).output for n in names] + [view.output]
        sub = keras.Model(_single_input(view), outputs, name=f"{view.name}_layers")
        per_view[names] = sub
    return sub
