"""XAI methods against their definitions: finite differences, completeness, the guided rule."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from scipy.special import expit

from glassbox_audit.models.unet import build_attention_unet
from glassbox_audit.xai import (AttentionMaps, GradCAM, GuidedBackprop, IntegratedGradients, LayerGradCAM, Saliency,
                                SmoothGrad, SuperpixelConfidence, attention_layers, engine_options, folded_view,
                                group_layers, guided_view, logits_view, spatial_layers, target_region)
from glassbox_audit.xai.engine import COMPILED
from glassbox_audit.xai.maths import superpixel_statistics

from conftest import disc_pair


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    x = np.stack([disc_pair(seed + i, size, size)[0] for i in range(n)]).astype(np.float32) / 255.0
    x += np.random.default_rng(seed).normal(0, 0.05, x.shape).astype(np.float32)
    return np.clip(x, 0.02, 0.98)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(5)
    return build_attention_unet(32, depth=2, base_filters=4)


@pytest.fixture(scope="module")
def strong(model):
    """The model with its output scaled up 100x: an untrained net's logits barely move along a
    path, and completeness must be measured on a change well above float32 rounding."""
    net = keras.models.clone_model(model)
    net.set_weights(model.get_weights())
    kernel, bias = net.get_layer("logits").get_weights()
    net.get_layer("logits").set_weights([kernel * 100, bias * 100])
    return net


@pytest.fixture(scope="module")
def images():
    return _images(3, 32)


# --------------------------------------------------------------------------- saliency


def test_saliency_equals_a_finite_difference_gradient_in_float64():
    keras.utils.set_random_seed(7)
    floatx, policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")  # the Input layer's dtype
    keras.config.set_dtype_policy("float64")  # every other layer's, once a policy is in use
    try:
        net = build_attention_unet(16, depth=2, base_filters=4, dropout=0.0)
    finally:
        keras.config.set_floatx(floatx)
        keras.config.set_dtype_policy(policy)
    assert net.get_layer("enc1_conv1").compute_dtype == "float64"
    x = _images(1, 16, seed=11)
    region = target_region(net, x)
    grad_sum = Saliency(net).explain(x, target=region, abs=False, reduce="sum")[0]
    grad_absmax = Saliency(net).explain(x, target=region)[0]

    # Central differences, every pixel and channel of the image in one batched call.
    # A small step keeps both sides on the same linear piece of every ReLU. Called directly:
    # Model.predict would cast the float64 batch to float32.
    eps = 1e-5
    x64 = x[0].astype(np.float64)
    h, w, c = x64.shape
    bumps = np.eye(h * w * c).reshape(h * w * c, h, w, c) * eps
    batch = np.concatenate([x64 + bumps, x64 - bumps])
    f = (net(batch, training=False).numpy()[..., 0] * region.weights[0]).sum(axis=(1, 2))
    fd = ((f[: h * w * c] - f[h * w * c:]) / (2 * eps)).reshape(h, w, c)

    scale = np.abs(fd).max()
    np.testing.assert_allclose(grad_sum, fd.sum(axis=-1), atol=1e-6 * scale)
    np.testing.assert_allclose(grad_absmax, np.abs(fd).max(axis=-1), atol=1e-6 * scale)


# --------------------------------------------------------------------------- integrated gradients


@pytest.mark.parametrize("baseline", ["black", "blurred", "uniform"])
def test_integrated_gradients_are_complete_with_enough_steps(strong, images, baseline):
    maps, check = IntegratedGradients(strong).explain(images, steps=64, baseline=baseline, return_completeness=True)
    np.testing.assert_allclose(maps.reshape(3, -1).sum(axis=1), check.attribution_sum, rtol=1e-4, atol=1e-6)
    delta = check.f_input - check.f_baseline
    assert (np.abs(delta) > 0.05).all()  # a meaningful test: the target moves along the path
    # Sundararajan et al. ask for 5 %; 64 Gauss-Legendre points reach about 1 % on this net.
    assert (check.relative_error < 0.02).all(), check.relative_error
    np.testing.assert_allclose(check.error, check.attribution_sum - delta)


def test_integration_rules_converge_and_few_steps_are_flagged(strong, images):
    _, coarse = IntegratedGradients(strong).explain(images, steps=2, rule="riemann_middle", return_completeness=True)
    _, fine = IntegratedGradients(strong).explain(images, steps=128, rule="riemann_middle", return_completeness=True)
    assert fine.relative_error.max() < 0.01
    assert fine.relative_error.mean() < coarse.relative_error.mean()


def test_integrated_gradients_accept_an_array_baseline(model, images):
    grey = np.full(images.shape[1:], 0.5, np.float32)
    _, check = IntegratedGradients(model).explain(images, steps=32, baseline=grey, return_completeness=True)
    grey_logits = logits_view(model)(np.broadcast_to(grey, images.shape)).numpy()[..., 0]
    region = target_region(model, images)
    np.testing.assert_allclose(check.f_baseline, (grey_logits * region.weights).sum(axis=(1, 2)), rtol=1e-4)


# --------------------------------------------------------------------------- guided backprop


def _relu_pair_model(w_pos: float, w_neg: float) -> keras.Model:
    """logit = w_pos * relu(x) + w_neg * relu(-x), per pixel, through three kinds of ReLU."""
    inp = keras.Input((4, 4, 1))
    split = keras.layers.Conv2D(2, 1, use_bias=False, name="split")(inp)
    if w_pos >= 0:  # exercise both a ReLU inside a layer and a standalone ReLU layer
        act = keras.layers.Activation("relu", name="relu")(split)
    else:
        act = keras.layers.ReLU(name="relu")(split)
    out = keras.layers.Conv2D(1, 1, use_bias=False, name="logits")(act)
    net = keras.Model(inp, out)
    net.get_layer("split").set_weights([np.array([1.0, -1.0], np.float32).reshape(1, 1, 1, 2)])
    net.get_layer("logits").set_weights([np.array([w_pos, w_neg], np.float32).reshape(1, 1, 2, 1)])
    return net


def test_guided_backprop_passes_only_positive_gradients():
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 4, 4, 1) + 0.01
    everywhere = np.ones((4, 4), bool)
    # logit = relu(x) - relu(-x) = x: the plain gradient is 1 everywhere; the guided rule
    # blocks the negative path (upstream gradient -1), leaving 1 only where x > 0.
    net = _relu_pair_model(1.0, -1.0)
    plain = Saliency(net).explain(x, target=everywhere, abs=False, reduce="sum")[0]
    guided = GuidedBackprop(net).explain(x, target=everywhere, reduce="sum")[0]
    np.testing.assert_allclose(plain, np.full((4, 4), 1 / 16), rtol=1e-6)
    np.testing.assert_allclose(guided, (x[0, ..., 0] > 0) / 16, rtol=1e-6)
    # logit = -relu(x) - relu(-x) = -|x|: every upstream gradient is negative, nothing passes.
    net = _relu_pair_model(-1.0, -1.0)
    assert np.abs(Saliency(net).explain(x, target=everywhere, abs=False, reduce="sum")).min() > 0
    np.testing.assert_array_equal(GuidedBackprop(net).explain(x, target=everywhere, reduce="sum"), 0.0)


def test_guided_view_computes_the_same_outputs_and_follows_weight_changes(model, images):
    np.testing.assert_allclose(guided_view(model)(images).numpy(), model(images).numpy(), rtol=1e-5, atol=1e-6)
    names = {layer.name for layer in guided_view(model).layers if getattr(layer, "activation", None) is not None
             and getattr(layer.activation, "__name__", "") == "relu"}
    assert not names  # every ReLU became guided
    probe = _relu_pair_model(1.0, -1.0)
    x = np.full((1, 4, 4, 1), 0.5, np.float32)
    before = GuidedBackprop(probe).explain(x, target=np.ones((4, 4), bool), reduce="sum")
    probe.get_layer("logits").set_weights([np.array([2.0, -1.0], np.float32).reshape(1, 1, 2, 1)])
    after = GuidedBackprop(probe).explain(x, target=np.ones((4, 4), bool), reduce="sum")
    np.testing.assert_allclose(after, 2 * before, rtol=1e-6)


# --------------------------------------------------------------------------- engine options


@pytest.fixture(scope="module")
def normalised(model):
    """The model with batch-norm statistics far from the identity, as after training."""
    net = keras.models.clone_model(model)
    net.set_weights(model.get_weights())
    rng = np.random.default_rng(7)
    for layer in net.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 2, c), rng.normal(0, 0.3, c), rng.normal(0, 0.3, c),
                               rng.uniform(0.2, 3, c)])
    return net


def test_folded_view_has_no_batch_norm_and_computes_the_same_function(normalised, images):
    view = folded_view(normalised)
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in normalised.layers)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in view.layers)
    assert view.count_params() < normalised.count_params()
    # Layer names survive, so Grad-CAM layers and groups still resolve on the view.
    assert {layer.name for layer in view.layers} == {layer.name for layer in normalised.layers}
    np.testing.assert_allclose(view(images).numpy(), normalised(images).numpy(), rtol=1e-5, atol=1e-5)


def test_folded_view_follows_weight_changes_of_the_model(normalised, images):
    before = folded_view(normalised)(images).numpy()
    bn = normalised.get_layer("enc1_norm1")
    saved = bn.get_weights()
    try:
        bn.set_weights([saved[0] * 3, *saved[1:]])
        changed = normalised(images).numpy()
        assert np.abs(changed - before).max() > 1e-3
        np.testing.assert_allclose(folded_view(normalised)(images).numpy(), changed, rtol=1e-5, atol=1e-5)
    finally:
        bn.set_weights(saved)


@pytest.mark.parametrize("options", [{"fold_batchnorm": True}, {"jit_compile": True},
                                     {"fold_batchnorm": True, "jit_compile": True}], ids=["fold", "xla", "fold+xla"])
def test_engine_options_leave_every_gradient_map_unchanged(options, normalised, images):
    region = target_region(normalised, images)
    methods = {
        "saliency": lambda: Saliency(normalised).explain(images, region, abs=False, reduce="sum"),
        "guided_backprop": lambda: GuidedBackprop(normalised).explain(images, region, reduce="sum"),
        "integrated_gradients": lambda: IntegratedGradients(normalised).explain(images, region, steps=4),
        "smoothgrad": lambda: SmoothGrad(Saliency(normalised)).explain(images, region, samples=2),
    }
    for name, explain in methods.items():
        plain = explain()
        with engine_options(**options) as used:
            assert all(getattr(used, k) == v for k, v in options.items())
            fast = explain()
        # Equal to float32 rounding: a tolerance well below any visible difference.
        np.testing.assert_allclose(fast, plain, rtol=1e-4, atol=1e-5 * np.abs(plain).max(), err_msg=name)
    # ... and the options were in force: the passes ran on the view and compiler they name.
    jit = options.get("jit_compile", False)
    for view in (folded_view(normalised), guided_view(normalised, fold_batchnorm=True)) if options.get(
            "fold_batchnorm") else (normalised, guided_view(normalised)):
        assert ("gradient", jit) in COMPILED.get(view, {})


# --------------------------------------------------------------------------- logits view


def test_models_ending_in_a_sigmoid_are_explained_on_their_logits(model, images):
    # Same weights, sigmoid inside the last layer: the view clones it with a linear output.
    def sigmoid_last(layer):
        cfg = layer.get_config()
        if layer.name == "logits":
            cfg["activation"] = "sigmoid"
        return layer.__class__.from_config(cfg)

    inside = keras.models.clone_model(model, clone_function=sigmoid_last)
    inside.set_weights(model.get_weights())
    # Or a trailing Activation layer: the view cuts it off and shares the weights.
    trailing = keras.Model(model.input, keras.layers.Activation("sigmoid")(model.output))
    reference = model(images).numpy()
    for net in (inside, trailing):
        np.testing.assert_allclose(expit(reference), net(images).numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(logits_view(net)(images).numpy(), reference, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(Saliency(net).explain(images), Saliency(model).explain(images), rtol=1e-4,
                                   atol=1e-7)
    assert logits_view(model) is model


# --------------------------------------------------------------------------- Grad-CAM


def test_gradcam_works_for_every_spatial_layer_of_the_model(model, images):
    layers = spatial_layers(model)
    shapes = {name: model.get_layer(name).output.shape for name in layers}
    assert all(len(s) == 4 for s in shapes.values())
    assert {"enc1_conv1", "enc1_pool", "bottleneck_se_scale", "att1_coef", "dec1_relu2", "logits"} <= set(layers)
    maps = LayerGradCAM(model).explain(images, groups=[], layers=layers)
    assert set(maps) == set(layers)
    for name, m in maps.items():
        assert m.shape == (3, 32, 32) and m.dtype == np.float32, name
        assert np.isfinite(m).all() and m.min() >= 0 and m.max() <= 1, name
    # The one-layer class gives the same maps as the shared pass.
    for name in ("att1_gated",):
        np.testing.assert_allclose(GradCAM(model).explain(images, layer=name), maps[name], rtol=1e-4, atol=1e-6)


def test_layer_gradcam_groups_use_each_blocks_output_layer(model, images):
    assert group_layers(model, "encoder") == ["enc1_relu2", "enc2_relu2"]
    assert group_layers(model, "attention") == ["att2_gated", "att1_gated"]
    assert group_layers(model, "decoder") == ["dec2_relu2", "dec1_relu2"]
    assert group_layers(model, "output") == ["logits"]
    maps = LayerGradCAM(model).explain(images, smoothing=1.0)
    assert set(maps) == {"encoder", "bottleneck", "attention", "decoder", "output"}
    assert all(m.max() <= 1 and m.min() >= 0 for m in maps.values())
    plain = build_attention_unet(32, depth=2, base_filters=4, attention_gates=False)
    assert "attention" not in LayerGradCAM(plain).explain(images)
    with pytest.raises(ValueError, match="4-D"):
        GradCAM(model).explain(images, layer="no_such_layer")


# --------------------------------------------------------------------------- superpixels, attention


def test_superpixel_maps_are_bounded_and_constant_per_superpixel(model, images):
    sp = SuperpixelConfidence(model).superpixels(images, n_segments=25)
    for m in (sp.probability, sp.confidence):
        assert m.dtype == np.float32 and m.min() >= 0 and m.max() <= 1
        for lab, mi in zip(sp.labels, m):
            for k in np.unique(lab)[:5]:
                assert np.ptp(mi[lab == k]) == 0
    np.testing.assert_allclose(SuperpixelConfidence(model).explain(images, n_segments=25), sp.confidence)
    # Extreme probabilities stay within bounds; confidence is the mean of |2p - 1|.
    labels = np.array([[[0, 0], [1, 1]]])
    p, c = superpixel_statistics(labels, np.array([[[0.0, 1.0], [0.5, 0.5]]]))
    np.testing.assert_allclose(p[0], [[0.5, 0.5], [0.5, 0.5]])
    np.testing.assert_allclose(c[0], [[1.0, 1.0], [0.0, 0.0]])


def test_attention_maps_are_the_models_own_gate_coefficients(model, images):
    assert attention_layers(model) == ["att1_coef", "att2_coef"]
    per_gate = AttentionMaps(model).explain_layers(images)
    probe = keras.Model(model.input, model.get_layer("att1_coef").output)
    np.testing.assert_allclose(per_gate["att1_coef"], probe(images).numpy()[..., 0], rtol=1e-5, atol=1e-6)
    assert per_gate["att2_coef"].shape == (3, 32, 32)  # upsampled from 16 px
    np.testing.assert_allclose(AttentionMaps(model).explain(images), (per_gate["att1_coef"] + per_gate["att2_coef"]) / 2,
                               rtol=1e-6)
    plain = build_attention_unet(32, depth=2, base_filters=4, attention_gates=False)
    with pytest.raises(ValueError, match="no attention gates"):
        AttentionMaps(plain).explain(images)
