"""Grad-CAM (Selvaraju et al., 2017) for segmentation, on one layer or layer by layer.

For a layer output ``A`` with ``K`` channels, the target's gradient averaged over space
weighs each channel; the map is ``relu(sum_k w_k A_k)``, resized bilinearly to the input,
optionally Gaussian-smoothed, and scaled to [0, 1] per image by its maximum (an all-zero
map, where no channel pushes the target up, stays zero).

:class:`LayerGradCAM` maps whole groups of the U-Net (``encoder``, ``bottleneck``,
``attention``, ``decoder``, ``output``, see ``glassbox_audit.models.unet.LAYER_GROUPS``): a
group's map is the mean of the normalised maps of its blocks' output layers
(:func:`group_layers`), renormalised. All requested layers share one forward and one
backward pass per chunk.

For segmentation the channel weights are region-weighted gradients (Seg-Grad-CAM,
Vinogradova et al., 2020). On the layer feeding a 1x1 output convolution (``dec1_relu2``,
the default) they reduce to the output kernel whatever the region, so that map shows where
the last features push the lesion logit up overall; layers further back (``att1_gated``,
``enc2_relu2``, the groups) depend on the region explained.

Example::

    cam = GradCAM(model).explain(images, layer="dec1_relu2")             # (N, H, W)
    by_group = LayerGradCAM(model).explain(images, groups=["encoder", "decoder"])
    by_group["encoder"].shape                                             # (N, H, W)
"""

from __future__ import annotations

import keras
import numpy as np

from glassbox_audit.models.unet import ADAPTER_PREFIX, LAYER_GROUPS, layer_group

from .engine import chunked, layer_cam_function
from .maths import normalise_unit, smooth_maps
from .target import TargetRegion, target_region
from .views import logits_view

__all__ = ["GradCAM", "LayerGradCAM", "default_cam_layer", "depth_groups", "group_layers",
           "spatial_layers"]

_POOLING = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)


def spatial_layers(model: keras.Model) -> list[str]:
    """Names of the layers with a 4-D ``(N, h, w, K)`` output, in model order (input excluded)."""
    names = []
    for layer in logits_view(model).layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        shape = getattr(layer.output, "shape", None)
        if shape is not None and len(shape) == 4:
            names.append(layer.name)
    return names


def default_cam_layer(model: keras.Model) -> str:
    """The last spatial multi-channel layer before the output (``dec1_relu2`` in a U-Net)."""
    view = logits_view(model)
    for name in reversed(spatial_layers(model)):
        layer = view.get_layer(name)
        if layer is view.layers[-1]:
            continue
        if layer.output.shape[-1] > 1 and (layer.output.shape[1] or 2) > 1:
            return name
    raise ValueError(f"model {model.name!r} has no spatial layer with several channels for Grad-CAM")


def group_layers(model: keras.Model, group: str) -> list[str]:
    """The output layer of each block of ``group``, in model order.

    A block is a name prefix before the first ``_`` (``enc2``, ``att1``, ``bottleneck``);
    its output is its last spatial layer other than a pooling layer (pooling only subsamples
    the features the block computed).
    """
    if group not in LAYER_GROUPS:
        raise ValueError(f"unknown layer group {group!r}; known: {', '.join(LAYER_GROUPS)}")
    view = logits_view(model)
    last: dict[str, str] = {}
    for name in spatial_layers(model):
        if layer_group(name) != group or isinstance(view.get_layer(name), _POOLING):
            continue
        last[name.split("_")[0]] = name  # later layers of a block overwrite earlier ones
    return list(last.values())


def depth_groups(model: keras.Model) -> dict[str, list[str]]:
    """Layer groups by depth for a model whose layer names do not follow the builder's groups.

    The spatial multi-channel layers (pooling and the audit's own adapter layers left out),
    in model order, are grouped by their resolution on the way down (``down 64 px``), at the
    coarsest resolution (``bottom 16 px``) and on the way up (``up 64 px``); each group's
    member is its last layer, the output of that stage.
    """
    view = logits_view(model)
    names, sizes = [], []
    for name in spatial_layers(model):
        layer = view.get_layer(name)
        if isinstance(layer, _POOLING) or name.startswith(ADAPTER_PREFIX) or layer is view.layers[-1] \
                or layer.output.shape[-1] < 2:
            continue
        names.append(name)
        sizes.append(int(layer.output.shape[1]))
    if not names:
        return {}
    bottom = min(sizes)
    first, last = sizes.index(bottom), len(sizes) - 1 - sizes[::-1].index(bottom)
    groups: dict[str, list[str]] = {}
    for i, (name, size) in enumerate(zip(names, sizes)):
        side = "down" if i < first else "bottom" if i <= last else "up"
        groups.setdefault(f"{side} {size} px", []).append(name)
    return {group: members[-1:] for group, members in groups.items()}


def _cams(model: keras.Model, images: np.ndarray, layers: list[str], region: TargetRegion, smoothing: float,
          batch_size: int) -> dict[str, np.ndarray]:
    """Normalised Grad-CAM maps of each layer, one shared pass per chunk."""
    view = logits_view(model)
    names = tuple(dict.fromkeys(layers))
    fn = layer_cam_function(view, names)
    parts = chunked(len(images), batch_size, lambda s: fn(images[s], region.weights[s]).numpy())
    stack = np.concatenate(parts) if parts else np.zeros((0, len(names), *images.shape[1:3]), np.float32)
    return {name: normalise_unit(smooth_maps(stack[:, i], smoothing)) for i, name in enumerate(names)}


class GradCAM:
    """Grad-CAM on one layer, addressed by name.

    Example
    -------
    >>> maps = GradCAM(model).explain(images, layer="att1_gated", smoothing=1.0)   # doctest: +SKIP
    """

    name = "gradcam"

    def __init__(self, model: keras.Model):
        self.model = model

    def explain(self, images: np.ndarray, target: str | np.ndarray | TargetRegion = "predicted",
                masks: np.ndarray | None = None, layer: str | None = None, smoothing: float = 0.0,
                batch_size: int = 16) -> np.ndarray:
        """Grad-CAM maps of a batch.

        Parameters
        ----------
        images : numpy.ndarray
            ``(N, H, W, C)`` float32 in [0, 1].
        target, masks
            The explained region; see :func:`glassbox_audit.xai.target.target_region`.
        layer : str, optional
            Any layer with a 4-D output (:func:`spatial_layers`); default
            :func:`default_cam_layer`.
        smoothing : float, default 0.0
            Gaussian sigma in input pixels, applied before normalising; 0 is off.
        batch_size : int, default 16
            Images per model call.

        Returns
        -------
        numpy.ndarray
            ``(N, H, W)`` float32 in [0, 1].
        """
        images = np.ascontiguousarray(images, dtype=np.float32)
        layer = layer or default_cam_layer(self.model)
        if layer not in spatial_layers(self.model):
            raise ValueError(f"layer {layer!r} has no 4-D output in model {self.model.name!r}")
        region = target_region(self.model, images, target, masks, batch_size)
        return _cams(self.model, images, [layer], region, smoothing, batch_size)[layer]


class LayerGradCAM:
    """Grad-CAM over named groups of layers and/or a list of layers, in one pass per chunk.

    Example
    -------
    >>> maps = LayerGradCAM(model).explain(images, groups=["encoder"], layers=["att1_coef"])  # doctest: +SKIP
    >>> sorted(maps)                                                                          # doctest: +SKIP
    ['att1_coef', 'encoder']
    """

    name = "layer_gradcam"

    def __init__(self, model: keras.Model):
        self.model = model

    def explain(self, images: np.ndarray, target: str | np.ndarray | TargetRegion = "predicted",
                masks: np.ndarray | None = None, groups: list[str] | tuple[str, ...] = tuple(LAYER_GROUPS),
                layers: list[str] | tuple[str, ...] = (), smoothing: float = 0.0,
                batch_size: int = 16) -> dict[str, np.ndarray]:
        """Grad-CAM maps keyed by group name, then by layer name, each ``(N, H, W)`` in [0, 1].

        Parameters
        ----------
        groups : list of str, default all of ``LAYER_GROUPS``
            Groups to map; a group absent from the model (no attention gates) is skipped.
        layers : list of str, default none
            Individual layers to map as well.
        images, target, masks, smoothing, batch_size
            As :meth:`GradCAM.explain`.
        """
        images = np.ascontiguousarray(images, dtype=np.float32)
        known = set(spatial_layers(self.model))
        missing = [name for name in layers if name not in known]
        if missing:
            raise ValueError(f"layer {missing[0]!r} has no 4-D output in model {self.model.name!r}")
        members = {g: group_layers(self.model, g) for g in groups}
        members = {g: names for g, names in members.items() if names}
        if not members and groups and not any(layer_group(n) for n in known):
            # Not our builder's names (an external model): its stages by depth instead.
            members = depth_groups(self.model)
        wanted = [n for names in members.values() for n in names] + list(layers)
        if not wanted:
            return {}
        region = target_region(self.model, images, target, masks, batch_size)
        cams = _cams(self.model, images, wanted, region, smoothing, batch_size)
        out = {g: normalise_unit(np.mean([cams[n] for n in names], axis=0)) for g, names in members.items()}
        out.update({name: cams[name] for name in layers})
        return out
