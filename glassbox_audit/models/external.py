"""Models trained elsewhere: loaded safely, their contract discovered and checked, adapted to
the audit's input, and stored beside our own models so every stage treats them alike.

A team brings a Keras 3 ``.keras`` file or a legacy ``.h5``. :func:`load_external` then

1. refuses, in one line, a file that is not a Keras model, and a model that needs custom code
   (a ``Lambda`` layer or a class from outside Keras) unless ``unsafe`` (``--unsafe-load``);
2. discovers the contract from the model and checks it: one input ``(H, W, C)`` with C = 1 or 3
   (1-channel models get grayscale input), one output, a single-channel map the size of the
   input or a fixed fraction of it, ending in a sigmoid or in no activation (logits); the
   activation is read from the graph and confirmed on the test images (their range goes into
   the card, with a note when logits never leave [0, 1]);
3. builds the *adapted* model the audit runs: the audit's RGB input in [0, 1] at
   ``model.input_size``, resized to the model's own size, made grey where the model wants one
   channel, preprocessed as the model expects (``preprocess``), then the model's own layers
   (inlined, so layer-wise Grad-CAM can address them), its final sigmoid cut off (the logits
   view every explanation method needs: "output layer adjustment for pre-sigmoid raw logit
   access"), and its output resized back to the input size when it was a fraction of it;
4. stores the adapted model in the model store (``<models_dir>/external/``) with a card marked
   "external: training not audited", keyed by the file's sha256 and the adapter settings, and
   loads it back hash-checked like any stored model (so a Dask worker loads it the same way).

A path to one of our own stored models (``model.keras`` with its ``card.json``) is loaded as
that stored model, with its training card.
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..config import AuditConfig, ExternalModelConfig
from ..data.imageio import sha256_file
from ..errors import ModelError
from .registry import StoredModel, find_model, load_model, model_key, save_model
from .unet import ADAPTER_PREFIX

__all__ = ["ADAPTER_VERSION", "adapt", "check_contract", "confirm_output", "external_models", "first_test_batch",
           "load_external", "preprocessing_text", "unsafe_parts"]

log = logging.getLogger(__name__)

# Bump when the adapter's layers change what an adapted model computes.
ADAPTER_VERSION = 1
_GREY = np.array([[0.299], [0.587], [0.114]], np.float32)  # ITU-R BT.601 luma, as OpenCV's RGB2GRAY
_ALLOWED_ACTIVATIONS = ("sigmoid", "linear")


def preprocessing_text(entry: ExternalModelConfig) -> str:
    """How the adapter prepares an image for the model, as the dossier prints it."""
    if entry.preprocess == "symmetric":
        return "RGB scaled to [-1, 1] (2x - 1)"
    if entry.preprocess == "standardize":
        return f"RGB in [0, 1], standardised per channel: (x - {entry.mean}) / {entry.std}"
    return "RGB scaled to [0, 1]"


def _config_json(path: Path) -> dict[str, Any]:
    """The model's architecture as saved, read without building anything."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            if "config.json" not in zf.namelist():
                raise ModelError(f"{path}: a zip file without config.json, not a Keras model")
            return json.loads(zf.read("config.json"))
    try:
        import h5py

        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
    except OSError:
        raw = None
    if raw is None:
        raise ModelError(f"{path}: not a Keras model file (expected a .keras zip or a legacy .h5 with a model config)")
    return json.loads(raw.decode() if isinstance(raw, bytes) else raw)


def _keras_class(name: str) -> bool:
    import keras

    return name in ("Functional", "Model", "Sequential") or any(
        hasattr(ns, name) for ns in (keras.layers, keras.initializers, keras.regularizers, keras.constraints,
                                     keras.activations, keras.dtype_policies))


def unsafe_parts(config: dict[str, Any]) -> list[str]:
    """The parts of a saved model that need code from outside Keras to load: Lambda layers
    (Python bytecode) and classes from other packages (a registered name ``package>Class``,
    a module outside Keras, or in a legacy .h5 a class name Keras does not know)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            cls, module, registered = node.get("class_name"), node.get("module"), node.get("registered_name")
            if isinstance(cls, str):
                inner = node.get("config")
                name = inner.get("name", "?") if isinstance(inner, dict) else "?"
                if cls in ("Lambda", "TFOpLambda"):
                    found.append(f"Lambda layer {name!r}")
                elif cls == "__lambda__":  # a Python function saved as bytecode (a custom activation)
                    found.append("a Python function saved as bytecode")
                elif cls.startswith("__"):  # the format's own markers: tensors, arrays, bytes
                    pass
                elif (isinstance(registered, str) and ">" in registered) or \
                        (isinstance(module, str) and not module.startswith("keras")) or \
                        ("module" not in node and not _keras_class(cls)):
                    found.append(f"custom object {registered or cls} ({name!r})")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return list(dict.fromkeys(found))


def _load_keras(path: Path, unsafe: bool):
    import keras

    try:
        return keras.models.load_model(path, compile=False, safe_mode=not unsafe)
    except Exception as exc:  # Keras raises ValueError, TypeError, OSError... for files it cannot load
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = "" if unsafe else " (if it needs custom code, --unsafe-load runs it)"
        raise ModelError(f"{path}: Keras cannot load this model: {first[:300]}{hint}") from None


def _activation(layer) -> str:
    """The activation a layer ends in: its ``activation``, an activation layer's own kind, or
    "linear" for layers that pass values on (Add, Concatenate, Resizing, ...)."""
    import keras

    for kind in (keras.layers.ReLU, keras.layers.Softmax, keras.layers.LeakyReLU, keras.layers.ELU,
                 keras.layers.PReLU):
        if isinstance(layer, kind):
            return kind.__name__.lower()
    act = getattr(layer, "activation", None)
    return getattr(act, "__name__", str(act)) if act is not None else "linear"


def check_contract(model, path: Path) -> dict[str, Any]:
    """Input and output shapes and the output activation, checked against what the audit can score."""
    if len(model.inputs) != 1:
        raise ModelError(f"{path}: the model has {len(model.inputs)} inputs; an audit feeds one image")
    if len(model.outputs) != 1:
        raise ModelError(f"{path}: the model has {len(model.outputs)} outputs; expected one single-channel map")
    shape_in = tuple(model.inputs[0].shape)
    shape_out = tuple(model.outputs[0].shape)
    if len(shape_in) != 4 or shape_in[1] is None or shape_in[2] is None or shape_in[3] not in (1, 3):
        raise ModelError(f"{path}: input shape {shape_in[1:]} is not (height, width, 1 or 3 channels) of fixed size")
    if len(shape_out) != 4 or shape_out[3] != 1:
        raise ModelError(f"{path}: output shape {shape_out[1:]} is not a single-channel map (height, width, 1)")
    h, w = shape_in[1:3]
    oh, ow = shape_out[1:3]
    if oh is None or ow is None or h % oh or w % ow or h // oh != w // ow:
        raise ModelError(f"{path}: output shape {shape_out[1:]} is neither the input's size {(h, w)} "
                         "nor a fixed fraction of it")
    # The layer that produced the output (Keras keeps it in the tensor's history); the last
    # layer otherwise.
    history = getattr(model.outputs[0], "_keras_history", None)
    activation = _activation(history.operation if history is not None else model.layers[-1])
    if activation not in _ALLOWED_ACTIVATIONS:
        raise ModelError(f"{path}: the output ends in a {activation} activation; expected a sigmoid or none (logits)")
    return {"input_shape": list(shape_in[1:]), "output_shape": list(shape_out[1:]), "activation": activation}


def adapt(model, entry: ExternalModelConfig, input_size: int, contract: dict[str, Any], unsafe: bool = False):
    """The model the audit runs: RGB in [0, 1] at ``input_size`` in, logits at ``input_size`` out.

    The model's own layers are inlined (called on the adapter's tensors, then rebuilt from the
    config so each layer belongs to this graph alone) and keep their names and weights.
    """
    import keras
    from keras import layers

    from ..xai.views import logits_view

    h, w, c = contract["input_shape"]
    taken = {layer.name for layer in model.layers}

    def name(base: str) -> str:
        n, k = f"{ADAPTER_PREFIX}{base}", 1
        while n in taken:
            n, k = f"{ADAPTER_PREFIX}{base}{k}", k + 1
        taken.add(n)
        return n

    inp = keras.Input((input_size, input_size, 3), name=name("image"))
    x = inp
    if (h, w) != (input_size, input_size):
        x = layers.Resizing(h, w, interpolation="bilinear", name=name("resize"))(x)
    grey = name("grey") if c == 1 else None
    if grey:
        x = layers.Dense(1, use_bias=False, trainable=False, name=grey)(x)
    if entry.preprocess == "symmetric":
        x = layers.Rescaling(2.0, offset=-1.0, name=name("scale"))(x)
    elif entry.preprocess == "standardize":
        mean, std = np.asarray(entry.mean, np.float32), np.asarray(entry.std, np.float32)
        x = layers.Normalization(mean=mean, variance=std ** 2, name=name("standardize"))(x)
    out = model.call(x)
    wrapped = keras.Model(inp, out, name=f"{model.name}_audited")
    # Rebuilt from its config (in safe mode unless the user chose otherwise, as for loading).
    flat = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(wrapped), safe_mode=not unsafe)
    flat.set_weights(wrapped.get_weights())
    if grey:
        flat.get_layer(grey).set_weights([_GREY])
    logits = logits_view(flat) if contract["activation"] == "sigmoid" else flat
    if tuple(logits.output.shape[1:3]) != (input_size, input_size):
        # Scored and explained at the audit's input size, as our own models are: the logits
        # resized back (bilinear, as evaluation resizes probabilities to native size).
        back = layers.Resizing(input_size, input_size, interpolation="bilinear",
                               name=name("resize_back"))(logits.output)
        logits = keras.Model(logits.input, back, name=flat.name)
    return logits


def confirm_output(stored: StoredModel, sample: np.ndarray | None) -> StoredModel:
    """Confirm the output activation read from the graph on this run's test images.

    The model's own outputs are the adapted model's logits, through a sigmoid when the graph
    ends in one. Their range, and a note when logits never leave [0, 1] (probabilities from an
    activation the graph does not call a sigmoid?), go into this run's copy of the card.
    """
    external = stored.card["external"]
    if sample is None or not len(sample):
        return stored
    z = np.asarray(stored.model(sample, training=False), np.float64)
    if not np.isfinite(z).all():
        raise ModelError(f"{external['source']}: the model's outputs on the test images are not finite")
    out = 1 / (1 + np.exp(-z)) if external["output_activation"] == "sigmoid" else z
    lo, hi = float(out.min()), float(out.max())
    notes = []
    if external["output_activation"] == "linear" and 0 <= lo and hi <= 1:
        notes.append("outputs on the test images stayed inside [0, 1] although the graph ends without a "
                     "sigmoid; read as logits, as the graph says")
    stored.card = {**stored.card, "external": {**external, "observed_output_range": [lo, hi], "notes": notes}}
    return stored


def _summary(model) -> dict[str, int]:
    return dict(Counter(type(layer).__name__ for layer in model.layers).most_common())


def _own_stored(path: Path) -> StoredModel | None:
    """One of our stored models, named by its file: loaded with its own card."""
    card_path = path.parent / "card.json"
    if path.name != "model.keras" or not card_path.is_file():
        return None
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if card.get("sha256") != sha256_file(path) or not card.get("key"):
        return None
    return StoredModel(card.get("name", path.parent.name), card["key"], path, card)


def load_external(entry: ExternalModelConfig, input_size: int, models_dir: Path, unsafe: bool = False,
                  sample: np.ndarray | None = None) -> StoredModel:
    """Load, check, adapt and store one external model; returns it loaded (see the module docstring).

    ``sample``: test images ``(N, input_size, input_size, 3)`` in [0, 1] to confirm the output
    activation on.
    """
    path = Path(entry.path).expanduser()
    if not path.is_file():
        raise ModelError(f"{path}: model file not found (models entry {entry.name!r})")
    own = _own_stored(path)
    if own is not None:
        loaded = load_model(own, input_size)
        loaded.name = entry.name
        log.info("models: %s is our stored model %s (sha256 %s)", entry.name, path.parent.name, loaded.sha256[:12])
        return loaded
    if path.suffix.lower() not in (".keras", ".h5", ".hdf5"):
        raise ModelError(f"{path}: not a Keras model file (expected .keras or .h5)")
    parts = unsafe_parts(_config_json(path))
    if parts and not unsafe:
        raise ModelError(f"{path}: the model needs custom code to load ({'; '.join(parts[:3])}); refused in safe "
                         "mode. Pass --unsafe-load to run it (recorded in the dossier)")
    file_sha = sha256_file(path)
    settings = {"file_sha256": file_sha, "input_size": input_size, "preprocess": entry.preprocess,
                "mean": list(entry.mean), "std": list(entry.std), "unsafe_load": unsafe, "adapter": ADAPTER_VERSION}
    key = model_key(entry.name, settings, file_sha)
    store = Path(models_dir) / "external"
    stored = find_model(store, entry.name, key)
    if stored is None:
        model = _load_keras(path, unsafe)
        contract = check_contract(model, path)
        logits = adapt(model, entry, input_size, contract, unsafe)
        card = {
            "schema_version": 1,
            "description": entry.description or "External model (training not audited).",
            "external": {"source": str(path), "file_sha256": file_sha, "format": path.suffix.lower(),
                         "training": "not audited: trained outside GlassBox Audit", "unsafe_load": unsafe,
                         "preprocessing": preprocessing_text(entry), "output_activation": contract["activation"],
                         "observed_output_range": None, "notes": []},
            "architecture": {"type": "external Keras model", "input_size": input_size,
                             "parameters": int(model.count_params()), "layers": len(model.layers),
                             "layer_types": _summary(model), "model_input_shape": contract["input_shape"],
                             "model_output_shape": contract["output_shape"],
                             "output": ("logits (the model's final sigmoid cut off for the audit)"
                                        if contract["activation"] == "sigmoid" else "logits")},
            "loss": {}, "hyperparameters": {}, "history": {},
        }
        save_model(store, entry.name, key, logits, card)
        stored = find_model(store, entry.name, key)
        log.info("models: %s adapted from %s (%s output, input %s, sha256 %s)", entry.name, path,
                 contract["activation"], contract["input_shape"], file_sha[:12])
    return confirm_output(load_model(stored, input_size), sample)


def first_test_batch(ds, cfg: AuditConfig) -> np.ndarray | None:
    """The first test batch at the audit's input size: the images a model's output activation
    is confirmed on."""
    from ..data import iter_batches

    for batch in iter_batches(ds, "test", cfg.model.input_size, cfg.evaluate.batch_size, only={0}):
        return batch.x
    return None


def external_models(cfg: AuditConfig, sample: np.ndarray | None = None) -> list[StoredModel]:
    """Every model of ``cfg.models``, in the order given."""
    return [load_external(entry, cfg.model.input_size, Path(cfg.models_dir), cfg.unsafe_load, sample)
            for entry in cfg.models]
