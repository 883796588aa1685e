"""Attention U-Net builder (Oktay et al., 2018) returning logits.

The model ends in a 1-channel convolution without activation, so every XAI method can
work on logits and losses apply the sigmoid themselves. Layer names carry their group as a
prefix (``enc``, ``bottleneck``, ``att``, ``dec``, ``logits``) so Grad-CAM can address a
group of layers by name, and each attention gate exposes its coefficients as the layer
``att<level>_coef``.

Only built-in Keras layers are used, so saved models load with ``safe_mode=True``.
"""

from __future__ import annotations

import keras
from keras import layers

__all__ = ["ADAPTER_PREFIX", "LAYER_GROUPS", "build_attention_unet", "layer_group"]

LAYER_GROUPS = {
    "encoder": "enc",
    "bottleneck": "bottleneck",
    "attention": "att",
    "decoder": "dec",
    "output": "logits",
}


# The layers an audited external model gets around its own (resize, grey, preprocessing,
# resize back: glassbox_audit.models.external): never one of the model's stages.
ADAPTER_PREFIX = "audit_"


def layer_group(name: str) -> str | None:
    """The group (``encoder``, ``attention``, ...) a layer belongs to, by its name prefix."""
    for group, prefix in LAYER_GROUPS.items():
        if name.startswith(prefix):
            return group
    return None


def _norm(x, kind: str, name: str):
    if kind == "batch":
        # momentum 0.9 rather than 0.99: CPU runs are a few hundred steps long, and the
        # moving statistics used at inference must have settled by then.
        return layers.BatchNormalization(momentum=0.9, name=name)(x)
    if kind == "group":
        return layers.GroupNormalization(groups=4, name=name)(x)
    return x


def _conv_block(x, filters: int, norm: str, prefix: str):
    for i in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=norm == "none",
                          kernel_initializer="he_normal", name=f"{prefix}_conv{i}")(x)
        x = _norm(x, norm, f"{prefix}_norm{i}")
        x = layers.Activation("relu", name=f"{prefix}_relu{i}")(x)
    return x


def _attention_gate(skip, gate, inter: int, prefix: str):
    # Additive attention: the decoder's coarser context (gate) decides which skip
    # features pass, one coefficient in [0, 1] per pixel.
    theta = layers.Conv2D(inter, 1, name=f"{prefix}_theta")(skip)
    phi = layers.Conv2D(inter, 1, name=f"{prefix}_phi")(gate)
    a = layers.Activation("relu", name=f"{prefix}_relu")(layers.Add(name=f"{prefix}_add")([theta, phi]))
    psi = layers.Conv2D(1, 1, name=f"{prefix}_psi")(a)
    coef = layers.Activation("sigmoid", name=f"{prefix}_coef")(psi)
    return layers.Multiply(name=f"{prefix}_gated")([skip, coef])


def _squeeze_excite(x, filters: int, prefix: str):
    # Channel attention at the bottleneck: re-weights the deepest features globally.
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{prefix}_pool")(x)
    s = layers.Dense(max(4, filters // 4), activation="relu", name=f"{prefix}_reduce")(s)
    s = layers.Dense(filters, activation="sigmoid", name=f"{prefix}_expand")(s)
    return layers.Multiply(name=f"{prefix}_scale")([x, s])


def build_attention_unet(input_size: int = 96, depth: int = 4, base_filters: int = 8,
                         attention_gates: bool = True, bottleneck_attention: bool = True,
                         norm: str = "batch", dropout: float = 0.1, channels: int = 3,
                         name: str = "attention_unet") -> keras.Model:
    """Build an Attention U-Net mapping ``(S, S, channels)`` images in [0, 1] to ``(S, S, 1)`` logits.

    Filters double at each of ``depth`` down-sampling steps from ``base_filters``.
    """
    inputs = keras.Input((input_size, input_size, channels), name="image")
    x = inputs
    skips = []
    for level in range(1, depth + 1):
        x = _conv_block(x, base_filters * 2 ** (level - 1), norm, f"enc{level}")
        skips.append(x)
        x = layers.MaxPooling2D(name=f"enc{level}_pool")(x)

    deepest = base_filters * 2 ** depth
    x = _conv_block(x, deepest, norm, "bottleneck")
    if bottleneck_attention:
        x = _squeeze_excite(x, deepest, "bottleneck_se")
    if dropout:
        x = layers.Dropout(dropout, name="bottleneck_dropout")(x)

    for level in range(depth, 0, -1):
        filters = base_filters * 2 ** (level - 1)
        x = layers.UpSampling2D(name=f"dec{level}_up")(x)
        x = layers.Conv2D(filters, 3, padding="same", activation="relu",
                          kernel_initializer="he_normal", name=f"dec{level}_upconv")(x)
        skip = skips[level - 1]
        if attention_gates:
            skip = _attention_gate(skip, x, max(1, filters // 2), f"att{level}")
        x = layers.Concatenate(name=f"dec{level}_concat")([x, skip])
        x = _conv_block(x, filters, norm, f"dec{level}")

    logits = layers.Conv2D(1, 1, name="logits")(x)
    return keras.Model(inputs, logits, name=name)
