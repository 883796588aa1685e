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
from dataclasses import dataclass
from pathlib import Path

import cv2
import matplotlib
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch

# Shared with the charts so every dossier PNG is written with the same reproducibility rules.
from .charts import _new_figure, _save_png, _wrap

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

# Layout, in inches. Text sizes are fixed in points, so margins that hold text stay fixed
# while `scale` only grows the image cells.
_PAGE_WIDTH = 7.0
_PAGE_HEIGHT = 9.6  # A4 height minus margins and a caption
_LEFT = 0.26  # rotated image id
_RIGHT = 0.06
_COL_GAP = 0.05
_ROW_GAP = 0.05
_UNDER = 0.15  # score line under a model cell
_TITLE_LINE = 0.14
_TITLE_PAD = 0.07
_LEGEND = 0.3  # one legend line; two lines when the figure is too narrow for four entries
_LEGEND_TWO_LINES = 0.45
_BOTTOM_PAD = 0.05
_CBAR_GAP = 0.06
_CBAR_WIDTH = 0.09
_CBAR_LABELS = 0.42  # tick labels, and room for the "p(lesion)" heading
_MIN_CELL = 0.8  # narrowest cell that still fits "Dice 0.873" and a recognisable lesion
_MAX_CELL = 2.0  # with few columns, larger cells would only waste page height
_TITLE_PT = 8
_TEXT_PT = 7


# --------------------------------------------------------------------------- arrays


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """``image`` as a contiguous uint8 HxWx3 array (grey and RGBA are converted)."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {np.shape(image)}")
    if arr.dtype != np.uint8:
        unit_float = arr.dtype.kind == "f" and np.nanmax(arr, initial=0.0) <= 1.0
        values = np.nan_to_num(arr.astype(np.float64))
        if unit_float:
            values *= 255.0  # float images in 0..1, as models and skimage produce them
        arr = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


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
    rgb = _as_rgb(image)
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
    rgb = _as_rgb(image)
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


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class _Grid:
    """Inch geometry of a grid of image cells with titles on top and a strip below."""

    rows: int
    cols: int
    cell_w: float
    cell_h: float
    top: float
    under: float
    bottom: float
    extra_right: float = 0.0

    @property
    def width(self) -> float:
        return _LEFT + self.cols * self.cell_w + (self.cols - 1) * _COL_GAP + self.extra_right + _RIGHT

    @property
    def height(self) -> float:
        return self.top + self.rows * (self.cell_h + self.under) + (self.rows - 1) * _ROW_GAP + self.bottom

    def cell(self, row: int, col: int) -> tuple[float, float, float, float]:
        """Cell ``(left, bottom, width, height)`` in inches from the figure's lower left."""
        left = _LEFT + col * (self.cell_w + _COL_GAP)
        bottom = self.height - self.top - row * (self.cell_h + self.under + _ROW_GAP) - self.cell_h
        return left, bottom, self.cell_w, self.cell_h

    def frac(self, left: float, bottom: float, width: float, height: float) -> list[float]:
        """Inches to figure fractions, for ``Figure.add_axes``."""
        return [left / self.width, bottom / self.height, width / self.width, height / self.height]


def _plan(rows: int, cols: int, aspect: float, title_lines: int, under: float, bottom: float,
          extra_right: float, scale: float) -> _Grid:
    """Largest cells that fit the page width and, when possible, one page height."""
    top = _TITLE_PAD + title_lines * _TITLE_LINE
    widest = (_PAGE_WIDTH - _LEFT - _RIGHT - extra_right - (cols - 1) * _COL_GAP) / cols
    cell_w = min(widest, _MAX_CELL)
    cell_h = cell_w * aspect
    fixed = top + bottom + rows * under + (rows - 1) * _ROW_GAP
    if fixed + rows * cell_h > _PAGE_HEIGHT:
        # Shrink to one page (a PDF page cannot split an image), but not below the size where
        # lesions and score text stay legible: past ~9 rows the figure runs taller than a page.
        cell_h = max((_PAGE_HEIGHT - fixed) / rows, min(_MIN_CELL, cell_w) * aspect)
        cell_w = cell_h / aspect
    return _Grid(rows, cols, cell_w * scale, cell_h * scale, top, under, bottom, extra_right)


def _cell_aspect(images: Sequence[np.ndarray]) -> float:
    """Height/width of the cells: the batch's typical image shape, kept within sane bounds."""
    ratios = [np.shape(im)[0] / max(np.shape(im)[1], 1) for im in images]
    return float(np.clip(np.median(ratios), 0.6, 1.4))


def _titles(labels: Sequence[str], cell_w: float) -> tuple[list[str], int]:
    """Column titles wrapped to the cell width (two lines at most) and the line count."""
    chars = max(int(cell_w * 72 / (0.56 * _TITLE_PT)), 4)
    wrapped = [_wrap(label, chars, max_lines=2) for label in labels]
    return wrapped, max((t.count("\n") + 1 for t in wrapped), default=1)


def _row_label(fig: Figure, grid: _Grid, row: int, text: str) -> None:
    """Image id written upwards beside its row, shrunk or shortened to the row height."""
    _, bottom, _, height = grid.cell(row, 0)
    text = str(text)
    room = height * 72 * 0.95  # points available along the rotated text
    size = float(np.clip(room / (0.58 * max(len(text), 1)), 5.0, _TEXT_PT))
    max_chars = max(int(room / (0.58 * size)), 3)
    if len(text) > max_chars:
        keep = max_chars - 1
        text = text[: keep - keep // 2] + "\u2026" + text[len(text) - keep // 2:]
    fig.text(_LEFT * 0.45 / grid.width, (bottom + height / 2) / grid.height, text, rotation=90,
             ha="center", va="center", fontsize=size)


def _column_titles(fig: Figure, grid: _Grid, titles: Sequence[str]) -> None:
    for col, title in enumerate(titles):
        left, bottom, width, height = grid.cell(0, col)
        fig.text((left + width / 2) / grid.width, (bottom + height + 0.04) / grid.height, title,
                 ha="center", va="bottom", fontsize=_TITLE_PT, linespacing=1.1)


class _Mosaic:
    """Every cell image of a grid pasted into one RGBA picture at the figure's own pixel size,
    drawn by a single axes.

    One axes per cell made a figure's cost grow with its cells (building an Axes with its
    ticks takes ~20 ms, and an explanation grid has dozens): the images are resized here and
    drawn once, pixel for pixel. Shrinking uses area averaging, which keeps thin FP/FN bands
    visible as a tint where point sampling of a much larger image would alias them away.
    """

    def __init__(self, grid: _Grid, dpi: int):
        self.grid, self.dpi = grid, dpi
        self.pixels = np.zeros((round(grid.height * dpi), round(grid.width * dpi), 4), np.uint8)
        # Every cell has the grid's cell size.
        self.box = (max(1, round(grid.cell_w * dpi)), max(1, round(grid.cell_h * dpi)))

    def fit(self, image: np.ndarray) -> np.ndarray:
        """``image`` at the size it takes in a cell (aspect kept); unchanged if already so.

        Drawing code that composites several layers per cell can fit the image first and do
        its work on cell-sized pixels instead of native ones.
        """
        (box_w, box_h), (h, w) = self.box, image.shape[:2]
        factor = min(box_w / w, box_h / h)
        size = (max(1, min(box_w, round(w * factor))), max(1, min(box_h, round(h * factor))))
        if size == (w, h):
            return image
        return cv2.resize(np.ascontiguousarray(image), size,
                          interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)

    def put(self, row: int, col: int, image: np.ndarray) -> None:
        """Paste ``image`` (HxWx3 uint8 RGB, or HxWx4 RGBA) into cell ``(row, col)``, scaled
        to fit and centred, as an equal-aspect imshow would letterbox it."""
        left, bottom, _, height = self.grid.cell(row, col)
        resized = self.fit(image)
        if resized.shape[2] == 3:
            resized = np.dstack([resized, np.full(resized.shape[:2], 255, np.uint8)])
        (box_w, box_h), (h, w) = self.box, resized.shape[:2]
        x0 = round(left * self.dpi) + (box_w - w) // 2
        y0 = round((self.grid.height - bottom - height) * self.dpi) + (box_h - h) // 2
        target = self.pixels[y0:y0 + h, x0:x0 + w]
        target[...] = resized[:target.shape[0], :target.shape[1]]

    def draw(self, fig: Figure) -> None:
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0), zorder=-1)
        ax.set_axis_off()
        ax.imshow(self.pixels, interpolation="none", aspect="auto")


def _colour_map(values: np.ndarray, cmap, lo: float, hi: float) -> np.ndarray:
    """``values`` through ``cmap`` on ``lo..hi`` as uint8 RGBA (NaN: transparent)."""
    colours = matplotlib.colormaps[cmap] if isinstance(cmap, str) else cmap
    return colours((np.asarray(values, np.float32) - lo) / (hi - lo), bytes=True)


def _colour_bar(fig: Figure, grid: _Grid, col: int, cmap, lo: float, hi: float):
    """One colour bar for ``cmap`` on ``lo..hi`` right of column ``col``, as tall as the rows
    (every cell of the grid shares the scale, so one bar reads for all of them)."""
    left, _, width, height = grid.cell(0, col)
    top = grid.cell(0, col)[1] + height
    bottom = grid.cell(grid.rows - 1, col)[1]
    span = top - bottom
    inset = 0.1 * height if grid.rows == 1 else 0.02 * span
    cax = fig.add_axes(grid.frac(left + width + _CBAR_GAP, bottom + inset, _CBAR_WIDTH, span - 2 * inset))
    bar = fig.colorbar(ScalarMappable(Normalize(lo, hi), cmap), cax=cax, ticks=[lo, (lo + hi) / 2, hi])
    bar.ax.tick_params(labelsize=6, length=2, pad=1)
    bar.outline.set_linewidth(0.5)
    return bar


def _outline_width(image: np.ndarray, grid: _Grid, dpi: int) -> int:
    """Contour width in image pixels that shows as ~1.5 figure pixels in its cell."""
    h, w = image.shape[:2]
    per_screen_px = max(w / (grid.cell_w * dpi), h / (grid.cell_h * dpi), 1.0)
    return max(1, round(1.5 * per_screen_px))


def _legend_width(labels: Sequence[str]) -> float:
    """Inches a one-line legend of colour patches and ``labels`` needs (with some slack)."""
    per_entry = (1.4 + 0.8 + 1.4) * _TEXT_PT / 72  # handle, its gap to the text, column gap
    return sum(len(s) for s in labels) * 0.56 * _TEXT_PT / 72 + len(labels) * per_entry + 0.2


def _check_lengths(n: int, **lists: Sequence[object]) -> None:
    for name, items in lists.items():
        if len(items) != n:
            raise ValueError(f"{name} has {len(items)} entries, expected {n} (one per image)")


def _empty_figure(path: str | Path, note: str, dpi: int) -> Path:
    fig = _new_figure(_PAGE_WIDTH, 0.8, dpi, constrained=False)
    fig.text(0.5, 0.5, note, ha="center", va="center", fontsize=_TITLE_PT, color="0.45", style="italic")
    return _save_png(fig, path, dpi)


def _format_score(label: str, value: object) -> str:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    return f"{label} {number:.3f}" if math.isfinite(number) else f"{label} n/a"


# --------------------------------------------------------------------------- figures


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
    _check_lengths(n, truths=truths, image_ids=image_ids, **{f"preds[{m!r}]": v for m, v in preds.items()})
    for m, v in (scores or {}).items():
        _check_lengths(n, **{f"scores[{m!r}]": v})
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if n == 0:
        return _empty_figure(path, "no images in this batch", dpi)

    models = list(preds)
    labels = ["Image", "Ground truth", *models]
    has_scores = bool(scores) and any(m in scores for m in models)
    under = _UNDER if has_scores else 0.0
    legend_labels = ["ground truth", *ERROR_LABELS.values()]
    # Plan twice: the title wrap depends on the cell width, which depends on the title height.
    first = _plan(n, len(labels), _cell_aspect(images), 1, under, _LEGEND, 0.0, scale)
    titles, lines = _titles(labels, first.cell_w)
    grid = _plan(n, len(labels), _cell_aspect(images), lines, under, _LEGEND, 0.0, scale)
    legend_cols = 4 if grid.width >= _legend_width(legend_labels) else 2
    if legend_cols == 2:
        grid = _plan(n, len(labels), _cell_aspect(images), lines, under, _LEGEND_TWO_LINES, 0.0, scale)
    titles, _ = _titles(labels, grid.cell_w)

    fig = _new_figure(grid.width, grid.height, dpi, constrained=False)
    _column_titles(fig, grid, titles)
    mosaic = _Mosaic(grid, dpi)
    for row in range(n):
        rgb = _as_rgb(images[row])
        _row_label(fig, grid, row, image_ids[row])
        mosaic.put(row, 0, rgb)
        truth = _as_mask(truths[row], rgb.shape[:2], f"truths[{row}]")
        gt = mask_overlay(rgb, truth, GROUND_TRUTH_COLOUR, alpha=0.3, thickness=_outline_width(rgb, grid, dpi))
        mosaic.put(row, 1, gt)
        for k, model in enumerate(models, start=2):
            mosaic.put(row, k, error_overlay(rgb, truth, preds[model][row]))
            if has_scores and model in scores:  # type: ignore[operator]
                left, bottom, width, _ = grid.cell(row, k)
                fig.text((left + width / 2) / grid.width, (bottom - 0.02) / grid.height,
                         _format_score(score_label, scores[model][row]),  # type: ignore[index]
                         ha="center", va="top", fontsize=_TEXT_PT)

    mosaic.draw(fig)
    handles = [Patch(facecolor=np.array(GROUND_TRUTH_COLOUR) / 255, edgecolor="0.3", linewidth=0.5)]
    handles += [Patch(facecolor=np.array(ERROR_COLOURS[k]) / 255, edgecolor="0.3", linewidth=0.5) for k in ERROR_LABELS]
    fig.legend(handles, legend_labels, loc="lower center",
               bbox_to_anchor=(0.5, _BOTTOM_PAD / grid.height), ncols=legend_cols, frameon=False, fontsize=_TEXT_PT,
               handlelength=1.4, handleheight=0.9, columnspacing=1.4, borderaxespad=0.0)
    return _save_png(fig, path, dpi)


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
    _check_lengths(n, image_ids=image_ids, **{f"probs[{m!r}]": v for m, v in probs.items()})
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if n == 0:
        return _empty_figure(path, "no images in this batch", dpi)

    models = list(probs)
    labels = ["Image", *models]
    bar_room = _CBAR_GAP + _CBAR_WIDTH + _CBAR_LABELS if models else 0.0
    first = _plan(n, len(labels), _cell_aspect(images), 1, 0.0, _BOTTOM_PAD, bar_room, scale)
    titles, lines = _titles(labels, first.cell_w)
    grid = _plan(n, len(labels), _cell_aspect(images), lines, 0.0, _BOTTOM_PAD, bar_room, scale)
    titles, _ = _titles(labels, grid.cell_w)

    fig = _new_figure(grid.width, grid.height, dpi, constrained=False)
    _column_titles(fig, grid, titles)
    mosaic = _Mosaic(grid, dpi)
    for row in range(n):
        _row_label(fig, grid, row, image_ids[row])
        mosaic.put(row, 0, _as_rgb(images[row]))
        for k, model in enumerate(models, start=1):
            prob = np.asarray(probs[model][row], dtype=np.float32)
            if prob.ndim == 3 and prob.shape[2] == 1:
                prob = prob[:, :, 0]
            if prob.ndim != 2:
                raise ValueError(f"probs[{model!r}][{row}] has shape {prob.shape}, expected HxW")
            mosaic.put(row, k, _colour_map(prob, PROBABILITY_CMAP, 0.0, 1.0))
    mosaic.draw(fig)
    if models:
        _colour_bar(fig, grid, len(labels) - 1, PROBABILITY_CMAP, 0.0, 1.0)
        left, bottom, width, height = grid.cell(0, len(labels) - 1)
        # Left-aligned over the bar so it cannot run into the last model's title.
        fig.text((left + width + _CBAR_GAP) / grid.width, (bottom + height + 0.04) / grid.height,
                 "p(lesion)", ha="left", va="bottom", fontsize=_TEXT_PT)
    return _save_png(fig, path, dpi)
