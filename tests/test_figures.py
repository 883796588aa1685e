"""Dossier figures: overlay pixels are exact, PNGs are valid and byte-reproducible."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from glassbox_audit.report import charts, kit, overlays
from glassbox_audit.report import grid as layout
from glassbox_audit.report.overlays import ERROR_COLOURS, error_overlay, mask_overlay

NAN = float("nan")
MODELS = ("unet", "attention_unet_deep_supervision")


# --------------------------------------------------------------------------- fixtures


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    # Mid-range values: far from every overlay colour, so any tint visibly changes a pixel.
    return np.random.default_rng(seed).integers(60, 200, size=(h, w, 3), dtype=np.uint8)


def _disc(h: int, w: int, cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _batch(sizes: list[tuple[int, int]]):
    images, truths, preds, probs, ids = [], [], {m: [] for m in MODELS}, {m: [] for m in MODELS}, []
    for i, (h, w) in enumerate(sizes):
        images.append(_image(h, w, seed=i))
        truths.append(_disc(h, w, h // 2, w // 2, min(h, w) // 4).astype(np.uint8) * 255)
        for k, m in enumerate(MODELS):
            preds[m].append(_disc(h, w, h // 2 + 3 * (k + 1), w // 2, min(h, w) // 4))
            probs[m].append(np.clip(_disc(h, w, h // 2, w // 2 + 2 * k, min(h, w) // 3) * 0.8 + 0.1, 0, 1))
        ids.append(f"ISIC_{i:07d}")
    scores = {m: [0.5 + 0.1 * i for i in range(len(sizes))] for m in MODELS}
    return images, truths, preds, probs, ids, scores


def _history(n: int) -> dict[str, list[float]]:
    e = np.arange(n)
    return {"loss": list(1 / (e + 1)), "val_loss": list(1.2 / (e + 1)), "dice": list(e / (n + 1)),
            "val_dice": list(e / (n + 2)), "learning_rate": [1e-3] * n}


BATCH = _batch([(48, 64), (64, 40), (56, 56)])

# name -> callable(path) drawing one representative figure
FIGURES = {
    "batch": lambda p: overlays.save_batch_figure(p, *BATCH[:3], BATCH[4], scores=BATCH[5]),
    "probability": lambda p: overlays.save_probability_figure(p, BATCH[0], BATCH[3], BATCH[4]),
    "training": lambda p: charts.plot_training_curves(p, {"unet": _history(6), "one_epoch": _history(1)}),
    "batch_metric": lambda p: charts.plot_batch_metric(
        p, {"unet": [(0, 0.8), (1, 0.7), (2, 0.9)], "attn": [(2, 0.6), (0, 0.5), (1, NAN)]}, "dice",
        means={"unet": 0.8, "attn": 0.55}, highlight=[1]),
    "confusion": lambda p: charts.plot_confusion_matrices(
        p, {"unet": {"tp": 12345, "fp": 678, "fn": 910, "tn": 1234567}, "attn": {"tp": 1, "fp": 2, "fn": 3, "tn": 4}}),
    "histogram": lambda p: charts.plot_histogram(
        p, {"unet": [0.1, 0.7, 0.9, 0.95, NAN], "attn": [0.5, 0.66, 1.0]}, "jaccard", threshold=0.65),
    "comparison": lambda p: charts.plot_metric_comparison(
        p, {"unet": {"dice": 0.87, "jaccard": 0.78}, "attn": {"dice": 0.9, "jaccard": NAN}},
        intervals={"unet": {"dice": (0.85, 0.89), "jaccard": (0.75, 0.8)}}),
}


def _read_png(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert pixels is not None, f"{path} is not a readable PNG"
    return pixels


def _assert_real_figure(path: Path, min_side: int = 80) -> np.ndarray:
    pixels = _read_png(path)
    assert min(pixels.shape[:2]) >= min_side
    assert pixels.std() > 5, "figure is blank"
    return pixels


# --------------------------------------------------------------------------- overlays


def test_error_overlay_tints_exactly_tp_fp_fn_pixels_and_keeps_tn_pixels():
    image = _image(40, 50)
    truth = _disc(40, 50, 20, 20, 10)
    pred = _disc(40, 50, 20, 28, 10)
    out = error_overlay(image, truth, pred, alpha=0.5)

    assert out.dtype == np.uint8 and out.shape == image.shape
    regions = {"tp": truth & pred, "fp": ~truth & pred, "fn": truth & ~pred}
    for kind, region in regions.items():
        assert region.any()
        expected = np.rint(image[region] * 0.5 + np.array(ERROR_COLOURS[kind]) * 0.5).astype(np.uint8)
        np.testing.assert_array_equal(out[region], expected, err_msg=kind)
    tn = ~truth & ~pred
    np.testing.assert_array_equal(out[tn], image[tn])
    changed = (out != image).any(axis=2)
    np.testing.assert_array_equal(changed, truth | pred)


def test_error_colours_are_three_distinct_rgb_triples():
    assert set(ERROR_COLOURS) == {"tp", "fp", "fn"}
    assert len(set(ERROR_COLOURS.values())) == 3
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in ERROR_COLOURS.values())


def test_error_overlay_reads_bool_and_0_255_masks_alike():
    image = _image(30, 30)
    truth = _disc(30, 30, 15, 15, 8)
    pred = _disc(30, 30, 12, 15, 8)
    as_bool = error_overlay(image, truth, pred)
    as_bytes = error_overlay(image, truth.astype(np.uint8) * 255, pred.astype(np.uint8) * 255)
    np.testing.assert_array_equal(as_bool, as_bytes)


def test_error_overlay_does_not_modify_its_input():
    image = _image(20, 20)
    before = image.copy()
    error_overlay(image, _disc(20, 20, 10, 10, 5), _disc(20, 20, 8, 10, 5))
    np.testing.assert_array_equal(image, before)


def test_mask_overlay_leaves_pixels_far_from_the_mask_unchanged():
    image = _image(60, 60)
    mask = np.zeros((60, 60), np.uint8)
    mask[20:40, 20:40] = 255
    out = mask_overlay(image, mask, colour=(0, 255, 0), alpha=0.4, contour=True, thickness=2)

    near = cv2.dilate(mask, np.ones((9, 9), np.uint8)) > 0  # mask plus a 4-pixel margin
    np.testing.assert_array_equal(out[~near], image[~near])
    inside = np.zeros_like(near)
    inside[24:36, 24:36] = True  # interior, clear of the outline
    expected = np.rint(image[inside] * 0.6 + np.array([0, 255, 0]) * 0.4).astype(np.uint8)
    np.testing.assert_array_equal(out[inside], expected)
    assert (out[20, 20:40] == (0, 255, 0)).all(), "outline missing on the mask border"


def test_mask_overlay_without_contour_changes_only_mask_pixels():
    image = _image(30, 40)
    mask = _disc(30, 40, 15, 20, 7)
    out = mask_overlay(image, mask, contour=False)
    np.testing.assert_array_equal((out != image).any(axis=2), mask)


def test_mask_overlay_with_empty_mask_returns_a_copy_of_the_image():
    image = _image(10, 10)
    out = mask_overlay(image, np.zeros((10, 10), bool))
    np.testing.assert_array_equal(out, image)
    assert out is not image


def test_overlays_reject_a_mask_of_another_size():
    with pytest.raises(ValueError, match="shape"):
        error_overlay(_image(10, 10), np.zeros((10, 10), bool), np.zeros((10, 12), bool))
    with pytest.raises(ValueError, match="shape"):
        mask_overlay(_image(10, 10), np.zeros((9, 10), bool))


# --------------------------------------------------------------------------- every figure


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_figure_is_a_valid_png_and_byte_identical_when_redrawn(tmp_path, name):
    first = FIGURES[name](tmp_path / "a" / f"{name}.png")
    second = FIGURES[name](tmp_path / f"{name}_again.png")
    assert isinstance(first, Path) and first == tmp_path / "a" / f"{name}.png"
    _assert_real_figure(first)
    data = first.read_bytes()
    assert data == second.read_bytes()
    assert b"matplotlib" not in data.lower(), "version stamp would break reproducibility"


def test_figures_drawn_from_threads_match_those_drawn_in_turn(tmp_path):
    names = ["batch", "training"]
    serial = {n: FIGURES[n](tmp_path / f"serial_{n}.png").read_bytes() for n in names}
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        paths = list(pool.map(lambda n: FIGURES[n](tmp_path / f"thread_{n}.png"), names))
    for n, path in zip(names, paths):
        assert path.read_bytes() == serial[n], n


# --------------------------------------------------------------------------- batch grid


def test_batch_figure_handles_images_of_different_sizes(tmp_path):
    images, truths, preds, _, ids, scores = _batch([(30, 90), (90, 30), (64, 64), (20, 25)])
    out = overlays.save_batch_figure(tmp_path / "mixed.png", images, truths, preds, ids, scores=scores)
    _assert_real_figure(out)


def test_batch_figure_handles_a_single_row(tmp_path):
    images, truths, preds, _, ids, _ = _batch([(50, 70)])
    pixels = _assert_real_figure(overlays.save_batch_figure(tmp_path / "one.png", images, truths, preds, ids))
    assert pixels.shape[1] > pixels.shape[0], "one row should make a wide, short figure"


def test_batch_figure_with_sixteen_rows_stays_page_wide(tmp_path):
    images, truths, preds, probs, ids, scores = _batch([(24, 32)] * 16)
    # Layout is what is under test: one model and few pixels keep it quick.
    preds, probs, scores = ({"unet": d["unet"]} for d in (preds, probs, scores))
    dpi = 40
    grid = _assert_real_figure(overlays.save_batch_figure(tmp_path / "sixteen.png", images, truths, preds, ids,
                                                          scores=scores, dpi=dpi))
    prob = _assert_real_figure(overlays.save_probability_figure(tmp_path / "p16.png", images, probs, ids, dpi=dpi))
    for pixels in (grid, prob):
        assert pixels.shape[1] <= 7.05 * dpi
        assert pixels.shape[0] > pixels.shape[1]


def test_batch_figure_scale_grows_the_figure(tmp_path):
    images, truths, preds, _, ids, _ = _batch([(40, 40)])
    small = _read_png(overlays.save_batch_figure(tmp_path / "s.png", images, truths, preds, ids, scale=0.5))
    large = _read_png(overlays.save_batch_figure(tmp_path / "l.png", images, truths, preds, ids, scale=1.0))
    assert large.shape[0] > small.shape[0] and large.shape[1] > small.shape[1]


def test_batch_figure_rejects_lists_of_different_lengths(tmp_path):
    images, truths, preds, _, ids, _ = _batch([(20, 20), (20, 20)])
    with pytest.raises(ValueError, match="image_ids"):
        overlays.save_batch_figure(tmp_path / "x.png", images, truths, preds, ids[:1])
    preds["unet"] = preds["unet"][:1]
    with pytest.raises(ValueError, match="unet"):
        overlays.save_batch_figure(tmp_path / "x.png", images, truths, preds, ids)


def test_empty_batch_draws_a_placeholder_instead_of_failing(tmp_path):
    _read_png(overlays.save_batch_figure(tmp_path / "e.png", [], [], {"unet": []}, []))
    _read_png(overlays.save_probability_figure(tmp_path / "p.png", [], {"unet": []}, []))


def test_probability_figure_accepts_nan_and_channel_last_maps(tmp_path):
    images, _, _, probs, ids, _ = _batch([(32, 32), (40, 30)])
    probs["unet"][0] = np.full((32, 32, 1), NAN, np.float32)
    _assert_real_figure(overlays.save_probability_figure(tmp_path / "nan.png", images, probs, ids))


# --------------------------------------------------------------------------- charts


EMPTY_CHARTS = {
    "training": lambda p: charts.plot_training_curves(p, {}),
    "training_empty_history": lambda p: charts.plot_training_curves(p, {"unet": {}, "attn": {"loss": []}}),
    "batch_metric": lambda p: charts.plot_batch_metric(p, {}, "dice"),
    "batch_metric_empty_model": lambda p: charts.plot_batch_metric(p, {"unet": []}, "dice", highlight=[2]),
    "confusion": lambda p: charts.plot_confusion_matrices(p, {}),
    "histogram": lambda p: charts.plot_histogram(p, {"unet": []}, "dice", threshold=0.65),
    "comparison": lambda p: charts.plot_metric_comparison(p, {}),
    "comparison_no_metrics": lambda p: charts.plot_metric_comparison(p, {"unet": {}}),
}

NAN_CHARTS = {
    "training": lambda p: charts.plot_training_curves(p, {"unet": {"loss": [NAN, 0.5, NAN], "val_dice": [NAN] * 3}}),
    "batch_metric": lambda p: charts.plot_batch_metric(p, {"unet": [(0, NAN), (1, NAN)]}, "dice", means={"unet": NAN}),
    "confusion": lambda p: charts.plot_confusion_matrices(p, {"unet": {"tp": NAN, "fp": 3, "tn": 7}}),
    "histogram": lambda p: charts.plot_histogram(p, {"unet": [NAN, NAN], "attn": [0.4, NAN]}, "dice", threshold=NAN),
    "comparison": lambda p: charts.plot_metric_comparison(p, {"unet": {"dice": NAN, "iou": 0.5}},
                                                          intervals={"unet": {"iou": (NAN, 0.6)}}),
}


@pytest.mark.parametrize("name", sorted(EMPTY_CHARTS))
def test_chart_with_empty_input_draws_a_no_data_figure(tmp_path, name):
    _read_png(EMPTY_CHARTS[name](tmp_path / f"{name}.png"))


@pytest.mark.parametrize("name", sorted(NAN_CHARTS))
def test_chart_skips_nan_values(tmp_path, name):
    _read_png(NAN_CHARTS[name](tmp_path / f"{name}.png"))


def test_nan_points_are_skipped_not_drawn_as_zero(tmp_path):
    with_nan = charts.plot_histogram(tmp_path / "a.png", {"unet": [0.2, 0.9, NAN]}, "dice")
    without = charts.plot_histogram(tmp_path / "b.png", {"unet": [0.2, 0.9]}, "dice")
    assert with_nan.read_bytes() == without.read_bytes()


def test_wrapped_labels_break_model_names_at_underscores():
    assert kit.wrap_label("attention_unet_deep_supervision", 16) == "attention_unet_\ndeep_supervision"
    assert all(len(line) <= 8 for line in kit.wrap_label("abcdefghijklmnopqrstuvwxyz", 8).split("\n"))
    assert math.isclose(len(kit.wrap_label("x" * 50, 10, max_lines=2).split("\n")), 2)


def test_mosaic_letterboxes_each_image_in_its_cell_like_an_equal_aspect_imshow():
    grid = layout.plan(1, 2, 1.0, 1, 0.0, 0.3, 0.0, 1.0)  # square cells
    mosaic = layout.Mosaic(grid, dpi=100)
    wide = np.zeros((10, 40, 3), np.uint8)
    wide[..., 0] = 255
    mosaic.put(0, 1, wide)
    left, bottom, width, height = grid.cell(0, 1)
    x0, y0 = round(left * 100), round((grid.height - bottom - height) * 100)
    cell = mosaic.pixels[y0:y0 + round(height * 100), x0:x0 + round(width * 100)]
    painted = cell[..., 3] == 255
    rows, cols = np.flatnonzero(painted.any(axis=1)), np.flatnonzero(painted.any(axis=0))
    assert cols.size == cell.shape[1]  # full width
    assert abs(rows.size - cell.shape[0] / 4) <= 1  # a quarter of the height: aspect kept
    assert abs((rows[0] + rows[-1]) / 2 - (cell.shape[0] - 1) / 2) <= 1  # centred
    assert (cell[painted][:, :3] == (255, 0, 0)).all()
    assert not mosaic.pixels[:, :x0][..., 3].any()  # the other cell stays empty


def test_mosaic_shrinks_by_area_so_a_one_pixel_line_still_shows():
    grid = layout.plan(1, 1, 1.0, 1, 0.0, 0.3, 0.0, 1.0)
    mosaic = layout.Mosaic(grid, dpi=50)
    image = np.full((2000, 2000, 3), 255, np.uint8)
    image[:, 1001] = 0  # one dark column, 1/20 of a figure pixel or less once shrunk
    mosaic.put(0, 0, image)
    painted = mosaic.pixels[mosaic.pixels[..., 3] == 255][:, :3]
    assert painted.min() < 250  # a visible tint, where point sampling would likely drop it
