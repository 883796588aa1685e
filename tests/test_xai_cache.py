"""XAI result cache: hits return exactly what was computed, anything changed or broken recomputes."""

from __future__ import annotations

import dataclasses
import json
import zipfile

import keras
import numpy as np
import pytest

from glassbox_audit.models.unet import build_attention_unet
from glassbox_audit.xai import XaiCache, XaiSettings, explain_batch, model_sha256
from glassbox_audit.xai import batch as batch_module
from glassbox_audit.xai.cache import _NOT_IN_KEY

from conftest import disc_pair

SIZE = 32
# Every part of a result (maps of each family, completeness, curves, randomisation, notes)
# at the smallest sizes that still compute it.
SETTINGS = XaiSettings(ig_steps=3, smoothgrad_samples=2, slic_segments=12, deletion_steps=3, randomisation_steps=1,
                       randomisation_methods=["saliency", "gradcam"], batch_size=4)


@pytest.fixture(scope="module")
def models():
    keras.utils.set_random_seed(5)
    gated = build_attention_unet(SIZE, depth=2, base_filters=4)
    plain = build_attention_unet(SIZE, depth=2, base_filters=4, attention_gates=False)
    return {"gated": gated, "plain": plain}


@pytest.fixture(scope="module")
def batch():
    pairs = [disc_pair(i, SIZE, SIZE) for i in range(3)]
    x = np.stack([p[0] for p in pairs]).astype(np.float32) / 255.0
    x += np.random.default_rng(1).normal(0, 0.03, x.shape).astype(np.float32)
    return np.clip(x, 0, 1).astype(np.float32), np.stack([p[1] for p in pairs])


@pytest.fixture(scope="module")
def first(models, batch, tmp_path_factory):
    """A first call computing every result into a fresh cache folder."""
    folder = tmp_path_factory.mktemp("xai-cache")
    result = explain_batch(models, *batch, SETTINGS, image_ids=["a", "b", "c"], cache_dir=folder)
    return folder, result


def _no_compute(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("explanations were recomputed")

    monkeypatch.setattr(batch_module, "_explain_model", fail)


def _assert_same(a, b):
    assert list(a.maps) == list(b.maps)
    for key in a.maps:
        assert list(a.maps[key]) == list(b.maps[key])
        for m in a.maps[key]:
            assert a.maps[key][m].dtype == b.maps[key][m].dtype
            np.testing.assert_array_equal(a.maps[key][m], b.maps[key][m])
    assert a.params == b.params
    assert a.timings == b.timings
    assert a.notes == b.notes
    for m in a.targets:
        np.testing.assert_array_equal(a.targets[m].weights, b.targets[m].weights)
        np.testing.assert_array_equal(a.targets[m].fallback, b.targets[m].fallback)
        assert a.targets[m].kind == b.targets[m].kind
    assert a.summary_rows() == b.summary_rows() or _nan_equal(a.summary_rows(), b.summary_rows())
    assert _nan_equal(a.check_rows(), b.check_rows())
    assert [(c.check, c.method, c.model) for c in a.curves] == [(c.check, c.method, c.model) for c in b.curves]
    for ra, rb in zip(a.randomisation, b.randomisation):
        assert (ra.method, ra.model, ra.blocks, ra.depths) == (rb.method, rb.model, rb.blocks, rb.depths)
        np.testing.assert_array_equal(ra.ssim, rb.ssim)


def _nan_equal(rows_a, rows_b):
    return json.dumps(rows_a, sort_keys=True) == json.dumps(rows_b, sort_keys=True)


def test_a_second_call_reads_every_result_from_the_cache_unchanged(first, models, batch, monkeypatch):
    folder, computed = first
    assert computed.cached == []
    assert len(list(folder.glob("*.npz"))) == 2  # one entry per model
    assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*"))  # no temporary file left behind
    _no_compute(monkeypatch)
    again = explain_batch(models, *batch, SETTINGS, image_ids=["a", "b", "c"], cache_dir=folder)
    assert again.cached == ["gated", "plain"]
    _assert_same(computed, again)
    # Every family made it through the file, including the completeness check and the notes.
    assert {"saliency", "smoothgrad", "integrated_gradients", "layer_gradcam/encoder", "superpixel/confidence",
            "attention"} <= set(again.maps)
    np.testing.assert_array_equal(again.completeness["plain"].error, computed.completeness["plain"].error)
    assert any("plain" in n for n in again.notes)


def test_cached_results_say_so_in_the_figure_descriptions(first, models, batch, tmp_path):
    from glassbox_audit.xai import render_xai_figures

    folder, computed = first
    native = [(im * 255).astype(np.uint8) for im in batch[0]]

    def descriptions(result, out):
        return {p.name: d for p, _, d in render_xai_figures(result, native, tmp_path / out, dpi=30)}

    assert "cache" not in descriptions(computed, "computed")["xai_saliency.png"]
    cached = explain_batch(models, *batch, SETTINGS, image_ids=computed.image_ids, cache_dir=folder)
    assert cached.cached  # read from the cache, not computed again
    assert "read from the cache" in descriptions(cached, "cached")["xai_saliency.png"]
    # The picture itself shows only the maps: the same bytes whether computed or read.
    assert (tmp_path / "cached" / "xai_saliency.png").read_bytes() == \
        (tmp_path / "computed" / "xai_saliency.png").read_bytes()


def test_a_changed_setting_misses_and_recomputes(first, models, batch):
    folder, computed = first
    changed = dataclasses.replace(SETTINGS, ig_steps=4)
    result = explain_batch(models, *batch, changed, cache_dir=folder)
    assert result.cached == []
    assert result.params["integrated_gradients"]["steps"] == 4
    assert not np.array_equal(result.maps["integrated_gradients"]["gated"],
                              computed.maps["integrated_gradients"]["gated"])


def test_every_setting_that_shapes_results_is_in_the_key(models, batch, tmp_path):
    cache = XaiCache(tmp_path)
    model, (x, masks) = models["gated"], batch
    base = cache.key(model, "gated", x, masks, SETTINGS).digest
    changes = {"enabled": False, "cache_dir": "elsewhere"}
    for f in dataclasses.fields(XaiSettings):
        value = getattr(SETTINGS, f.name)
        if f.name in _NOT_IN_KEY:
            other = changes[f.name]
            assert cache.key(model, "gated", x, masks, dataclasses.replace(SETTINGS, **{f.name: other})).digest == base
            continue
        other = (not value if isinstance(value, bool) else value + 1 if isinstance(value, (int, float))
                 else value + ["x"] if isinstance(value, list) else value + "x")
        assert cache.key(model, "gated", x, masks, dataclasses.replace(SETTINGS, **{f.name: other})).digest != base, f.name
    # The batch and the ground truth are in the key too.
    assert cache.key(model, "gated", x[::-1], masks, SETTINGS).digest != base
    assert cache.key(model, "gated", x, ~masks.astype(bool), SETTINGS).digest != base
    assert cache.key(model, "other name", x, masks, SETTINGS).digest != base


def test_a_changed_model_misses(first, models, batch):
    folder, computed = first
    keras.utils.set_random_seed(5)
    gated = build_attention_unet(SIZE, depth=2, base_filters=4)  # same seed: the same weights as the fixture
    assert model_sha256(gated) == model_sha256(models["gated"])
    hit = explain_batch({"gated": gated}, *batch, SETTINGS, cache_dir=folder)
    assert hit.cached == ["gated"]
    w = gated.get_layer("logits").get_weights()
    gated.get_layer("logits").set_weights([w[0] * 1.01, *w[1:]])  # one layer retrained a little
    result = explain_batch({"gated": gated}, *batch, SETTINGS, cache_dir=folder)
    assert result.cached == []
    assert not np.array_equal(result.maps["saliency"]["gated"], computed.maps["saliency"]["gated"])


def _entry(folder, models, batch, name="gated"):
    return XaiCache(folder).path(XaiCache(folder).key(models[name], name, *batch, SETTINGS))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "arrays_edited", "another_key"])
def test_a_corrupt_entry_is_recomputed_and_replaced(damage, first, models, batch, tmp_path, monkeypatch):
    folder, computed = first
    local = tmp_path / "cache"
    local.mkdir()
    good = _entry(folder, models, batch)
    target = local / good.name
    data = good.read_bytes()
    if damage == "truncated":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        target.write_bytes(data[:100] + bytes(b ^ 0xFF for b in data[100:300]) + data[300:])
    elif damage == "arrays_edited":
        # A well-formed file whose map was altered after writing: the zip is valid, the
        # sha256 over the arrays is not.
        with np.load(good, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["map_0"] = arrays["map_0"] + 1
        with open(target, "wb") as f:
            np.savez(f, **arrays)
    else:
        # A valid entry of the other model under this key's name: its header names another key.
        target.write_bytes(_entry(folder, models, batch, "plain").read_bytes())
    result = explain_batch({"gated": models["gated"]}, *batch, SETTINGS, cache_dir=local)
    assert result.cached == []
    for key in computed.maps:
        if "gated" in computed.maps[key]:
            np.testing.assert_array_equal(result.maps[key]["gated"], computed.maps[key]["gated"])
    # The bad entry was replaced by a good one: the next call hits.
    _no_compute(monkeypatch)
    assert explain_batch({"gated": models["gated"]}, *batch, SETTINGS, cache_dir=local).cached == ["gated"]
    assert zipfile.is_zipfile(target)


def test_without_a_cache_dir_nothing_is_written(models, batch, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = explain_batch({"plain": models["plain"]}, *batch, dataclasses.replace(SETTINGS, methods=["saliency"],
                                                                                    checks=False,
                                                                                    randomisation=False))
    assert result.cached == [] and list(tmp_path.iterdir()) == []
