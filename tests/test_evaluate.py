"""Evaluation counts at the ground truth's native resolution, batch by batch."""

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import pytest

from conftest import disc_pair, write_png
from glassbox_audit.config import DataConfig, EvalConfig, FolderConfig
from glassbox_audit.data import load_dataset
from glassbox_audit.errors import ConfigError
from glassbox_audit.evaluate import evaluate_models, predict_batches, select_batches


@dataclass
class Handle:
    name: str
    model: Any
    sha256: str = "0" * 64


def dark_is_lesion(size: int) -> keras.Model:
    """A fixed 'model' whose logit is positive where the red channel is dark: the discs."""
    inputs = keras.Input((size, size, 3))
    conv = keras.layers.Conv2D(1, 1, name="logits")
    out = conv(inputs)
    conv.set_weights([np.array([-20.0, 0, 0], "float32").reshape(1, 1, 3, 1), np.array([10.0], "float32")])
    return keras.Model(inputs, out)


@pytest.fixture
def disc_data(tmp_path):
    sizes = [(57, 76), (90, 60), (40, 40)]
    for i in range(14):
        image, mask = disc_pair(i, *sizes[i % 3])
        write_png(tmp_path / "images" / f"D{i:02d}.png", image)
        write_png(tmp_path / "masks" / f"D{i:02d}.png", mask)
    return load_dataset(DataConfig(layout="folder", root=str(tmp_path),
                                   folder=FolderConfig(val_fraction=0.1, test_fraction=0.5)))


def test_counts_cover_every_native_pixel_and_predictions_are_accurate(disc_data):
    [ev] = evaluate_models([Handle("fixed", dark_is_lesion(32))], disc_data, 32, EvalConfig(batch_size=3))
    native = np.array([f.height * f.width for f in disc_data.files if f.partition == "test" and f.role == "mask"])
    assert sorted(ev.counts.sum(axis=1).tolist()) == sorted(native.tolist())
    assert ev.summary["macro"]["dice"] > 0.9
    assert len(ev.ids) == disc_data.counts["test"]


def test_batch_rows_agree_with_image_rows(disc_data):
    [ev] = evaluate_models([Handle("fixed", dark_is_lesion(32))], disc_data, 32, EvalConfig(batch_size=3))
    rows = ev.batches()
    assert [r["batch_index"] for r in rows] == list(range(len(rows)))
    assert sum(r["n_images"] for r in rows) == len(ev.ids)
    assert sum(r["tp"] for r in rows) == ev.counts[:, 0].sum()
    first = ev.batch_index == 0
    assert rows[0]["mean_dice"] == pytest.approx(ev.per_image["dice"][first].mean())


def test_several_models_are_evaluated_in_one_pass_in_order(disc_data):
    models = [Handle("a", dark_is_lesion(32)), Handle("b", dark_is_lesion(32))]
    evals = evaluate_models(models, disc_data, 32, EvalConfig(batch_size=4))
    assert [e.name for e in evals] == ["a", "b"]
    np.testing.assert_array_equal(evals[0].counts, evals[1].counts)


def test_default_selection_is_the_mean_worst_and_best_batch(disc_data):
    [ev] = evaluate_models([Handle("balanced", dark_is_lesion(32))], disc_data, 32, EvalConfig(batch_size=2))
    chosen = select_batches([ev], EvalConfig(batch_size=2))
    target = ev.summary["macro"]["dice"]
    rows = ev.batches()
    gaps = {r["batch_index"]: abs(r["mean_dice"] - target) for r in rows}
    by_reason = {reason.split(":")[0]: b for b, reasons in chosen for reason in reasons.split("; ")}
    assert gaps[by_reason["mean"]] == min(gaps.values())
    assert by_reason["worst"] == min(rows, key=lambda r: r["mean_dice"])["batch_index"]
    assert by_reason["best"] == max(rows, key=lambda r: r["mean_dice"])["batch_index"]
    assert len({b for b, _ in chosen}) == len(chosen)  # each batch once


def test_selecting_a_batch_that_does_not_exist_names_the_key(disc_data):
    [ev] = evaluate_models([Handle("balanced", dark_is_lesion(32))], disc_data, 32, EvalConfig(batch_size=4))
    with pytest.raises(ConfigError, match="evaluate.selected_batches"):
        select_batches([ev], EvalConfig(batch_size=4, selected_batches=[99]))


def test_figure_batches_return_native_images_and_probabilities(disc_data):
    handle = Handle("fixed", dark_is_lesion(32))
    [view] = predict_batches([handle], disc_data, 32, EvalConfig(batch_size=3), [1])
    assert view.index == 1 and len(view.ids) == len(view.images) == len(view.masks)
    for image, mask, prob in zip(view.images, view.masks, view.probs["fixed"]):
        assert image.shape[:2] == mask.shape == prob.shape
        assert 0 <= prob.min() and prob.max() <= 1
