"""Mask clean-up and test-time augmentation: what is scored when they are switched on."""

import numpy as np
import pytest

from glassbox_audit.config import EvalConfig, load_config
from glassbox_audit.errors import ConfigError
from glassbox_audit.evaluate import binarize, predictor
from glassbox_audit.postprocess import fill_holes, largest_component, postprocess


def _two_blobs():
    m = np.zeros((40, 40), bool)
    m[5:25, 5:25] = True  # 400 px
    m[30:35, 30:35] = True  # 25 px
    return m


def test_largest_component_keeps_only_the_biggest_blob():
    out = largest_component(_two_blobs())
    assert out.sum() == 400 and out[10, 10] and not out[32, 32]


def test_largest_component_leaves_empty_and_single_masks_alone():
    empty = np.zeros((8, 8), bool)
    assert not largest_component(empty).any()
    one = np.zeros((8, 8), bool)
    one[2:5, 2:5] = True
    assert (largest_component(one) == one).all()


def test_fill_holes_fills_enclosed_background_only():
    ring = np.zeros((20, 20), bool)
    ring[4:16, 4:16] = True
    ring[8:12, 8:12] = False
    out = fill_holes(ring)
    assert out[10, 10] and out.sum() == 144 and not out[0, 0]


def test_no_steps_is_a_plain_threshold():
    prob = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    assert (binarize(prob, EvalConfig()) == (prob > 0.5)).all()
    assert (postprocess(prob > 0.5, []) == (prob > 0.5)).all()


def test_binarize_applies_steps_in_order():
    prob = _two_blobs().astype(np.float32)
    prob[10:12, 10:12] = 0.0  # a hole in the big blob
    cfg = EvalConfig(postprocess=["largest_component", "fill_holes"])
    out = binarize(prob, cfg)
    assert out.sum() == 400


def test_unknown_postprocess_step_is_refused_by_name():
    with pytest.raises(ConfigError, match="evaluate.postprocess"):
        load_config(overrides=["evaluate.postprocess=['dilate']"])


def test_tta_prediction_is_flip_equivariant():
    """Averaging over all four flips makes the prediction of a flipped image the flipped
    prediction, whatever the (untrained, asymmetric) model."""
    from glassbox_audit.models.unet import build_attention_unet

    model = build_attention_unet(32, 2, 4, True, False, "batch", 0.0)
    x = np.random.default_rng(1).random((2, 32, 32, 3)).astype(np.float32)
    fn = predictor(model, tta=True)
    a = fn(x).numpy()
    b = fn(x[:, :, ::-1].copy()).numpy()
    np.testing.assert_allclose(a[:, :, ::-1], b, atol=1e-5)
    plain = predictor(model).__call__(x).numpy()
    assert not np.allclose(plain[:, :, ::-1], predictor(model)(x[:, :, ::-1].copy()).numpy(), atol=1e-5)
