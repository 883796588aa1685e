"""Drawing a batch's explanation grid: one axes for the whole mosaic against one axes per cell.

An audit draws dozens of grids (each explanation method, per variant column, per selected
batch), and before the mosaic each cell was its own matplotlib Axes, whose construction
(ticks included) dominated the figure. The baseline here is that design, drawn into the same
grid geometry in the same run; ``save_map_grid`` is what the audit calls. Rounds interleave
baseline and ours so machine noise hits both alike.

    python benchmarks/figure_bench.py                     # 8 rows x 3 variants, 224x168 images, 110 dpi
    python benchmarks/figure_bench.py --rows 16 --dpi 150
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from glassbox_audit.report import grid as layout
from glassbox_audit.report.kit import new_figure, save_png
from glassbox_audit.xai.figures import CMAPS, display_values, greyscale, save_map_grid


def per_cell_axes(path: Path, images, columns, ids, dpi: int) -> None:
    """The baseline: the grid geometry the audit uses, with one Axes per image cell and the
    heatmap composited by imshow."""
    labels = ["Image", *columns]
    bar = layout.CBAR_GAP + layout.CBAR_WIDTH + layout.CBAR_LABELS
    grid = layout.plan(len(images), len(labels), layout.cell_aspect(images), 1, 0.0, 0.5, bar, 1.0)
    fig = new_figure(grid.width, grid.height, dpi, constrained=False)
    layout.column_titles(fig, grid, layout.wrap_titles(labels, grid.cell_w)[0])
    for row, rgb in enumerate(images):
        h, w = rgb.shape[:2]
        layout.row_label(fig, grid, row, ids[row])
        ax = fig.add_axes(grid.frac(*grid.cell(row, 0)))
        ax.set_axis_off()
        ax.imshow(rgb, interpolation="antialiased")
        shown = None
        for col, maps in enumerate(columns.values(), start=1):
            heat = cv2.resize(display_values(maps[row], "signed"), (w, h), interpolation=cv2.INTER_LINEAR)
            ax = fig.add_axes(grid.frac(*grid.cell(row, col)))
            ax.set_axis_off()
            ax.imshow(greyscale(rgb), interpolation="antialiased")
            shown = ax.imshow(heat, cmap=CMAPS["signed"], vmin=-1, vmax=1, alpha=0.55, interpolation="antialiased")
        left, bot, width, height = grid.cell(row, len(labels) - 1)
        cax = fig.add_axes(grid.frac(left + width + layout.CBAR_GAP, bot + 0.1 * height,
                                     layout.CBAR_WIDTH, 0.8 * height))
        fig.colorbar(shown, cax=cax, ticks=[-1, 0, 1])
    save_png(fig, path, dpi)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--variants", type=int, default=3)
    ap.add_argument("--dpi", type=int, default=110)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (168, 224, 3), dtype=np.uint8) for _ in range(args.rows)]
    columns = {f"variant-{k}": rng.normal(size=(args.rows, 96, 96)).astype(np.float32) for k in range(args.variants)}
    ids = [f"IMG_{i:04d}" for i in range(args.rows)]
    times: dict[str, list[float]] = {"per-cell axes (baseline)": [], "mosaic (save_map_grid)": []}
    with tempfile.TemporaryDirectory() as tmp:
        per_cell_axes(Path(tmp) / "warm.png", images, columns, ids, args.dpi)  # font cache, imports
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            per_cell_axes(Path(tmp) / "a.png", images, columns, ids, args.dpi)
            t1 = time.perf_counter()
            save_map_grid(Path(tmp) / "b.png", images, columns, ids, caption="benchmark", key="saliency",
                          dpi=args.dpi)
            t2 = time.perf_counter()
            times["per-cell axes (baseline)"].append(t1 - t0)
            times["mosaic (save_map_grid)"].append(t2 - t1)
    base = statistics.median(times["per-cell axes (baseline)"])
    print(f"{args.rows} rows x {args.variants} variants + image, {args.dpi} dpi, median of {args.rounds} rounds")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"  {name:26s} {med * 1000:8.1f} ms per figure   {base / med:5.2f}x baseline")


if __name__ == "__main__":
    main()
