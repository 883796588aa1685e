"""XAI figures for the dossier: one grid per method, layer-wise grids, and the checks.

* :func:`save_map_grid`: rows are images; the first column the image, then one heatmap
  overlay per column (per model for a method grid, per group or gate for a layer grid),
  one colour bar beside the rows, and the parameters printed under the figure.
* :func:`save_curves_figure`, :func:`save_randomisation_figure`: the checks as charts.
* :func:`render_xai_figures`: the single entry point, drawing all of them for an
  :class:`~glassbox_audit.xai.batch.XaiResult`.

Colour scales: maps already in [0, 1] (Grad-CAM, attention, superpixels) keep that fixed
scale; gradient maps are divided by their own 99th percentile and clipped (gradients have
no common unit between images or models); signed maps (integrated gradients) use a
diverging scale around 0. Figures use the object API and ``charts.save_png``, so equal
inputs give byte-identical PNGs.

Example::

    figs = render_xai_figures(result, view.images, folder / "figures", prefix="batch0003_")
    for path, kind, description in figs: ...
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
from matplotlib.lines import Line2D

# The grid layout (cell planning, titles, row labels, colour-bar room) is the one of the
# overlay figures, so XAI grids line up with them in the dossier.
from glassbox_audit.report import grid as layout
from glassbox_audit.report.figure_cache import cached_figure
from glassbox_audit.report.kit import LINESTYLES, MODEL_COLOURS, new_figure, save_png

from .checks import READING, PerturbationCurves, RandomisationResult

__all__ = ["CMAPS", "SCALE_NOTES", "TITLES", "display_values", "greyscale", "heat_overlay", "params_line",
           "render_xai_figures", "save_curves_figure", "save_map_grid", "save_randomisation_figure", "scale_kind"]

TITLES: dict[str, str] = {
    "saliency": "Saliency (vanilla gradient)",
    "smoothgrad": "SmoothGrad",
    "guided_backprop": "Guided backpropagation",
    "integrated_gradients": "Integrated gradients",
    "gradcam": "Grad-CAM",
    "layer_gradcam": "Layer-wise Grad-CAM",
    "superpixel/confidence": "Superpixel confidence (mean |2p - 1|)",
    "superpixel/probability": "Superpixel mean probability",
    "attention": "Attention-gate coefficients (mean over gates)",
}
_UNIT_FAMILIES = ("gradcam", "layer_gradcam", "superpixel", "attention")
_LAYERED = ("layer_gradcam", "attention")
CMAPS = {"unit": "inferno", "relative": "inferno", "signed": "RdBu_r"}
_BAR_LABEL = {"unit": "value", "relative": "\u00f7 p99", "signed": "\u00f7 p99"}
SCALE_NOTES = {
    "unit": "Colour: the map's own values on a fixed 0..1 scale.",
    "relative": "Colour: each map divided by its own 99th percentile and clipped to 0..1 (no common unit).",
    "signed": "Colour: each map divided by the 99th percentile of its magnitude, clipped to -1..1; "
              "red raises the target, blue lowers it.",
}
_PT = 7
_LINE = 0.13  # inches per caption line at 7 pt


def scale_kind(key: str, maps: Sequence[np.ndarray]) -> str:
    """The colour scale maps of ``key`` are shown on: ``unit``, ``relative`` or ``signed``."""
    if key.split("/", 1)[0] in _UNIT_FAMILIES:
        return "unit"
    return "signed" if any(float(np.min(m)) < 0 for m in maps) else "relative"


def display_values(m: np.ndarray, kind: str) -> np.ndarray:
    """A map on its colour scale: [0, 1] (``unit``, ``relative``) or [-1, 1] (``signed``)."""
    m = np.nan_to_num(np.asarray(m, np.float32))
    if kind == "unit":
        return np.clip(m, 0, 1)
    ref = float(np.percentile(np.abs(m), 99)) if m.size else 0.0
    ref = ref if ref > 0 else float(np.abs(m).max()) or 1.0
    return np.clip(m / ref, -1 if kind == "signed" else 0, 1)


def heat_overlay(rgb: np.ndarray, m: np.ndarray, kind: str, alpha: float = 0.55) -> np.ndarray:
    """One map on its colour scale over the grey image, resized to the image: uint8 HxWx3."""
    h, w = rgb.shape[:2]
    lo = -1.0 if kind == "signed" else 0.0
    heat = cv2.resize(display_values(m, kind), (w, h), interpolation=cv2.INTER_LINEAR)
    colour = layout.colour_map(heat, CMAPS[kind], lo, 1.0)[..., :3].astype(np.float32)
    grey = greyscale(rgb).astype(np.float32)
    # The heatmap at ``alpha`` over the grey image, as imshow would composite it.
    return np.rint((1 - alpha) * grey + alpha * colour).astype(np.uint8)


def greyscale(rgb: np.ndarray) -> np.ndarray:
    # Grey under the heatmap: the colours then belong to the map alone.
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return np.repeat(g[:, :, None], 3, axis=2)


def _caption(fig, grid, lines: list[str]) -> None:
    fig.text(layout.LEFT / grid.width, (layout.BOTTOM_PAD + len(lines) * _LINE) / grid.height,
             "\n".join(lines), ha="left", va="top", fontsize=_PT, linespacing=1.25)


def _wrap_caption(caption: str, width_in: float) -> list[str]:
    chars = max(int(width_in * 72 / (0.6 * _PT)), 20)
    return [line for para in caption.split("\n") for line in textwrap.wrap(para, chars) or [""]]


@cached_figure
def save_map_grid(path: str | Path, images: Sequence[np.ndarray], columns: Mapping[str, np.ndarray],
                  image_ids: Sequence[str], caption: str = "", kind: str | None = None, key: str = "",
                  alpha: float = 0.55, scale: float = 1.0, dpi: int = 110) -> Path:
    """Save a grid of heatmap overlays: rows are images, columns the image then each map.

    Parameters
    ----------
    path : str or Path
        Where the PNG is written.
    images : list of numpy.ndarray
        HxWx3 images (uint8, or float in [0, 1]); native sizes may differ, maps are resized
        to each image.
    columns : dict of str to numpy.ndarray
        Column title (model, group or gate) to ``(N, h, w)`` maps.
    image_ids : list of str
        Row labels.
    caption : str, default ""
        Printed under the figure (method parameters, how to read it); ``\\n`` breaks lines.
    kind : str, optional
        Colour scale ``unit``, ``relative`` or ``signed``; default chosen from ``key`` and
        the data (see the module notes).
    key : str, default ""
        Map key (``gradcam``, ``saliency``, ...), used to choose the scale.
    alpha : float, default 0.55
        Heatmap opacity over the grey image.
    scale, dpi : float, int
        Cell size multiplier and PNG resolution.
    """
    n = len(images)
    layout.check_lengths(n, image_ids=image_ids, **{f"columns[{c!r}]": v for c, v in columns.items()})
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if n == 0:
        return layout.empty_figure(path, "no images in this batch", dpi)
    kind = kind or scale_kind(key, [m for v in columns.values() for m in v])
    labels = ["Image", *columns]
    bar = layout.CBAR_GAP + layout.CBAR_WIDTH + layout.CBAR_LABELS
    aspect = layout.cell_aspect(images)
    caption = f"{caption}\n{SCALE_NOTES[kind]}" if caption else SCALE_NOTES[kind]
    # The caption's line count sets the figure height, which can shrink the cells (one
    # page tall) and so the width it wraps to: plan until the two agree.
    lines: list[str] = []
    n_title = 1
    for _ in range(3):
        bottom = layout.BOTTOM_PAD + len(lines) * _LINE + 0.08
        grid = layout.plan(n, len(labels), aspect, n_title, 0.0, bottom, bar, scale)
        titles, n_title = layout.wrap_titles(labels, grid.cell_w)
        wrapped = _wrap_caption(caption, grid.width - layout.LEFT - layout.RIGHT)
        if wrapped == lines:
            break
        lines = wrapped
    grid = layout.plan(n, len(labels), aspect, n_title, 0.0, layout.BOTTOM_PAD + len(lines) * _LINE + 0.08,
                          bar, scale)
    titles, _ = layout.wrap_titles(labels, grid.cell_w)
    lo = -1.0 if kind == "signed" else 0.0

    fig = new_figure(grid.width, grid.height, dpi, constrained=False)
    layout.column_titles(fig, grid, titles)
    mosaic = layout.Mosaic(grid, dpi)
    for row in range(n):
        # Composited at the cell's own size: the same picture as at native size, without the
        # native-resolution float work per map (megapixels for full-size dermoscopy images).
        rgb = mosaic.fit(layout.as_rgb(images[row]))
        layout.row_label(fig, grid, row, image_ids[row])
        mosaic.put(row, 0, rgb)
        for col, maps in enumerate(columns.values(), start=1):
            mosaic.put(row, col, heat_overlay(rgb, maps[row], kind, alpha))
    mosaic.draw(fig)
    if columns:
        layout.colour_bar(fig, grid, len(labels) - 1, CMAPS[kind], lo, 1.0)
    left, bot, width, height = grid.cell(0, len(labels) - 1)
    fig.text((left + width + layout.CBAR_GAP) / grid.width, (bot + height + 0.04) / grid.height,
             _BAR_LABEL[kind], ha="left", va="bottom", fontsize=_PT)
    if lines:
        _caption(fig, grid, lines)
    return save_png(fig, path, dpi)


def _method_styles(methods: Sequence[str]) -> dict[str, tuple[str, object]]:
    """Colour and line style per method: the palette, then again with other dashes; random grey."""
    styles: dict[str, tuple[str, object]] = {}
    others = [m for m in methods if m != "random"]
    for i, m in enumerate(others):
        styles[m] = (MODEL_COLOURS[i % len(MODEL_COLOURS)], LINESTYLES[(i // len(MODEL_COLOURS)) % len(LINESTYLES)])
    styles["random"] = ("0.55", (0, (2, 2)))
    return styles


@cached_figure
def save_curves_figure(path: str | Path, curves: Sequence[PerturbationCurves], dpi: int = 110) -> Path:
    """Mean deletion and insertion curves per method, one row of two panels per model.

    The areas under the curves are in the check tables; the legend under the figure names
    the methods.
    """
    models = list(dict.fromkeys(c.model for c in curves))
    methods = list(dict.fromkeys(c.method for c in curves))
    legend_rows = -(-len(methods) // 4)
    fig = new_figure(7.0, 0.4 + 2.2 * max(1, len(models)) + 0.17 * legend_rows, dpi)
    if not models:
        fig.text(0.5, 0.5, "no checks computed", ha="center", va="center", fontsize=8, style="italic")
        return save_png(fig, path, dpi)
    axes = fig.subplots(len(models), 2, squeeze=False)
    styles = _method_styles(methods)
    for r, model in enumerate(models):
        for c, check in enumerate(("deletion", "insertion")):
            ax = axes[r, c]
            for cur in (x for x in curves if x.model == model and x.check == check):
                colour, dash = styles[cur.method]
                ax.plot(cur.fractions, cur.curves.mean(axis=0), color=colour, linestyle=dash, linewidth=1.2)
            better = "lower" if check == "deletion" else "higher"
            ax.set_title(f"{model}: {check} ({better} area = more faithful)", fontsize=8)
            ax.set_xlabel("share of pixels perturbed, most important first", fontsize=7)
            ax.set_ylabel("mean p(lesion) over target", fontsize=7)
            ax.set_ylim(-0.02, 1.02)
            ax.tick_params(labelsize=7)
            ax.grid(True, color="0.92", linewidth=0.6)
    handles = [Line2D([], [], color=styles[m][0], linestyle=styles[m][1], linewidth=1.4) for m in methods]
    fig.legend(handles, methods, loc="outside lower center", ncols=4, fontsize=6.5, frameon=False)
    return save_png(fig, path, dpi)


@cached_figure
def save_randomisation_figure(path: str | Path, results: Sequence[RandomisationResult], dpi: int = 110) -> Path:
    """Mean Spearman (solid) and SSIM (dashed) against cascade depth, one panel per model."""
    models = list(dict.fromkeys(r.model for r in results))
    fig = new_figure(7.0, 0.8 + 2.4 * max(1, len(models)), dpi)
    if not models:
        fig.text(0.5, 0.5, "no randomisation check computed", ha="center", va="center", fontsize=8, style="italic")
        return save_png(fig, path, dpi)
    axes = fig.subplots(len(models), 1, squeeze=False)[:, 0]
    styles = _method_styles(list(dict.fromkeys(r.method for r in results)))
    for ax, model in zip(axes, models):
        for res in (r for r in results if r.model == model):
            colour = styles[res.method][0]
            x = np.arange(len(res.depths) + 1)
            with np.errstate(all="ignore"):
                rho = [1.0] + [float(np.nanmean(v)) if np.isfinite(v).any() else np.nan for v in res.spearman]
            ssim = [1.0] + [float(np.mean(v)) for v in res.ssim]
            ax.plot(x, rho, color=colour, marker="o", markersize=3, linewidth=1.2, label=res.method)
            ax.plot(x, ssim, color=colour, marker="s", markersize=3, linewidth=1.0, linestyle="--")
            ax.set_xticks(x, ["none"] + [f"down to {res.blocks[d - 1]}" for d in res.depths], fontsize=7)
        ax.axhline(0.0, color="0.7", linewidth=0.6)
        low = min([-0.25] + [float(np.nanmin(r.spearman)) - 0.05 for r in results
                             if r.model == model and np.isfinite(r.spearman).any()])
        ax.set_ylim(max(low, -1.05), 1.05)
        ax.set_title(f"{model}: similarity to the trained model's maps", fontsize=8)
        ax.set_ylabel("mean similarity", fontsize=7)
        ax.tick_params(labelsize=7)
        handles = [Line2D([], [], color="0.3", marker="o", markersize=3), Line2D([], [], color="0.3", linestyle="--",
                                                                               marker="s", markersize=3)]
        first = ax.legend(fontsize=6, frameon=False, loc="upper right")
        ax.add_artist(first)
        ax.legend(handles, ["Spearman", "SSIM"], fontsize=6, frameon=False, loc="lower left")
    return save_png(fig, path, dpi)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "x"


def params_line(params: Mapping[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def render_xai_figures(result, images: Sequence[np.ndarray] | np.ndarray, out_dir: str | Path, prefix: str = "",
                       image_ids: Sequence[str] | None = None, scale: float = 1.0, dpi: int = 110,
                       alpha: float = 0.55) -> list[tuple[Path, str, str]]:
    """Draw every figure of an :class:`~glassbox_audit.xai.batch.XaiResult`.

    Parameters
    ----------
    result : XaiResult
        What :func:`~glassbox_audit.xai.batch.explain_batch` returned for the batch.
    images : list or array of images
        The batch's images, at native size (list of HxWx3 uint8, as in ``BatchView.images``)
        or the network inputs ``(N, S, S, 3)``; maps are resized to each image.
    out_dir : str or Path
        Folder the PNGs go to (created).
    prefix : str, default ""
        File-name prefix, e.g. ``"batch0003_"``.
    image_ids : list of str, optional
        Row labels; default ``result.image_ids``.
    scale, dpi, alpha : float, int, float
        Cell size multiplier, PNG resolution, heatmap opacity.

    Returns
    -------
    list of (Path, str, str)
        ``(path, kind, description)`` per PNG; kinds ``xai`` (a method, every model),
        ``xai_layers`` (a layer-wise method, one model), ``xai_check`` (the checks).
    """
    out = Path(out_dir)
    ids = list(image_ids if image_ids is not None else result.image_ids)
    written: list[tuple[Path, str, str]] = []
    seconds = result.timings

    def caption(key: str, models: Sequence[str], params: Mapping[str, object]) -> str:
        family = key.split("/", 1)[0]
        lines = [f"{TITLES.get(key, TITLES.get(family, key))}. Parameters: {params_line(params)}."]
        if family not in ("superpixel", "attention") and models[0] in result.targets:
            lines.append(f"Explained: {result.targets[models[0]].describe()}.")
        return "\n".join(lines)

    def timing(key: str, models: Sequence[str]) -> str:
        """How long the maps took, for the figure's description: not drawn into the picture,
        which then depends only on the maps (and is reused by a repeat run, see figure_cache).
        A cached model's seconds are those of the run that computed its maps: say so."""
        family = key.split("/", 1)[0]
        times = [f"{m} {seconds[family][m]:.1f} s" + (" (earlier run, read from the cache)" if m in result.cached else "")
                 for m in models if m in seconds.get(family, {})]
        return f" Time ({family}, all maps of the method): {', '.join(times)}." if times else ""

    for key, per_model in result.maps.items():
        family = key.split("/", 1)[0]
        if family in _LAYERED and key != "attention":
            continue
        path = out / f"{prefix}xai_{_safe(key)}.png"
        save_map_grid(path, images, per_model, ids, caption(key, list(per_model), result.params.get(key, {})),
                      key=key, alpha=alpha,
                      scale=scale, dpi=dpi)
        written.append((path, "xai", f"{TITLES.get(key, key)} for each variant.{timing(key, list(per_model))}"))

    for family in _LAYERED:
        parts = [k for k in result.maps if k.startswith(f"{family}/")]
        for model in result.models:
            columns = {k.split("/", 1)[1]: result.maps[k][model] for k in parts if model in result.maps[k]}
            if not columns:
                continue
            path = out / f"{prefix}xai_{_safe(family)}_{_safe(model)}.png"
            # The per-part parameter (layer or gate) is the column title; print the shared ones.
            shared = {k: v for k, v in result.params.get(parts[0], {}).items() if k not in ("layers", "gates")}
            text = caption(parts[0], [model], shared)
            save_map_grid(path, images, columns, ids, f"{model}: {text}", key=family, alpha=alpha, scale=scale, dpi=dpi)
            what = "Grad-CAM per layer group" if family == "layer_gradcam" else "attention coefficients per gate"
            written.append((path, "xai_layers", f"{model}: {what}.{timing(parts[0], [model])}"))

    if result.curves:
        path = out / f"{prefix}xai_deletion_insertion.png"
        save_curves_figure(path, result.curves, dpi=dpi)
        written.append((path, "xai_check", f"{READING['deletion']} {READING['insertion']}"))
    if result.randomisation:
        path = out / f"{prefix}xai_randomisation.png"
        save_randomisation_figure(path, result.randomisation, dpi=dpi)
        written.append((path, "xai_check", READING["randomisation"]))
    return written
