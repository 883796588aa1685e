"""Dossier figures drawn from image arrays: mask and error overlays, comparison grids.

The two array functions (:func:`mask_overlay`, :func:`error_overlay`) return new uint8 RGB
images and never touch pixels outside the regions they mark, so an overlay can be checked
pixel by pixel against its input. The ``save_*`` functions lay out one PNG per call with the
object API (no ``pyplot``), which keeps them thread-safe and their bytes reproducible.

Masks may be bool, integer (anything > 0 is foreground, so 0/1 and 0/255 both work) or float
(> 0.5 is foreground, the usual threshold on a probability map).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
from matplotlib.patches import Patch

from .grid import (BOTTOM_PAD, CBAR_GAP, CBAR_LABELS, CBAR_WIDTH, LEGEND, LEGEND_TWO_LINES, TEXT_PT,
                   UNDER, Mosaic, as_rgb, cell_aspect, check_lengths, colour_bar, colour_map, column_titles,
                   empty_figure, legend_width, outline_width, plan, row_label, wrap_titles)
from .figure_cache import cached_figure
from .kit import new_figure, save_png

__all__ = [
    "ERROR_COLOURS",
    "ERROR_LABELS",
    "GROUND_TRUTH_COLOUR",
    "PROBABILITY_CMAP",
    "error_overlay",
    "mask_overlay",
    "save_batch_figure",
    "save_probability_figure",
]

# Chosen by simulating protanopia, deuteranopia and tritanopia on skin and lesion tones at
# 50 % blending: the three stay at least ~45 CIELAB units apart in every case, and the
# warm/cool contrast between FP (orange) and FN (blue) survives red-green deficiencies.
ERROR_COLOURS: dict[str, tuple[int, int, int]] = {
    "tp": (0, 255, 255),  # cyan
    "fp": (255, 128, 0),  # orange
    "fn": (0, 0, 255),  # blue
}
ERROR_LABELS: dict[str, str] = {"tp": "true positive", "fp": "false positive", "fn": "false negative"}
# Own column in the grid, so it only has to stand out against skin and lesion, not the errors.
GROUND_TRUTH_COLOUR: tuple[int, int, int] = (255, 255, 0)
PROBABILITY_CMAP = "viridis"  # perceptually uniform and readable in grey and with CVD

# --------------------------------------------------------------------------- arrays


def _as_mask(mask: np.ndarray, shape: tuple[int, int], name: str = "mask") -> np.ndarray:
    """``mask`` as a bool HxW array matching ``shape``."""
    arr = np.asarray(mask)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} has shape {np.shape(mask)}, expected {tuple(shape)} to match the image")
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind == "f":
        return arr > 0.5
    return arr > 0


def _blend(pixels: np.ndarray, colours: np.ndarray, alpha: float) -> np.ndarray:
    """Alpha-blend ``colours`` over uint8 ``pixels`` (both Nx3 or broadcastable)."""
    mixed = pixels.astype(np.float64) * (1.0 - alpha) + np.asarray(colours, dtype=np.float64) * alpha
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be within 0..1, got {alpha}")
    return alpha


def mask_overlay(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] = (0, 255, 0),
                 alpha: float = 0.4, contour: bool = True, thickness: int | None = None) -> np.ndarray:
    """Tint a mask's region on an image and outline it.

    Parameters
    ----------
    image : numpy.ndarray
        uint8 HxWx3 RGB image (HxW grey, RGBA and float 0..1 images are converted).
    mask : numpy.ndarray
        HxW mask, bool or 0/255 (see the module notes for other dtypes).
    colour : tuple of int, default (0, 255, 0)
        RGB colour of the tint and of the outline.
    alpha : float, default 0.4
        Opacity of the tint, 0..1.
    contour : bool, default True
        Draw the mask's outline (outer borders and holes) in ``colour``.
    thickness : int, optional
        Outline width in pixels; by default about 1/200 of the longer image side, so it
        stays visible once a large image is shrunk into a figure cell.

    Returns
    -------
    numpy.ndarray
        New uint8 HxWx3 image; pixels farther than ``thickness`` from the mask are unchanged.
    """
    rgb = as_rgb(image)
    region = _as_mask(mask, rgb.shape[:2])
    alpha = _check_alpha(alpha)
    out = rgb.copy()
    if not region.any():
        return out
    out[region] = _blend(rgb[region], colour, alpha)
    if contour:
        width = thickness if thickness is not None else max(1, round(max(rgb.shape[:2]) / 200))
        contours = cv2.findContours(region.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)[-2]
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in colour), int(width), lineType=cv2.LINE_8)
    return out


def error_overlay(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Tint true-positive, false-positive and false-negative pixels in :data:`ERROR_COLOURS`.

    Parameters
    ----------
    image : numpy.ndarray
        uint8 HxWx3 RGB image (HxW grey, RGBA and float 0..1 images are converted).
    truth : numpy.ndarray
        HxW ground-truth mask, bool or 0/255.
    pred : numpy.ndarray
        HxW predicted mask, bool or 0/255 (float maps are thresholded at 0.5).
    alpha : float, default 0.5
        Opacity of the tint, 0..1.

    Returns
    -------
    numpy.ndarray
        New uint8 HxWx3 image; true-negative pixels are equal to the input.
    """
    rgb = as_rgb(image)
    t = _as_mask(truth, rgb.shape[:2], "truth")
    p = _as_mask(pred, rgb.shape[:2], "pred")
    alpha = _check_alpha(alpha)
    # 0 = TN, 1 = TP, 2 = FP, 3 = FN: one lookup instead of three masked passes.
    kind = (t & p).astype(np.uint8) + 2 * (p & ~t) + 3 * (t & ~p)
    palette = np.array([(0, 0, 0), ERROR_COLOURS["tp"], ERROR_COLOURS["fp"], ERROR_COLOURS["fn"]], dtype=np.float64)
    marked = kind > 0
    out = rgb.copy()
    out[marked] = _blend(rgb[marked], palette[kind[marked]], alpha)
    return out


def _format_score(label: str, value: object) -> str:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    return f"{label} {number:.3f}" if math.isfinite(number) else f"{label} n/a"


# --------------------------------------------------------------------------- figures


@cached_figure
def save_batch_figure(path: str | Path, images: Sequence[np.ndarray], truths: Sequence[np.ndarray],
                      preds: Mapping[str, Sequence[np.ndarray]], image_ids: Sequence[str],
                      scores: Mapping[str, Sequence[float]] | None = None, scale: float = 1.0, dpi: int = 110,
                      score_label: str = "Dice") -> Path:
    """Save the multi-model comparison grid for one batch of images.

    One row per image: the image, the image with its ground truth, then for each model (in
    dict order) its error overlay (:func:`error_overlay`). Column titles are the model names,
    row labels the image ids, and each model cell has its score underneath when ``scores``
    is given. A legend explains the overlay colours.

    Parameters
    ----------
    path : str or Path
        Where the PNG is written (parent folders are created).
    images : list of numpy.ndarray
        uint8 HxWx3 RGB images; sizes may differ within the batch (aspect is preserved).
    truths : list of numpy.ndarray
        Ground-truth masks, each the size of its image.
    preds : dict of str to list of numpy.ndarray
        Model name to predicted masks, one per image.
    image_ids : list of str
        Row labels, one per image.
    scores : dict of str to list of float, optional
        Model name to one score per image, printed as e.g. ``"Dice 0.873"``; NaN prints
        ``n/a``. Models absent from the dict get no score line.
    scale : float, default 1.0
        Multiplies the size of the image cells (text keeps its point size). At 1.0 the figure
        is at most 7 inches wide and, down to a minimum cell size, one A4 page tall.
    dpi : int, default 110
        Resolution of the PNG.
    score_label : str, default "Dice"
        Name printed before each score.

    Returns
    -------
    Path
        The path written.
    """
    n = len(images)
    check_lengths(n, truths=truths, image_ids=image_ids, **{f"preds[{m!r}]": v for m, v in preds.items()})
    for m, v in (scores or {}).items():
        check_lengths(n, **{f"scores[{m!r}]": v})
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if n == 0:
        return empty_figure(path, "no images in this batch", dpi)

    models = list(preds)
    labels = ["Image", "Ground truth", *models]
    has_scores = bool(scores) and any(m in scores for m in models)
    under = UNDER if has_scores else 0.0
    legend_labels = ["ground truth", *ERROR_LABELS.values()]
    # Plan twice: the title wrap depends on the cell width, which depends on the title height.
    first = plan(n, len(labels), cell_aspect(images), 1, under, LEGEND, 0.0, scale)
    titles, lines = wrap_titles(labels, first.cell_w)
    grid = plan(n, len(labels), cell_aspect(images), lines, under, LEGEND, 0.0, scale)
    legend_cols = 4 if grid.width >= legend_width(legend_labels) else 2
    if legend_cols == 2:
        grid = plan(n, len(labels), cell_aspect(images), lines, under, LEGEND_TWO_LINES, 0.0, scale)
    titles, _ = wrap_titles(labels, grid.cell_w)

    fig = new_figure(grid.width, grid.height, dpi, constrained=False)
    column_titles(fig, grid, titles)
    mosaic = Mosaic(grid, dpi)
    for row in range(n):
        rgb = as_rgb(images[row])
        row_label(fig, grid, row, image_ids[row])
        mosaic.put(row, 0, rgb)
        truth = _as_mask(truths[row], rgb.shape[:2], f"truths[{row}]")
        gt = mask_overlay(rgb, truth, GROUND_TRUTH_COLOUR, alpha=0.3, thickness=outline_width(rgb, grid, dpi))
        mosaic.put(row, 1, gt)
        for k, model in enumerate(models, start=2):
            mosaic.put(row, k, error_overlay(rgb, truth, preds[model][row]))
            if has_scores and model in scores:  # type: ignore[operator]
                left, bottom, width, _ = grid.cell(row, k)
                fig.text((left + width / 2) / grid.width, (bottom - 0.02) / grid.height,
                         _format_score(score_label, scores[model][row]),  # type: ignore[index]
                         ha="center", va="top", fontsize=TEXT_PT)

    mosaic.draw(fig)
    handles = [Patch(facecolor=np.array(GROUND_TRUTH_COLOUR) / 255, edgecolor="0.3", linewidth=0.5)]
    handles += [Patch(facecolor=np.array(ERROR_COLOURS[k]) / 255, edgecolor="0.3", linewidth=0.5) for k in ERROR_LABELS]
    fig.legend(handles, legend_labels, loc="lower center",
               bbox_to_anchor=(0.5, BOTTOM_PAD / grid.height), ncols=legend_cols, frameon=False, fontsize=TEXT_PT,
               handlelength=1.4, handleheight=0.9, columnspacing=1.4, borderaxespad=0.0)
    return save_png(fig, path, dpi)


@cached_figure
def save_probability_figure(path: str | Path, images: Sequence[np.ndarray], probs: Mapping[str, Sequence[np.ndarray]],
                            image_ids: Sequence[str], scale: float = 1.0, dpi: int = 110) -> Path:
    """Save each model's lesion-probability map next to its image.

    One row per image: the image, then for each model (in dict order) its probability map on
    a fixed 0..1 perceptual colour scale, and one colour bar beside the rows.

    Parameters
    ----------
    path : str or Path
        Where the PNG is written (parent folders are created).
    images : list of numpy.ndarray
        uint8 HxWx3 RGB images; sizes may differ within the batch.
    probs : dict of str to list of numpy.ndarray
        Model name to HxW (or HxWx1) float maps in 0..1, one per image. NaN shows as blank.
    image_ids : list of str
        Row labels, one per image.
    scale : float, default 1.0
        Multiplies the size of the image cells (text keeps its point size).
    dpi : int, default 110
        Resolution of the PNG.

    Returns
    -------
    Path
        The path written.
    """
    n = len(images)
    check_lengths(n, image_ids=image_ids, **{f"probs[{m!r}]": v for m, v in probs.items()})
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if n == 0:
        return empty_figure(path, "no images in this batch", dpi)

    models = list(probs)
    labels = ["Image", *models]
    bar_room = CBAR_GAP + CBAR_WIDTH + CBAR_LABELS if models else 0.0
    first = plan(n, len(labels), cell_aspect(images), 1, 0.0, BOTTOM_PAD, bar_room, scale)
    titles, lines = wrap_titles(labels, first.cell_w)
    grid = plan(n, len(labels), cell_aspect(images), lines, 0.0, BOTTOM_PAD, bar_room, scale)
    titles, _ = wrap_titles(labels, grid.cell_w)

    fig = new_figure(grid.width, grid.height, dpi, constrained=False)
    column_titles(fig, grid, titles)
    mosaic = Mosaic(grid, dpi)
    for row in range(n):
        row_label(fig, grid, row, image_ids[row])
        mosaic.put(row, 0, as_rgb(images[row]))
        for k, model in enumerate(models, start=1):
            prob = np.asarray(probs[model][row], dtype=np.float32)
            if prob.ndim == 3 and prob.shape[2] == 1:
                prob = prob[:, :, 0]
            if prob.ndim != 2:
                raise ValueError(f"probs[{model!r}][{row}] has shape {prob.shape}, expected HxW")
            mosaic.put(row, k, colour_map(prob, PROBABILITY_CMAP, 0.0, 1.0))
    mosaic.draw(fig)
    if models:
        colour_bar(fig, grid, len(labels) - 1, PROBABILITY_CMAP, 0.0, 1.0)
        left, bottom, width, height = grid.cell(0, len(labels) - 1)
        # Left-aligned over the bar so it cannot run into the last model's title.
        fig.text((left + width + CBAR_GAP) / grid.width, (bottom + height + 0.04) / grid.height,
                 "p(lesion)", ha="left", va="bottom", fontsize=TEXT_PT)
    return save_png(fig, path, dpi)
