"""Settings of the XAI stage: one dataclass of plain values, embeddable in the config tree.

This module imports nothing heavy (no TensorFlow, no NumPy) so the configuration can be
loaded, validated and hashed without starting TensorFlow. Every field is an ``int``,
``float``, ``bool``, ``str`` or ``list[str]`` with a default, which is all
``glassbox_audit.config.from_dict`` needs to read it from TOML.

Example::

    from glassbox_audit.xai.settings import XaiSettings
    s = XaiSettings(methods=["saliency", "gradcam"], ig_steps=64)
    s.validate()           # raises ValueError naming the key, e.g. "xai.ig_steps must be ..."
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["METHODS", "BASELINES", "TARGETS", "XaiSettings"]

# Names accepted in ``XaiSettings.methods``; also the keys of ``XaiResult.maps`` (layer-wise
# methods add ``/<group or layer>`` to their key).
METHODS: tuple[str, ...] = (
    "saliency",
    "smoothgrad",
    "guided_backprop",
    "integrated_gradients",
    "gradcam",
    "layer_gradcam",
    "superpixel",
    "attention",
)
BASELINES: tuple[str, ...] = ("black", "blurred", "mean", "uniform")
TARGETS: tuple[str, ...] = ("predicted", "truth")
_GROUPS = ("encoder", "bottleneck", "attention", "decoder", "output")
_SMOOTHGRAD_BASES = ("saliency", "guided_backprop", "integrated_gradients")
_IG_RULES = ("gausslegendre", "riemann_middle", "riemann_trapezoid")
_NT_TYPES = ("smoothgrad", "smoothgrad_sq")


@dataclass
class XaiSettings:
    """What the XAI stage computes for each selected batch, and how.

    Attributes
    ----------
    enabled : bool
        Run the stage at all.
    methods : list of str
        Which of :data:`METHODS` to compute, in this order.
    target : str
        The region whose mean logit is explained: ``"predicted"`` (pixels the model calls
        lesion, logit > 0) or ``"truth"`` (the ground-truth mask). An empty region falls back
        to the whole image.
    batch_size : int
        Rows (image x step or image x sample) per model call; bounds memory.
    seed : int
        Seeds SmoothGrad noise, uniform baselines, the random reference ranking and the
        randomised weights; equal seeds give equal maps.
    saliency_abs : bool
        Absolute gradients for saliency (then the map is the max over colour channels).
    smoothgrad_base : str
        The gradient method SmoothGrad averages: ``saliency``, ``guided_backprop`` or
        ``integrated_gradients``.
    smoothgrad_samples, smoothgrad_noise : int, float
        Noisy copies per image, and the noise standard deviation as a fraction of each
        image's value range (max - min).
    smoothgrad_type : str
        ``smoothgrad`` (mean) or ``smoothgrad_sq`` (mean of squares).
    ig_steps, ig_baseline, ig_rule : int, str, str
        Integrated-gradients path points, baseline (``black``, ``blurred``, ``uniform``) and
        quadrature rule (``gausslegendre``, ``riemann_middle``, ``riemann_trapezoid``). Baselines:
        ``black`` (zeros), ``blurred``, ``mean`` (the image's mean colour), ``uniform`` noise.
    blur_sigma : float
        Gaussian sigma of the ``blurred`` baselines (IG and deletion), as a fraction of the
        image side.
    gradcam_layer : str
        Layer for ``gradcam``; empty: the last multi-channel spatial layer before the output.
    gradcam_groups, gradcam_layers : list of str
        What ``layer_gradcam`` maps: named groups (``encoder``, ``bottleneck``, ``attention``,
        ``decoder``, ``output``) and/or layer names.
    gradcam_smoothing : float
        Gaussian sigma in input pixels applied to Grad-CAM maps before normalising; 0 is off.
    slic_segments, slic_compactness : int, float
        SLIC superpixel count and compactness (scikit-image).
    checks : bool
        Run the deletion / insertion curves.
    deletion_steps, deletion_baseline : int, str
        Perturbation steps of the curves and what deleted pixels become (one of the
        baselines). ``mean`` by default: lesions are dark, so ``black`` pixels still look like
        lesion, and a light blur leaves a lesion's shape in place.
    deletion_random_reference : bool
        Add a seeded random ranking as the reference a faithful method must beat.
    randomisation : bool
        Run the cascading model-parameter randomisation sanity check.
    randomisation_steps : int
        Cascade depths evaluated (spread from "output layer only" to "every layer").
    randomisation_methods : list of str
        Methods re-run on the randomised models; empty: every method computed, except the
        model's own attention maps and superpixels, which are not explanations of a target.
    jit_compile : bool
        Compile the model passes with XLA (:class:`~glassbox_audit.xai.engine.EngineOptions`):
        faster per pass on the CPU, but each distinct chunk shape of each model view is
        compiled first (tens of seconds to minutes on 2 cores), so it pays off only for long
        runs; off by default.
    fold_batchnorm : bool
        Run the gradient methods on a copy of each model with its batch normalisations folded
        into the convolutions before them (:func:`~glassbox_audit.xai.views.folded_view`): the
        same function at inference, one layer and its gradient less per block.
    cache_dir : str
        Folder of the explanation cache (:mod:`glassbox_audit.xai.cache`): a model's results
        on a batch are reused when its weights, the images, these settings and the XAI code
        are unchanged. Relative paths are relative to the working directory; empty: no cache.
    """

    enabled: bool = True
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    target: str = "predicted"
    batch_size: int = 16
    seed: int = 0
    saliency_abs: bool = True
    smoothgrad_base: str = "saliency"
    smoothgrad_samples: int = 16
    smoothgrad_noise: float = 0.15
    smoothgrad_type: str = "smoothgrad"
    ig_steps: int = 16
    ig_baseline: str = "black"
    ig_rule: str = "gausslegendre"
    blur_sigma: float = 0.05
    gradcam_layer: str = ""
    gradcam_groups: list[str] = field(default_factory=lambda: list(_GROUPS))
    gradcam_layers: list[str] = field(default_factory=list)
    gradcam_smoothing: float = 0.0
    slic_segments: int = 200
    slic_compactness: float = 10.0
    checks: bool = True
    deletion_steps: int = 10
    deletion_baseline: str = "mean"
    deletion_random_reference: bool = True
    randomisation: bool = True
    randomisation_steps: int = 2
    randomisation_methods: list[str] = field(
        default_factory=lambda: ["saliency", "gradcam"])
    jit_compile: bool = False
    fold_batchnorm: bool = False
    cache_dir: str = ".cache/glassbox-audit/xai"

    def validate(self, prefix: str = "xai") -> None:
        """Raise ``ValueError`` naming the first impossible value as ``<prefix>.<field>``."""

        def check(ok: bool, key: str, message: str) -> None:
            if not ok:
                raise ValueError(f"{prefix}.{key} {message}")

        def one_of(key: str, allowed: tuple[str, ...]) -> None:
            value = getattr(self, key)
            check(value in allowed, key, f"must be one of {', '.join(allowed)}, got {value!r}")

        unknown = [m for m in self.methods if m not in METHODS]
        check(not unknown, "methods", f"has unknown method {unknown[:1]}; known: {', '.join(METHODS)}")
        check(len(set(self.methods)) == len(self.methods), "methods", "lists a method twice")
        one_of("target", TARGETS)
        check(self.batch_size >= 1, "batch_size", f"must be at least 1, got {self.batch_size}")
        one_of("smoothgrad_base", _SMOOTHGRAD_BASES)
        check(self.smoothgrad_samples >= 1, "smoothgrad_samples", "must be at least 1")
        check(self.smoothgrad_noise >= 0, "smoothgrad_noise", "must be >= 0")
        one_of("smoothgrad_type", _NT_TYPES)
        check(self.ig_steps >= 2, "ig_steps", f"must be at least 2, got {self.ig_steps}")
        one_of("ig_baseline", BASELINES)
        one_of("ig_rule", _IG_RULES)
        check(0 < self.blur_sigma <= 1, "blur_sigma", "must be in (0, 1] (a fraction of the image side)")
        bad = [g for g in self.gradcam_groups if g not in _GROUPS]
        check(not bad, "gradcam_groups", f"has unknown group {bad[:1]}; known: {', '.join(_GROUPS)}")
        check(self.gradcam_smoothing >= 0, "gradcam_smoothing", "must be >= 0")
        check(self.slic_segments >= 1, "slic_segments", "must be at least 1")
        check(self.slic_compactness > 0, "slic_compactness", "must be positive")
        check(self.deletion_steps >= 2, "deletion_steps", "must be at least 2")
        one_of("deletion_baseline", BASELINES)
        check(self.randomisation_steps >= 1, "randomisation_steps", "must be at least 1")
        unknown = [m for m in self.randomisation_methods if m not in METHODS]
        check(not unknown, "randomisation_methods", f"has unknown method {unknown[:1]}")
