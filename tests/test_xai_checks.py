"""Checks of the explanations: deletion / insertion curves, randomisation, and their maths."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from scipy import stats

from glassbox_audit.models.unet import build_attention_unet
from glassbox_audit.xai import (GradCAM, IntegratedGradients, Saliency, cascade_blocks, map_similarity,
                                perturbation_curves, randomisation_check, randomised_copy, target_region)
from glassbox_audit.xai.maths import (curve_auc, integration_nodes, normalise_unit, pixel_ranks, region_weights,
                                      spearman_rows)

from conftest import disc_pair

SIZE = 32


@pytest.fixture(scope="module")
def trained():
    """A tiny U-Net trained for 30 steps on dark discs; Dice is about 0.9 on held-out discs."""
    keras.utils.set_random_seed(0)
    pairs = [disc_pair(i, SIZE, SIZE) for i in range(48)]
    x = np.stack([p[0] for p in pairs]).astype(np.float32) / 255.0
    y = (np.stack([p[1] for p in pairs]) > 0).astype(np.float32)[..., None]
    net = build_attention_unet(SIZE, depth=2, base_filters=4)
    # No XLA: compiling the training step would cost more than the 30 steps themselves.
    net.compile(keras.optimizers.Adam(1e-2), keras.losses.BinaryCrossentropy(from_logits=True), jit_compile=False)
    net.fit(x[8:], y[8:], batch_size=8, epochs=6, verbose=0, shuffle=False)
    pred = net.predict(x[:8], verbose=0)[..., 0] > 0
    truth = y[:8, ..., 0] > 0
    assert 2 * (pred & truth).sum() / (pred.sum() + truth.sum()) > 0.8  # it did learn the discs
    return net, x[:8], truth


# --------------------------------------------------------------------------- randomisation


def test_randomisation_shows_a_clear_drop_for_a_trained_model(trained):
    net, x, _ = trained
    region = target_region(net, x)

    def explain(m):
        return {"gradcam": GradCAM(m).explain(x, target=region),
                "integrated_gradients": IntegratedGradients(m).explain(x, target=region, steps=8),
                "saliency": Saliency(m).explain(x, target=region)}

    original = explain(net)
    results = {r.method: r for r in randomisation_check(net, original, explain, steps=3, model_name="disc")}
    for method, r in results.items():
        assert r.depths[0] == 1 and r.depths[-1] == len(r.blocks), method
        assert r.blocks[0] == "logits" and r.blocks[-1] == "enc1"
        rows = r.summary_rows()
        assert rows[-1]["down_to"] == "enc1" and rows[-1]["model"] == "disc"
    # Fully randomised, the maps have little left in common with the trained model's.
    full = {m: (r.summary_rows()[-1]["spearman_mean"], r.summary_rows()[-1]["ssim_mean"]) for m, r in results.items()}
    assert full["gradcam"][0] < 0.4 and full["gradcam"][1] < 0.4, full
    assert full["integrated_gradients"][0] < 0.6 and full["integrated_gradients"][1] < 0.4, full
    assert full["saliency"][1] < 0.5, full  # edges keep its ranks similar (Adebayo et al.), not its structure
    # The check itself is not what makes them differ: the trained model against itself is 1.
    rho, ssim = map_similarity(original["gradcam"], GradCAM(net).explain(x, target=region))
    np.testing.assert_allclose(rho, 1.0)
    np.testing.assert_allclose(ssim, 1.0)


def test_randomised_copies_cascade_from_the_output_and_leave_the_model_alone(trained):
    net, x, _ = trained
    before = [w.copy() for w in net.get_weights()]
    blocks = [b for b, _ in cascade_blocks(net)]
    assert blocks == ["logits", "dec1", "att1", "dec2", "att2", "bottleneck", "enc2", "enc1"]
    copy = randomised_copy(net, 2, seed=1)
    for layer in copy.layers:
        same = all(np.array_equal(a, b) for a, b in zip(layer.get_weights(), net.get_layer(layer.name).get_weights()))
        block = layer.name.split("_")[0]
        if layer.get_weights() and any(w.ndim >= 2 for w in layer.get_weights()):
            assert same == (block not in ("logits", "dec1")), layer.name
    # Deeper cascades extend shallower ones with the same draws; the original is untouched.
    deeper = randomised_copy(net, 3, seed=1)
    np.testing.assert_array_equal(deeper.get_layer("logits").get_weights()[0], copy.get_layer("logits").get_weights()[0])
    assert all(np.array_equal(a, b) for a, b in zip(before, net.get_weights()))
    assert np.isfinite(deeper.predict(x, verbose=0)).all()


def test_the_randomised_copy_is_cloned_and_traced_once_for_all_batches(trained, monkeypatch):
    """A run checks several batches of each model: the copy and its compiled maps are reused
    (each check overwrites the copy's weights), so a batch costs no new tracing."""
    from glassbox_audit.xai.engine import COMPILED

    net, x, _ = trained
    net = keras.models.clone_model(net)  # a model no other test has checked
    clones = []
    real_clone = keras.models.clone_model
    monkeypatch.setattr(keras.models, "clone_model", lambda m, *a, **k: clones.append(m) or real_clone(m, *a, **k))

    def explain(m):
        return {"saliency": Saliency(m).explain(x, target=target_region(net, x))}

    first = randomisation_check(net, explain(net), explain, steps=2)
    copies = [v for v in COMPILED if v is not net and any(f.experimental_get_tracing_count() for f in COMPILED[v].values())]
    traced = {id(v): [f.experimental_get_tracing_count() for f in COMPILED[v].values()] for v in list(COMPILED)}
    for batch in (x[:4], x[4:]):  # two more batches of the same model
        randomisation_check(net, {"saliency": Saliency(net).explain(batch, target=target_region(net, batch))},
                            lambda m, b=batch: {"saliency": Saliency(m).explain(b, target=target_region(net, b))},
                            steps=2)
    assert clones == [net]  # one copy, made by the first check
    assert copies and {id(v): [f.experimental_get_tracing_count() for f in COMPILED[v].values()]
                        for v in list(COMPILED) if id(v) in traced} == traced  # nothing traced again
    assert [r.depths for r in first] == [[1, len(cascade_blocks(net))]]


# --------------------------------------------------------------------------- deletion / insertion


def test_deletion_and_insertion_curves_rank_an_oracle_above_random(trained):
    net, x, truth = trained
    region = target_region(net, x)
    oracle = (region.weights > 0).astype(np.float32) + np.random.default_rng(1).random(truth.shape, np.float32) * 0.01
    curves = perturbation_curves(net, x, {"oracle": oracle}, region, steps=10, model_name="disc", batch_size=32)
    by = {(c.check, c.method): c for c in curves}
    assert set(by) == {(k, m) for k in ("deletion", "insertion") for m in ("oracle", "random")}
    for c in curves:
        assert c.curves.shape == (8, 11) and c.fractions[0] == 0 and c.fractions[-1] == 1
        assert ((c.curves >= 0) & (c.curves <= 1)).all() and ((c.auc >= 0) & (c.auc <= 1)).all()
    # Both curves share their ends: the unperturbed image and the fully perturbed one.
    np.testing.assert_allclose(by["deletion", "oracle"].curves[:, 0], by["insertion", "random"].curves[:, -1])
    np.testing.assert_allclose(by["deletion", "oracle"].curves[:, -1], by["insertion", "oracle"].curves[:, 0])
    # Removing the predicted lesion first lowers the prediction faster than a random order,
    # and restoring it first raises it faster.
    assert by["deletion", "oracle"].auc.mean() < by["deletion", "random"].auc.mean() - 0.05
    assert by["insertion", "oracle"].auc.mean() > by["insertion", "random"].auc.mean() + 0.1
    # A black baseline is no deletion for dark lesions: the prediction barely moves.
    black = perturbation_curves(net, x, {"oracle": oracle}, region, steps=4, baseline="black")[0]
    assert black.curves[:, -1].mean() > 0.9
    rows = by["deletion", "oracle"].to_rows()
    assert len(rows) == 8 and set(rows[0]) == {"check", "model", "method", "image", "auc", "start", "end"}


def test_curves_run_on_the_folded_copy_and_match_the_model_itself(trained, monkeypatch):
    from glassbox_audit.xai import checks
    from glassbox_audit.xai.views import folded_view, logits_view

    net, x, truth = trained
    region = target_region(net, x)
    maps = {"saliency": Saliency(net).explain(x, target=region)}
    used = []
    monkeypatch.setattr(checks, "folded_view", lambda m: used.append(m) or folded_view(m))
    folded = perturbation_curves(net, x, maps, region, steps=5)
    assert used == [net] and folded_view(net) is not net  # the trained net has norms to fold
    monkeypatch.setattr(checks, "folded_view", logits_view)
    plain = perturbation_curves(net, x, maps, region, steps=5)
    for a, b in zip(folded, plain):
        np.testing.assert_allclose(a.curves, b.curves, rtol=0, atol=1e-5)


def test_curves_do_not_depend_on_the_batch_size(trained):
    net, x, _ = trained
    maps = {"saliency": Saliency(net).explain(x[:3])}
    a = perturbation_curves(net, x[:3], maps, steps=5, batch_size=1)
    b = perturbation_curves(net, x[:3], maps, steps=5, batch_size=64)
    for ca, cb in zip(a, b):
        np.testing.assert_allclose(ca.curves, cb.curves, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        perturbation_curves(net, x[:3], {"bad": np.zeros((3, 8, 8))})


# --------------------------------------------------------------------------- maths


def test_pure_maths_helpers():
    w, empty = region_weights(np.array([[[True, False], [False, False]], [[False, False], [False, False]]]))
    np.testing.assert_allclose(w[0], [[1, 0], [0, 0]])
    np.testing.assert_allclose(w[1], 0.25)
    assert empty.tolist() == [False, True]
    for rule in ("gausslegendre", "riemann_middle", "riemann_trapezoid"):
        a, wt = integration_nodes(9, rule)
        assert abs(wt.sum() - 1) < 1e-6 and a.min() >= 0 and a.max() <= 1
        assert abs((wt * a ** 3).sum() - 0.25) < (1e-6 if rule == "gausslegendre" else 0.01)
    ranks = pixel_ranks(np.array([[[0.1, 0.9], [0.5, 0.5]]]))
    assert ranks.tolist() == [[[3, 0], [1, 2]]]
    np.testing.assert_allclose(curve_auc(np.array([[1.0, 0.0], [1.0, 1.0]])), [0.5, 1.0])
    unit = normalise_unit(np.array([[[0.0, 2.0]], [[0.0, 0.0]], [[-1.0, 0.5]]]))
    np.testing.assert_allclose(unit, [[[0, 1]], [[0, 0]], [[0, 1]]])
    rng = np.random.default_rng(0)
    a, b = rng.random((3, 5, 5)), rng.random((3, 5, 5))
    expected = [stats.spearmanr(a[i].ravel(), b[i].ravel()).statistic for i in range(3)]
    np.testing.assert_allclose(spearman_rows(a, b), expected)
    assert np.isnan(spearman_rows(np.ones((1, 3, 3)), b[:1, :3, :3])[0])
