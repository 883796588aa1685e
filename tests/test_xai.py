"""XAI stage: checks shared by every method, the engine, the settings and the batch entry point.

The shared checks (shape, dtype, finite values, batch-size independence, determinism) run
over one list of methods, so a method added to ``METHODS`` is checked like the others.
Models are 32 px, depth 2, 4 base filters: each compiled function traces in about a second.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import keras
import numpy as np
import pytest

from glassbox_audit.models.unet import build_attention_unet
from glassbox_audit.xai import (AttentionMaps, GradCAM, GuidedBackprop, IntegratedGradients, LayerGradCAM, Saliency,
                                SmoothGrad, SuperpixelConfidence, XaiSettings, explain_batch, render_xai_figures,
                                save_curves_figure, save_map_grid, save_randomisation_figure, target_region)
from glassbox_audit.xai.engine import COMPILED, chunked

from conftest import disc_pair

SIZE = 32


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(3)
    return build_attention_unet(SIZE, depth=2, base_filters=4)


@pytest.fixture(scope="module")
def images():
    pairs = [disc_pair(i, SIZE, SIZE) for i in range(4)]
    x = np.stack([p[0] for p in pairs]).astype(np.float32) / 255.0
    # Texture, so gradients differ from pixel to pixel and rankings are not ties.
    x += np.random.default_rng(0).normal(0, 0.03, x.shape).astype(np.float32)
    return np.clip(x, 0, 1), np.stack([p[1] for p in pairs])


# name -> (make the method from a model, explain keyword arguments)
METHODS = {
    "saliency": (Saliency, {}),
    "saliency_signed": (Saliency, {"abs": False}),
    "smoothgrad": (lambda m: SmoothGrad(Saliency(m)), {"samples": 3, "noise": 0.1}),
    "smoothgrad_sq_ig": (lambda m: SmoothGrad(IntegratedGradients(m)),
                         {"samples": 2, "steps": 3, "nt_type": "smoothgrad_sq"}),
    "guided_backprop": (GuidedBackprop, {}),
    "integrated_gradients": (IntegratedGradients, {"steps": 6}),
    "integrated_gradients_blurred": (IntegratedGradients, {"steps": 4, "baseline": "blurred"}),
    "integrated_gradients_uniform": (IntegratedGradients, {"steps": 4, "baseline": "uniform"}),
    "gradcam": (GradCAM, {}),
    "gradcam_smoothed": (GradCAM, {"layer": "att1_gated", "smoothing": 1.5}),
    "superpixel": (SuperpixelConfidence, {"n_segments": 30}),
    "superpixel_probability": (SuperpixelConfidence, {"n_segments": 30, "output": "probability"}),
    "attention": (AttentionMaps, {}),
}


def _explain(name, model, x, **extra):
    make, kwargs = METHODS[name]
    return make(model).explain(x, **kwargs, **extra)


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_returns_finite_float32_maps_at_input_size(name, model, images):
    maps = _explain(name, model, images[0])
    assert maps.shape == (4, SIZE, SIZE)
    assert maps.dtype == np.float32
    assert np.isfinite(maps).all()
    assert np.ptp(maps) > 0  # not a constant map


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_gives_the_same_maps_whatever_the_batch_size(name, model, images):
    one = _explain(name, model, images[0], batch_size=1)
    four = _explain(name, model, images[0], batch_size=4)
    # Only float summation order may differ between chunkings.
    np.testing.assert_allclose(one, four, rtol=1e-4, atol=1e-5 * float(np.abs(four).max()))


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_is_deterministic(name, model, images):
    np.testing.assert_array_equal(_explain(name, model, images[0]), _explain(name, model, images[0]))


@pytest.mark.parametrize("name", ["saliency", "guided_backprop", "integrated_gradients", "gradcam", "attention"])
def test_maps_of_an_image_do_not_depend_on_the_rest_of_the_batch(name, model, images):
    x = images[0]
    np.testing.assert_allclose(_explain(name, model, x)[2:3], _explain(name, model, x[2:3]), rtol=1e-4,
                               atol=1e-6 * float(np.abs(_explain(name, model, x)).max()))


def test_each_view_is_traced_once_whatever_the_chunk_sizes(model, images):
    x = images[0]
    for bs in (1, 3, 4):
        Saliency(model).explain(x, batch_size=bs)
        IntegratedGradients(model).explain(x, steps=5, batch_size=bs)
        SmoothGrad(GuidedBackprop(model)).explain(x, samples=2, batch_size=bs)
        LayerGradCAM(model).explain(x, groups=["decoder"], batch_size=bs)
    counts = [fn.experimental_get_tracing_count() for fns in COMPILED.values() for fn in fns.values()]
    assert counts and set(counts) == {1}


def test_chunks_cover_every_row_once_in_balanced_sizes():
    slices = chunked(10, 4, lambda s: s)
    assert [s.stop - s.start for s in slices] == [3, 4, 3]
    assert slices[0].start == 0 and slices[-1].stop == 10
    assert all(a.stop == b.start for a, b in zip(slices, slices[1:]))
    assert chunked(0, 4, lambda s: s) == []
    assert len(chunked(400, 16, lambda s: s)) == 25
    with pytest.raises(ValueError):
        chunked(3, 0, lambda s: s)


def test_targets_predicted_truth_roi_and_empty_fallback(model, images):
    x, masks = images
    truth = target_region(model, x, "truth", masks)
    assert truth.kind == "truth"
    np.testing.assert_allclose(truth.weights.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(truth.weights > 0, masks > 0)
    # Masks at another size are resized to the network output.
    small = target_region(model, x, "truth", masks[:, ::2, ::2])
    assert small.weights.shape == (4, SIZE, SIZE)
    roi = np.zeros((SIZE, SIZE), bool)
    roi[:4, :4] = True
    region = target_region(model, x, roi)
    assert region.kind == "roi" and (region.weights[:, :4, :4] > 0).all() and region.weights[:, 4:].sum() == 0
    empty = target_region(model, x, np.zeros((4, SIZE, SIZE), bool))
    assert empty.fallback.all()
    np.testing.assert_allclose(empty.weights, 1.0 / SIZE ** 2)
    assert "whole image" in empty.describe()
    with pytest.raises(ValueError, match="masks"):
        target_region(model, x, "truth")
    with pytest.raises(ValueError, match="target"):
        target_region(model, x, "everything")


def test_a_region_of_interest_changes_what_is_explained(model, images):
    x = images[0]
    left = np.zeros((SIZE, SIZE), bool)
    left[:, :8] = True
    right = np.zeros((SIZE, SIZE), bool)
    right[:, -8:] = True
    assert not np.allclose(Saliency(model).explain(x, target=left), Saliency(model).explain(x, target=right))
    # Not on dec1_relu2: before a 1x1 output convolution the channel weights are the output
    # kernel whatever the region (see the cam module notes); deeper layers depend on it.
    a = GradCAM(model).explain(x, target=left, layer="enc2_relu2")
    b = GradCAM(model).explain(x, target=right, layer="enc2_relu2")
    assert not np.allclose(a, b)


def test_settings_import_without_tensorflow_and_load_through_the_config_reader():
    code = ("import sys; from glassbox_audit.xai.settings import XaiSettings; from glassbox_audit.xai import "
            "XaiSettings as S; XaiSettings().validate(); assert 'tensorflow' not in sys.modules, 'tf imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
    from glassbox_audit.config import from_dict

    s = from_dict(XaiSettings, {"methods": ["saliency"], "ig_steps": 64, "gradcam_groups": ["encoder"]})
    assert s.ig_steps == 64 and s.methods == ["saliency"]
    for f in dataclasses.fields(XaiSettings):
        assert f.type in ("int", "float", "bool", "str", "list[str]"), f.name


@pytest.mark.parametrize("change, key", [
    ({"methods": ["lime"]}, "xai.methods"), ({"ig_steps": 1}, "xai.ig_steps"),
    ({"ig_baseline": "grey"}, "xai.ig_baseline"), ({"batch_size": 0}, "xai.batch_size"),
    ({"gradcam_groups": ["head"]}, "xai.gradcam_groups"), ({"target": "roi"}, "xai.target"),
    ({"smoothgrad_base": "gradcam"}, "xai.smoothgrad_base"), ({"blur_sigma": 0.0}, "xai.blur_sigma"),
])
def test_settings_refuse_impossible_values_naming_the_key(change, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        XaiSettings(**change).validate()


@pytest.fixture(scope="module")
def batch_result(model, images):
    plain = build_attention_unet(SIZE, depth=2, base_filters=4, attention_gates=False)
    settings = XaiSettings(ig_steps=4, smoothgrad_samples=2, slic_segments=20, deletion_steps=4,
                           randomisation_steps=1, randomisation_methods=["gradcam"], batch_size=8)
    return explain_batch({"gated": model, "plain": plain}, images[0][:2], images[1][:2], settings,
                         image_ids=["img0", "img1"])


def test_variants_of_one_architecture_share_one_set_of_traces_and_keep_their_own_maps(images):
    """Fine-tunes of one base are explained on one shared model with each variant's weights
    copied in: nothing is traced for the variants themselves, and each variant's maps, curves
    and randomisation figures are exactly those it gets when explained alone."""
    keras.utils.set_random_seed(11)
    first = build_attention_unet(SIZE, depth=2, base_filters=4)
    second = keras.models.clone_model(first)
    second.set_weights([w * 1.5 if w.ndim == 4 else w for w in first.get_weights()])
    settings = XaiSettings(methods=["saliency", "integrated_gradients", "gradcam", "attention"], ig_steps=3,
                           deletion_steps=3, randomisation_steps=1, randomisation_methods=["saliency"], batch_size=4)
    x, masks = images[0][:3], images[1][:3]
    together = explain_batch({"first": first, "second": second}, x, masks, settings)
    assert first not in COMPILED and second not in COMPILED  # both ran on the shared model
    for name, model in (("first", first), ("second", second)):
        alone = explain_batch({name: model}, x, masks, settings)
        for key, per in alone.maps.items():
            np.testing.assert_array_equal(together.maps[key][name], per[name], err_msg=key)
        mine = [c for c in together.curves if c.model == name]
        assert [(c.check, c.method) for c in mine] == [(c.check, c.method) for c in alone.curves]
        for a, b in zip(mine, alone.curves):
            np.testing.assert_array_equal(a.curves, b.curves)
        np.testing.assert_array_equal([r.spearman for r in together.randomisation if r.model == name][0],
                                      alone.randomisation[0].spearman)
    assert not np.array_equal(together.maps["saliency"]["first"], together.maps["saliency"]["second"])


def test_explain_batch_maps_every_method_for_every_model(batch_result):
    r = batch_result
    assert r.models == ["gated", "plain"]
    for key in ("saliency", "smoothgrad", "guided_backprop", "integrated_gradients", "gradcam",
                "layer_gradcam/encoder", "layer_gradcam/decoder", "superpixel/confidence"):
        assert set(r.maps[key]) == {"gated", "plain"}, key
        assert r.maps[key]["gated"].shape == (2, SIZE, SIZE)
        assert r.params[key].get("target") == (None if key.startswith("superpixel") else "predicted")
    # No attention gates in "plain": its attention maps are skipped, with a note.
    assert set(r.maps["attention"]) == {"gated"} and set(r.maps["layer_gradcam/attention"]) == {"gated"}
    assert any("plain" in n and "attention" in n for n in r.notes)
    assert r.params["integrated_gradients"]["steps"] == 4
    assert set(r.completeness) == {"gated", "plain"}
    assert set(r.timings["saliency"]) == {"gated", "plain"}


def test_explain_batch_rows_are_flat_with_the_same_keys_per_check(batch_result):
    rows = batch_result.check_rows() + batch_result.summary_rows() + batch_result.timing_rows()
    keys: dict[tuple, set] = {}
    for row in rows:
        assert all(isinstance(v, (str, int, float)) for v in row.values())
        keys.setdefault((row.get("check"), "n_images" in row), set()).add(tuple(row))
    assert all(len(v) == 1 for v in keys.values()), keys
    methods = {r["method"] for r in batch_result.summary_rows() if r["check"] == "deletion"}
    assert {"saliency", "gradcam", "random", "attention"} <= methods
    assert not any(m.startswith("superpixel") for m in methods)
    rand = {(r["model"], r["method"]) for r in batch_result.summary_rows() if r["check"] == "randomisation"}
    assert rand == {("gated", "gradcam"), ("plain", "gradcam")}


def test_figures_are_written_once_per_method_and_byte_reproducible(batch_result, images, tmp_path):
    native = [(im * 255).astype(np.uint8) for im in images[0][:2]]
    native[1] = np.ascontiguousarray(np.repeat(np.repeat(native[1], 2, axis=0), 3, axis=1))  # another size
    written = render_xai_figures(batch_result, native, tmp_path / "a", prefix="batch0001_", dpi=40, scale=0.6)
    names = [p.name for p, _, _ in written]
    assert len(names) == len(set(names))
    assert "batch0001_xai_integrated_gradients.png" in names
    assert "batch0001_xai_layer_gradcam_gated.png" in names and "batch0001_xai_attention_gated.png" in names
    assert "batch0001_xai_attention_plain.png" not in names
    assert {k for _, k, _ in written} == {"xai", "xai_layers", "xai_check"}
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and desc for p, _, desc in written)
    # The seconds go into the description, not the picture (which then depends on the maps only).
    desc = dict((p.name, d) for p, _, d in written)["batch0001_xai_integrated_gradients.png"]
    assert f"gated {batch_result.timings['integrated_gradients']['gated']:.1f} s" in desc
    # Byte-reproducible: each kind of figure drawn again from the same inputs.
    r = batch_result
    again = {
        "batch0001_xai_integrated_gradients.png": lambda p: save_map_grid(
            p, native, r.maps["integrated_gradients"], r.image_ids, _caption(r, "integrated_gradients"),
            key="integrated_gradients", scale=0.6, dpi=40),
        "batch0001_xai_deletion_insertion.png": lambda p: save_curves_figure(p, r.curves, dpi=40),
        "batch0001_xai_randomisation.png": lambda p: save_randomisation_figure(p, r.randomisation, dpi=40),
    }
    for name, draw in again.items():
        assert draw(tmp_path / name).read_bytes() == (tmp_path / "a" / name).read_bytes(), name


def _caption(result, key):
    """The caption render_xai_figures prints under a method grid (kept in step with it)."""
    from glassbox_audit.xai.figures import TITLES, params_line

    lines = [f"{TITLES[key]}. Parameters: {params_line(result.params[key])}.",
             f"Explained: {result.targets['gated'].describe()}."]
    return "\n".join(lines)


@keras.saving.register_keras_serializable(package="glassbox_tests")
class _ForgetfulScale(keras.layers.Layer):
    """Multiplies by a factor set after construction, which its config (Keras records the
    constructor's arguments) leaves out: a clone from the config scales by 1."""

    factor = 1.0

    def call(self, x):
        return x * self.factor


def _forgetful_model(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="enc1_conv1")(inputs)
    scale = _ForgetfulScale(name="scale")
    scale.factor = 3.0
    x = scale(x)
    return keras.Model(inputs, keras.layers.Conv2D(1, 1, name="logits")(x), name="forgetful")


def test_variants_whose_shared_copy_would_compute_otherwise_are_explained_on_their_own_models(images, caplog):
    """Two external models with one configuration, whose custom layer keeps state the config
    leaves out: the shared copy would explain another function, so each is explained alone."""
    first, second = _forgetful_model(1), _forgetful_model(2)
    assert first.to_json() == second.to_json()
    settings = XaiSettings(methods=["saliency"], deletion_steps=3, randomisation_steps=1,
                           randomisation_methods=["saliency"], batch_size=4)
    x, masks = images[0][:2], images[1][:2]
    with caplog.at_level("WARNING", logger="glassbox_audit.xai.batch"):
        together = explain_batch({"first": first, "second": second}, x, masks, settings)
    assert "computes otherwise" in caplog.text
    assert first in COMPILED and second in COMPILED  # each traced for itself, not via the shared copy
    for name, model in (("first", first), ("second", second)):
        alone = explain_batch({name: model}, x, masks, settings)
        np.testing.assert_array_equal(together.maps["saliency"][name], alone.maps["saliency"][name])
