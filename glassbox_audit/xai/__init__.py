"""Explanations of binary segmentation models: batched, fast on the CPU, and checked.

What the pipeline calls, once per selected batch::

    from glassbox_audit.xai import XaiSettings, explain_batch, render_xai_figures

    result = explain_batch({name: keras_model, ...},          # variants, logits or sigmoid output
                           images,                            # (N, S, S, 3) float32 in [0, 1]
                           masks,                             # (N, h, w) ground truth, any size, or None
                           settings,                          # XaiSettings (cfg.xai once embedded)
                           image_ids=ids,
                           cache_dir=settings.cache_dir)      # optional: reuse earlier results
    figures = render_xai_figures(result, native_images, folder / "figures",
                                 prefix=f"batch{index:04d}_", scale=..., dpi=...)
    # figures: [(path, kind, description)], kinds "xai", "xai_layers", "xai_check"
    # tables:  result.summary_rows() (per check, model, method), result.check_rows() (per image),
    #          result.timing_rows(); READING[check] is one line on how to read each table.

Each method is also usable alone, Captum style: the constructor takes the model, one
``explain(images, target=..., ..., batch_size=...)`` call explains a batch and returns
``(N, H, W)`` float32 maps::

    Saliency(model).explain(images)
    SmoothGrad(GuidedBackprop(model)).explain(images, samples=50, noise=0.15)
    IntegratedGradients(model).explain(images, steps=50, baseline="blurred", return_completeness=True)
    GradCAM(model).explain(images, layer="att2_gated")
    LayerGradCAM(model).explain(images, groups=["encoder", "decoder"])      # dict of maps
    SuperpixelConfidence(model).explain(images, n_segments=200)
    AttentionMaps(model).explain(images)

With ``cache_dir``, each model's results on a batch are stored (:mod:`.cache`) and read back
by a later call with the same weights, images, masks, settings and XAI code.

The explained scalar is the mean logit over a region (:mod:`.target`): the predicted mask
by default, the ground truth, or any region of interest.
"""

import importlib

# Only the settings are imported eagerly: the configuration tree can embed XaiSettings
# without starting TensorFlow. Everything else loads on first use (PEP 562).
from .settings import METHODS, XaiSettings

_LAZY = {
    "engine": ("EngineOptions", "engine_options"),
    "attention": ("AttentionMaps", "attention_layers"),
    "batch": ("XaiResult", "explain_batch", "method_maps"),
    "cache": ("ModelExplanations", "XaiCache", "model_sha256"),
    "cam": ("GradCAM", "LayerGradCAM", "default_cam_layer", "group_layers", "spatial_layers"),
    "checks": ("READING", "PerturbationCurves", "RandomisationResult", "cascade_blocks", "map_similarity",
               "perturbation_curves", "randomisation_check", "randomised_copy"),
    "figures": ("render_xai_figures", "save_curves_figure", "save_map_grid", "save_randomisation_figure"),
    "gradients": ("Completeness", "GuidedBackprop", "IntegratedGradients", "Saliency", "SmoothGrad"),
    "superpixel": ("SuperpixelConfidence", "SuperpixelMaps"),
    "target": ("TargetRegion", "target_region"),
    "views": ("folded_view", "guided_relu", "guided_view", "logits_view"),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "METHODS",
    "READING",
    "AttentionMaps",
    "Completeness",
    "EngineOptions",
    "GradCAM",
    "GuidedBackprop",
    "IntegratedGradients",
    "LayerGradCAM",
    "ModelExplanations",
    "PerturbationCurves",
    "RandomisationResult",
    "Saliency",
    "SmoothGrad",
    "SuperpixelConfidence",
    "SuperpixelMaps",
    "TargetRegion",
    "XaiCache",
    "XaiResult",
    "XaiSettings",
    "attention_layers",
    "cascade_blocks",
    "default_cam_layer",
    "engine_options",
    "explain_batch",
    "folded_view",
    "group_layers",
    "guided_relu",
    "guided_view",
    "logits_view",
    "map_similarity",
    "method_maps",
    "model_sha256",
    "perturbation_curves",
    "randomisation_check",
    "randomised_copy",
    "render_xai_figures",
    "save_curves_figure",
    "save_map_grid",
    "save_randomisation_figure",
    "spatial_layers",
    "target_region",
]
