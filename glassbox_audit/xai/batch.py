"""``explain_batch``: every configured method, for every model, on one batch, with the checks.

This is what the pipeline calls once per selected batch. It resolves each model's target
region once (on the unperturbed images), runs the methods of :class:`XaiSettings` in
order, then the deletion / insertion curves and the randomisation check, and returns an
:class:`XaiResult` holding the maps, the parameters used, the check results and timings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np

from .engine import engine_options
from .attention import AttentionMaps, attention_layers
from .cache import ModelExplanations, XaiCache
from .cam import GradCAM, LayerGradCAM, default_cam_layer
from .checks import PerturbationCurves, RandomisationResult, perturbation_curves, randomisation_check
from .gradients import Completeness, GuidedBackprop, IntegratedGradients, Saliency, SmoothGrad
from .settings import XaiSettings
from .superpixel import SuperpixelConfidence
from .target import TargetRegion, target_region

__all__ = ["XaiResult", "explain_batch", "method_maps"]

log = logging.getLogger(__name__)

# Families that are properties of the prediction rather than attributions of a target:
# ranking pixels by them in the deletion curve answers another question, so by default
# they are not checked (the mean attention map is, as "does the model attend where it matters?").
_NOT_CHECKED = ("superpixel/", "attention/")
# Read from the forward pass alone: no target is explained.
_NO_TARGET = ("superpixel", "attention")


@dataclass
class XaiResult:
    """Everything the XAI stage computed for one batch.

    Attributes
    ----------
    models : list of str
        Model names, in the order given.
    image_ids : list of str
        One id per image (row labels of the figures).
    settings : XaiSettings
        The settings used.
    maps : dict of str to dict of str to numpy.ndarray
        Map key to model name to ``(N, H, W)`` float32 maps at network input size. Keys are
        method names; layer-wise methods add ``/part`` (``layer_gradcam/encoder``,
        ``attention/att1_coef``, ``superpixel/confidence``).
    params : dict of str to dict
        Map key to the parameters it was computed with (printed under its figure).
    targets : dict of str to TargetRegion
        Model name to the explained region.
    completeness : dict of str to Completeness
        Model name to the integrated-gradients completeness check.
    curves : list of PerturbationCurves
        Deletion and insertion curves (per model and map key, plus ``random``).
    randomisation : list of RandomisationResult
        Randomisation check results (per model and map key).
    timings : dict of str to dict of str to float
        Method (or ``deletion_insertion`` / ``randomisation``) to model name to seconds.
    notes : list of str
        Methods skipped and why (e.g. a model without attention gates).
    cached : list of str
        Models whose results were read from the cache (their timings are those of the run
        that computed them).
    """

    models: list[str]
    image_ids: list[str]
    settings: XaiSettings
    maps: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    params: dict[str, dict[str, object]] = field(default_factory=dict)
    targets: dict[str, TargetRegion] = field(default_factory=dict)
    completeness: dict[str, Completeness] = field(default_factory=dict)
    curves: list[PerturbationCurves] = field(default_factory=list)
    randomisation: list[RandomisationResult] = field(default_factory=list)
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)

    def check_rows(self) -> list[dict]:
        """Per-image rows of every check (deletion, insertion, randomisation, completeness)."""
        rows = [r for c in self.curves for r in c.to_rows()]
        rows += [r for c in self.randomisation for r in c.to_rows()]
        rows += [r for m, c in self.completeness.items() for r in c.to_rows(model=m)]
        return rows

    def summary_rows(self) -> list[dict]:
        """One row per check, model and method (and cascade depth): the dossier tables."""
        rows = [r for c in self.curves for r in c.summary_rows()]
        rows += [r for c in self.randomisation for r in c.summary_rows()]
        for m, c in self.completeness.items():
            rows.append({"check": "completeness", "model": m, "method": "integrated_gradients",
                         "n_images": len(c.error), "relative_error_mean": float(np.mean(c.relative_error)),
                         "relative_error_max": float(np.max(c.relative_error)) if len(c.error) else float("nan")})
        return rows

    def timing_rows(self) -> list[dict]:
        """One row per method and model: method, model, seconds."""
        return [{"method": k, "model": m, "seconds": float(s)} for k, per in self.timings.items() for m, s in per.items()]


def method_maps(method: str, model: keras.Model, images: np.ndarray, region: TargetRegion,
                s: XaiSettings) -> tuple[dict[str, np.ndarray], dict[str, dict[str, object]], Completeness | None]:
    """Run one method of the settings: maps by key, parameters by key, IG completeness (or None)."""
    bs, target = s.batch_size, region
    ig = dict(steps=s.ig_steps, baseline=s.ig_baseline, rule=s.ig_rule, blur_sigma=s.blur_sigma)
    if method == "saliency":
        return ({method: Saliency(model).explain(images, target, abs=s.saliency_abs, batch_size=bs)},
                {method: {"abs": s.saliency_abs, "channels": "max" if s.saliency_abs else "sum"}}, None)
    if method == "guided_backprop":
        return {method: GuidedBackprop(model).explain(images, target, batch_size=bs)}, {method: {"channels": "absmax"}}, None
    if method == "integrated_gradients":
        maps, check = IntegratedGradients(model).explain(images, target, seed=s.seed, return_completeness=True,
                                                         batch_size=bs, **ig)
        return {method: maps}, {method: {**ig, "channels": "sum"}}, check
    if method == "smoothgrad":
        base = {"saliency": Saliency, "guided_backprop": GuidedBackprop,
                "integrated_gradients": IntegratedGradients}[s.smoothgrad_base](model)
        options = ig if s.smoothgrad_base == "integrated_gradients" else (
            {"abs": s.saliency_abs} if s.smoothgrad_base == "saliency" else {})
        maps = SmoothGrad(base).explain(images, target, samples=s.smoothgrad_samples, noise=s.smoothgrad_noise,
                                        nt_type=s.smoothgrad_type, seed=s.seed, batch_size=bs, **options)
        return {method: maps}, {method: {"base": s.smoothgrad_base, "samples": s.smoothgrad_samples,
                                         "noise": s.smoothgrad_noise, "type": s.smoothgrad_type, **options}}, None
    if method == "gradcam":
        layer = s.gradcam_layer or default_cam_layer(model)
        maps = GradCAM(model).explain(images, target, layer=layer, smoothing=s.gradcam_smoothing, batch_size=bs)
        return {method: maps}, {method: {"layer": layer, "smoothing": s.gradcam_smoothing}}, None
    if method == "layer_gradcam":
        out = LayerGradCAM(model).explain(images, target, groups=s.gradcam_groups, layers=s.gradcam_layers,
                                          smoothing=s.gradcam_smoothing, batch_size=bs)
        return ({f"{method}/{k}": v for k, v in out.items()},
                {f"{method}/{k}": {"layers": k, "smoothing": s.gradcam_smoothing} for k in out}, None)
    if method == "superpixel":
        sp = SuperpixelConfidence(model).superpixels(images, s.slic_segments, s.slic_compactness, bs)
        p = {"n_segments": s.slic_segments, "compactness": s.slic_compactness}
        return ({f"{method}/confidence": sp.confidence, f"{method}/probability": sp.probability},
                {f"{method}/confidence": {**p, "value": "mean |2p - 1|"},
                 f"{method}/probability": {**p, "value": "mean p"}}, None)
    if method == "attention":
        gates = AttentionMaps(model).explain_layers(images, batch_size=bs)
        maps = {method: np.mean(list(gates.values()), axis=0).astype(np.float32)}
        maps.update({f"{method}/{k}": v for k, v in gates.items()})
        return maps, {k: {"gates": ", ".join(gates) if k == method else k.split("/", 1)[1]} for k in maps}, None
    raise ValueError(f"unknown XAI method {method!r}")


# Variants of one architecture (the three fine-tunes of a base) are explained on one shared
# Keras model with each variant's weights copied in, so every compiled function (each method's
# pass, the guided and layer views, the randomised copy) is traced once per run for the
# architecture rather than once per variant. The maps are those of the variant's own model: the
# same graph with the same weights. A lock per architecture keeps two threads (the review
# workstation serves requests in a thread pool) from swapping weights under each other.
_SHARED: dict[str, tuple[keras.Model, threading.Lock] | None] = {}
_SHARED_LOCK = threading.Lock()


def _architecture(model: keras.Model) -> str | None:
    """A digest of what the model computes apart from its weights (None: not comparable)."""
    try:
        text = model.to_json(sort_keys=True)
    except (TypeError, ValueError, NotImplementedError):  # a layer without get_config
        return None
    return hashlib.sha256(text.encode()).hexdigest()


def _shared_architectures(models: Mapping[str, keras.Model]) -> dict[str, str | None]:
    """Each variant's architecture digest when two or more of ``models`` have it, else None
    (the variant then runs on its own model)."""
    digests = {name: _architecture(m) for name, m in models.items()}
    counts: dict[str | None, int] = {}
    for d in digests.values():
        counts[d] = counts.get(d, 0) + 1
    return {name: d if d is not None and counts[d] > 1 else None for name, d in digests.items()}


def _shared_model(digest: str, like: keras.Model) -> tuple[keras.Model, threading.Lock] | None:
    """The architecture's shared model, or None where it cannot be cloned (the variant then
    runs on its own model)."""
    with _SHARED_LOCK:
        if digest not in _SHARED:  # made when first needed: a run whose maps all come from the cache makes none
            try:
                _SHARED[digest] = (keras.models.clone_model(like), threading.Lock())
            except Exception as exc:  # noqa: BLE001 - e.g. a custom layer that does not rebuild from its config
                log.warning("xai: %s cannot be cloned (%s): each variant is explained on its own model",
                            like.name, exc)
                _SHARED[digest] = None
        return _SHARED[digest]


def _computes_as(shared: keras.Model, model: keras.Model, images: np.ndarray) -> bool:
    """Whether the shared model, holding ``model``'s weights, gives its outputs. Two models with
    one configuration compute alike unless a layer keeps state its config leaves out (an
    external model's custom layer can): then every map would be of another function."""
    probe = images[:1]
    want = np.asarray(model(probe, training=False), dtype=np.float64)
    got = np.asarray(shared(probe, training=False), dtype=np.float64)
    return want.shape == got.shape and bool(np.allclose(got, want, rtol=1e-4, atol=1e-5))


def _skip_reason(method: str, model: keras.Model) -> str | None:
    if method == "attention" and not attention_layers(model):
        return "has no attention gates"
    return None


def _family(key: str) -> str:
    return key.split("/", 1)[0]


def explain_batch(models: Mapping[str, keras.Model], images: np.ndarray, masks: np.ndarray | None = None,
                  settings: XaiSettings | None = None, image_ids: Sequence[str] | None = None,
                  progress: Callable[[str], None] | None = None,
                  cache_dir: str | os.PathLike | None = None) -> XaiResult:
    """Explain one batch with every configured method for every model, and check the maps.

    Parameters
    ----------
    models : dict of str to keras.Model
        Variant name to model (logits or sigmoid output; see
        :func:`~glassbox_audit.xai.views.logits_view`).
    images : numpy.ndarray
        ``(N, S, S, 3)`` float32 network inputs in [0, 1] (as the evaluation feeds them).
    masks : numpy.ndarray, optional
        ``(N, h, w)`` ground-truth masks, needed when ``settings.target == "truth"``; any
        size (resized to the network output by nearest neighbour).
    settings : XaiSettings, optional
        Defaults to ``XaiSettings()``; validated here.
    image_ids : list of str, optional
        Row labels for the figures; default ``"0"``, ``"1"``, ...
    progress : callable, optional
        Called with a short message before each method (for logs).
    cache_dir : str or os.PathLike, optional
        Folder of the result cache (:mod:`.cache`; ``settings.cache_dir`` is the configured
        one). Each model's results are read from it when the model's weights, the images,
        the masks, the settings and the code are unchanged, else computed and written to it.
        None or empty: no cache.

    Returns
    -------
    XaiResult

    Example
    -------
    >>> result = explain_batch({"balanced": model}, images, masks, XaiSettings(ig_steps=50))  # doctest: +SKIP
    >>> result.maps["integrated_gradients"]["balanced"].shape                                 # doctest: +SKIP
    (8, 96, 96)
    """
    s = settings or XaiSettings()
    s.validate()
    images = np.ascontiguousarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {images.shape}")
    ids = [str(i) for i in (image_ids if image_ids is not None else range(len(images)))]
    result = XaiResult(list(models), ids, dataclasses.replace(s))
    say = progress or (lambda _msg: None)
    cache = XaiCache(cache_dir) if cache_dir else None
    shared = _shared_architectures(models)
    with engine_options(jit_compile=s.jit_compile, fold_batchnorm=s.fold_batchnorm):
        for name, model in models.items():
            _add(result, name, *_model_explanations(name, model, shared[name], images, masks, s, cache, say))
    return result


def _explain_on(architecture: str | None, name: str, model: keras.Model, images: np.ndarray,
                masks: np.ndarray | None, s: XaiSettings, say: Callable[[str], None]) -> ModelExplanations:
    entry = _shared_model(architecture, model) if architecture is not None else None
    if entry is None:
        return _explain_model(name, model, images, masks, s, say)
    shared, lock = entry
    with lock:
        shared.set_weights(model.get_weights())
        if not _computes_as(shared, model, images):
            log.warning("xai: the shared copy of %s's architecture computes otherwise than %s: "
                        "explained on its own model", name, name)
            return _explain_model(name, model, images, masks, s, say)
        return _explain_model(name, shared, images, masks, s, say)


def _model_explanations(name: str, model: keras.Model, architecture: str | None,
                        images: np.ndarray, masks: np.ndarray | None, s: XaiSettings, cache: XaiCache | None,
                        say: Callable[[str], None]) -> tuple[ModelExplanations, bool]:
    """One model's results, from the cache when it has them (then True), else computed (and cached)."""
    if cache is None:
        return _explain_on(architecture, name, model, images, masks, s, say), False
    key = cache.key(model, name, images, masks, s)
    part = cache.load(key)
    if part is not None:
        say(f"xai for {name} read from the cache ({key.digest[:12]})")
        return part, True
    part = _explain_on(architecture, name, model, images, masks, s, say)
    try:
        cache.save(key, part)
    except OSError as exc:  # a full or read-only disk costs the next run time, not this one
        log.warning("xai cache: could not write %s: %s", cache.path(key), exc)
    return part, False


def _add(result: XaiResult, name: str, part: ModelExplanations, cached: bool) -> None:
    if cached:
        result.cached.append(name)
    result.targets[name] = part.region
    for k, m in part.maps.items():
        result.maps.setdefault(k, {})[name] = m
        result.params.setdefault(k, part.params[k])
    if part.completeness is not None:
        result.completeness[name] = part.completeness
    result.curves += part.curves
    result.randomisation += part.randomisation
    for k, seconds in part.timings.items():
        result.timings.setdefault(k, {})[name] = seconds
    result.notes += part.notes


def _explain_model(name: str, model: keras.Model, images: np.ndarray, masks: np.ndarray | None,
                   s: XaiSettings, say: Callable[[str], None]) -> ModelExplanations:
    """Every configured method and check for one model (the unit the cache stores)."""
    part = ModelExplanations(target_region(model, images, s.target, masks, s.batch_size))
    region = part.region

    def timed(key: str, fn: Callable):
        t0 = time.perf_counter()
        out = fn()
        part.timings[key] = time.perf_counter() - t0
        return out

    for method in s.methods:
        reason = _skip_reason(method, model)
        if reason:
            part.notes.append(f"{method} skipped for {name}: the model {reason}")
            continue
        say(f"xai {method} for {name}")
        maps, params, check = timed(method, lambda: method_maps(method, model, images, region, s))
        for key, m in maps.items():
            part.maps[key] = m
            target = {} if method in _NO_TARGET else {"target": s.target}
            part.params[key] = {**params[key], **target}
        if check is not None:
            part.completeness = check

    own = part.maps
    if s.checks:
        say(f"xai deletion/insertion for {name}")
        checked = {k: v for k, v in own.items() if not k.startswith(_NOT_CHECKED)}
        part.curves += timed("deletion_insertion", lambda: perturbation_curves(
            model, images, checked, region, steps=s.deletion_steps, baseline=s.deletion_baseline,
            blur_sigma=s.blur_sigma, seed=s.seed, random_reference=s.deletion_random_reference,
            model_name=name, batch_size=s.batch_size))
    if s.randomisation:
        # Superpixels are not a function of a target: nothing to compare.
        families = [m for m in s.randomisation_methods or [m for m in s.methods if m != "attention"]
                    if m != "superpixel"]
        compared = {k: v for k, v in own.items() if _family(k) in families}
        if compared:
            say(f"xai randomisation for {name}")

            def again(copy: keras.Model) -> dict[str, np.ndarray]:
                out: dict[str, np.ndarray] = {}
                for fam in dict.fromkeys(_family(k) for k in compared):
                    out.update(method_maps(fam, copy, images, region, s)[0])
                return out

            part.randomisation += timed("randomisation", lambda: randomisation_check(
                model, compared, again, steps=s.randomisation_steps, seed=s.seed, model_name=name))
    return part
