"""Grid layout for the dossier's image figures: cells planned to fit the page, titles, row
labels, colour bars, and one mosaic picture per figure.

The batch overlays and probability maps (:mod:`.overlays`) and the explanation grids
(:mod:`glassbox_audit.xai.figures`) lay out their cells with these, so their figures line
up with one another in the dossier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import matplotlib
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from .kit import new_figure, save_png, wrap_label

__all__ = ["BOTTOM_PAD", "CBAR_GAP", "CBAR_LABELS", "CBAR_WIDTH", "COL_GAP", "Grid", "LEFT", "LEGEND", "LEGEND_TWO_LINES", "MAX_CELL", "MIN_CELL", "Mosaic", "PAGE_HEIGHT", "PAGE_WIDTH", "RIGHT", "ROW_GAP", "TEXT_PT", "TITLE_LINE", "TITLE_PAD", "TITLE_PT", "UNDER", "as_rgb", "cell_aspect", "check_lengths", "colour_bar", "colour_map", "column_titles", "empty_figure", "legend_width", "outline_width", "plan", "row_label", "wrap_titles"]

# Layout, in inches. Text sizes are fixed in points, so margins that hold text stay fixed
# while `scale` only grows the image cells.
PAGE_WIDTH = 7.0
PAGE_HEIGHT = 9.6  # A4 height minus margins and a caption
LEFT = 0.26  # rotated image id
RIGHT = 0.06
COL_GAP = 0.05
ROW_GAP = 0.05
UNDER = 0.15  # score line under a model cell
TITLE_LINE = 0.14
TITLE_PAD = 0.07
LEGEND = 0.3  # one legend line; two lines when the figure is too narrow for four entries
LEGEND_TWO_LINES = 0.45
BOTTOM_PAD = 0.05
CBAR_GAP = 0.06
CBAR_WIDTH = 0.09
CBAR_LABELS = 0.42  # tick labels, and room for the "p(lesion)" heading
MIN_CELL = 0.8  # narrowest cell that still fits "Dice 0.873" and a recognisable lesion
MAX_CELL = 2.0  # with few columns, larger cells would only waste page height
TITLE_PT = 8
TEXT_PT = 7


def as_rgb(image: np.ndarray) -> np.ndarray:
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


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Grid:
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
        return LEFT + self.cols * self.cell_w + (self.cols - 1) * COL_GAP + self.extra_right + RIGHT

    @property
    def height(self) -> float:
        return self.top + self.rows * (self.cell_h + self.under) + (self.rows - 1) * ROW_GAP + self.bottom

    def cell(self, row: int, col: int) -> tuple[float, float, float, float]:
        """Cell ``(left, bottom, width, height)`` in inches from the figure's lower left."""
        left = LEFT + col * (self.cell_w + COL_GAP)
        bottom = self.height - self.top - row * (self.cell_h + self.under + ROW_GAP) - self.cell_h
        return left, bottom, self.cell_w, self.cell_h

    def frac(self, left: float, bottom: float, width: float, height: float) -> list[float]:
        """Inches to figure fractions, for ``Figure.add_axes``."""
        return [left / self.width, bottom / self.height, width / self.width, height / self.height]


def plan(rows: int, cols: int, aspect: float, title_lines: int, under: float, bottom: float,
          extra_right: float, scale: float) -> Grid:
    """Largest cells that fit the page width and, when possible, one page height."""
    top = TITLE_PAD + title_lines * TITLE_LINE
    widest = (PAGE_WIDTH - LEFT - RIGHT - extra_right - (cols - 1) * COL_GAP) / cols
    cell_w = min(widest, MAX_CELL)
    cell_h = cell_w * aspect
    fixed = top + bottom + rows * under + (rows - 1) * ROW_GAP
    if fixed + rows * cell_h > PAGE_HEIGHT:
        # Shrink to one page (a PDF page cannot split an image), but not below the size where
        # lesions and score text stay legible: past ~9 rows the figure runs taller than a page.
        cell_h = max((PAGE_HEIGHT - fixed) / rows, min(MIN_CELL, cell_w) * aspect)
        cell_w = cell_h / aspect
    return Grid(rows, cols, cell_w * scale, cell_h * scale, top, under, bottom, extra_right)


def cell_aspect(images: Sequence[np.ndarray]) -> float:
    """Height/width of the cells: the batch's typical image shape, kept within sane bounds."""
    ratios = [np.shape(im)[0] / max(np.shape(im)[1], 1) for im in images]
    return float(np.clip(np.median(ratios), 0.6, 1.4))


def wrap_titles(labels: Sequence[str], cell_w: float) -> tuple[list[str], int]:
    """Column titles wrapped to the cell width (two lines at most) and the line count."""
    chars = max(int(cell_w * 72 / (0.56 * TITLE_PT)), 4)
    wrapped = [wrap_label(label, chars, max_lines=2) for label in labels]
    return wrapped, max((t.count("\n") + 1 for t in wrapped), default=1)


def row_label(fig: Figure, grid: Grid, row: int, text: str) -> None:
    """Image id written upwards beside its row, shrunk or shortened to the row height."""
    _, bottom, _, height = grid.cell(row, 0)
    text = str(text)
    room = height * 72 * 0.95  # points available along the rotated text
    size = float(np.clip(room / (0.58 * max(len(text), 1)), 5.0, TEXT_PT))
    max_chars = max(int(room / (0.58 * size)), 3)
    if len(text) > max_chars:
        keep = max_chars - 1
        text = text[: keep - keep // 2] + "\u2026" + text[len(text) - keep // 2:]
    fig.text(LEFT * 0.45 / grid.width, (bottom + height / 2) / grid.height, text, rotation=90,
             ha="center", va="center", fontsize=size)


def column_titles(fig: Figure, grid: Grid, titles: Sequence[str]) -> None:
    for col, title in enumerate(titles):
        left, bottom, width, height = grid.cell(0, col)
        fig.text((left + width / 2) / grid.width, (bottom + height + 0.04) / grid.height, title,
                 ha="center", va="bottom", fontsize=TITLE_PT, linespacing=1.1)


class Mosaic:
    """Every cell image of a grid pasted into one RGBA picture at the figure's own pixel size,
    drawn by a single axes.

    One axes per cell made a figure's cost grow with its cells (building an Axes with its
    ticks takes ~20 ms, and an explanation grid has dozens): the images are resized here and
    drawn once, pixel for pixel. Shrinking uses area averaging, which keeps thin FP/FN bands
    visible as a tint where point sampling of a much larger image would alias them away.
    """

    def __init__(self, grid: Grid, dpi: int):
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


def colour_map(values: np.ndarray, cmap, lo: float, hi: float) -> np.ndarray:
    """``values`` through ``cmap`` on ``lo..hi`` as uint8 RGBA (NaN: transparent)."""
    colours = matplotlib.colormaps[cmap] if isinstance(cmap, str) else cmap
    return colours((np.asarray(values, np.float32) - lo) / (hi - lo), bytes=True)


def colour_bar(fig: Figure, grid: Grid, col: int, cmap, lo: float, hi: float):
    """One colour bar for ``cmap`` on ``lo..hi`` right of column ``col``, as tall as the rows
    (every cell of the grid shares the scale, so one bar reads for all of them)."""
    left, _, width, height = grid.cell(0, col)
    top = grid.cell(0, col)[1] + height
    bottom = grid.cell(grid.rows - 1, col)[1]
    span = top - bottom
    inset = 0.1 * height if grid.rows == 1 else 0.02 * span
    cax = fig.add_axes(grid.frac(left + width + CBAR_GAP, bottom + inset, CBAR_WIDTH, span - 2 * inset))
    bar = fig.colorbar(ScalarMappable(Normalize(lo, hi), cmap), cax=cax, ticks=[lo, (lo + hi) / 2, hi])
    bar.ax.tick_params(labelsize=6, length=2, pad=1)
    bar.outline.set_linewidth(0.5)
    return bar


def outline_width(image: np.ndarray, grid: Grid, dpi: int) -> int:
    """Contour width in image pixels that shows as ~1.5 figure pixels in its cell."""
    h, w = image.shape[:2]
    per_screen_px = max(w / (grid.cell_w * dpi), h / (grid.cell_h * dpi), 1.0)
    return max(1, round(1.5 * per_screen_px))


def legend_width(labels: Sequence[str]) -> float:
    """Inches a one-line legend of colour patches and ``labels`` needs (with some slack)."""
    per_entry = (1.4 + 0.8 + 1.4) * TEXT_PT / 72  # handle, its gap to the text, column gap
    return sum(len(s) for s in labels) * 0.56 * TEXT_PT / 72 + len(labels) * per_entry + 0.2


def check_lengths(n: int, **lists: Sequence[object]) -> None:
    for name, items in lists.items():
        if len(items) != n:
            raise ValueError(f"{name} has {len(items)} entries, expected {n} (one per image)")


def empty_figure(path: str | Path, note: str, dpi: int) -> Path:
    fig = new_figure(PAGE_WIDTH, 0.8, dpi, constrained=False)
    fig.text(0.5, 0.5, note, ha="center", va="center", fontsize=TITLE_PT, color="0.45", style="italic")
    return save_png(fig, path, dpi)
