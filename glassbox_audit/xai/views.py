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
import tensorflow as tf

__all__ = ["guided_relu", "guided_view", "layer_view", "logits_view"]

_LOGITS: "weakref.WeakKeyDictionary[keras.Model, keras.Model]" = weakref.WeakKeyDictionary()
_GUIDED: "weakref.WeakKeyDictionary[keras.Model, keras.Model]" = weakref.WeakKeyDictionary()
_LAYERS: "weakref.WeakKeyDictionary[keras.Model, dict]" = weakref.WeakKeyDictionary()


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


def guided_view(model: keras.Model) -> keras.Model:
    """A clone of :func:`logits_view` with :func:`guided_relu` in place of every ReLU."""
    base = logits_view(model)
    view = _GUIDED.get(model)
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
    _GUIDED[model] = view
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
