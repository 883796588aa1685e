"""Dossier charts drawn from numbers only (training histories, metric tables, counts).

Every function writes one PNG and returns its path. Figures are built with the object API
(``matplotlib.figure.Figure`` on an Agg canvas, never ``pyplot``) so several reports can be
rendered from threads at once, and the PNG bytes depend only on the inputs: an audit pack is
compared byte for byte when it is re-run.

Conventions shared by all charts:

* models keep the order of the input dict and get the same colour in every chart
  (Okabe-Ito palette, readable with the common colour-vision deficiencies);
* NaN and infinite values are skipped, never plotted as zero;
* empty inputs give an empty axis with a "no data" note instead of an exception, so a
  report with a missing section still renders.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from .figure_cache import cached_figure
from .kit import LINESTYLES, MODEL_COLOURS, new_figure, save_png, wrap_label

__all__ = [
    "MODEL_COLOURS",
    "plot_batch_metric",
    "plot_confusion_matrices",
    "plot_histogram",
    "plot_metric_comparison",
    "plot_operating_points",
    "plot_training_curves",
]

# A second cue besides colour, for readers who cannot tell two palette entries apart.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")

_PAGE_WIDTH = 7.0  # inches: A4 minus margins
_FONT = 8
_SMALL = 7
_NO_DATA = "no data"
# Keras adds the optimiser's learning rate to the history; it is not a quality metric and its
# scale would flatten the metric panel.
_NOT_METRICS = frozenset({"lr", "learning_rate"})


# --------------------------------------------------------------------------- helpers


def _colour(index: int) -> str:
    return MODEL_COLOURS[index % len(MODEL_COLOURS)]


def _no_data(ax: Axes, note: str = _NO_DATA) -> None:
    """Mark ``ax`` as intentionally empty."""
    # Hide ticks rather than removing them: the axis may share its x ticks with a panel that has data.
    ax.tick_params(left=False, bottom=False, labelleft=False, labelbottom=False)
    ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center",
            fontsize=_FONT, color="0.45", style="italic")


def _as_float(value: object) -> float:
    """``value`` as a float, NaN when it is missing or not a number."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def _finite(values: Iterable[object]) -> np.ndarray:
    """Values as floats with NaN, inf and non-numbers removed."""
    arr = np.array([_as_float(v) for v in values], dtype=float)
    return arr[np.isfinite(arr)]


def _style_axis(ax: Axes) -> None:
    ax.tick_params(labelsize=_SMALL)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(True, axis="y", color="0.9", linewidth=0.6)
    ax.set_axisbelow(True)


def _legend_columns(n_entries: int, longest: int) -> int:
    """Columns for a legend across the page that stays on few lines without overflowing."""
    per_row = max(1, int(_PAGE_WIDTH * 72 / (0.55 * _SMALL * (longest + 5))))
    return max(1, min(n_entries, per_row))


def _figure_legend(fig: Figure, handles: Sequence[object], labels: Sequence[str]) -> None:
    if not handles:
        return
    fig.legend(handles, labels, loc="outside upper center", frameon=False, fontsize=_SMALL,
               ncols=_legend_columns(len(labels), max(len(s) for s in labels)),
               handlelength=2.2, columnspacing=1.2)


# --------------------------------------------------------------------------- training


def _split_history(history: Mapping[str, Sequence[float]]) -> tuple[list[str], list[str]]:
    """Base names of loss series and of metric series, in first-seen order."""
    losses: list[str] = []
    metrics: list[str] = []
    for key in history:
        base = key[4:] if key.startswith("val_") else key
        if base in _NOT_METRICS:
            continue
        target = losses if "loss" in base else metrics
        if base not in target:
            target.append(base)
    return losses, metrics


def _plot_series(ax: Axes, history: Mapping[str, Sequence[float]], bases: Sequence[str],
                 colours: Mapping[str, str]) -> list[float]:
    """Draw train (solid) and validation (dashed) series; return every finite value drawn."""
    drawn: list[float] = []
    for base in bases:
        for key, style in ((base, "-"), (f"val_{base}", "--")):
            raw = history.get(key)
            if raw is None:
                continue
            ys = np.array([_as_float(v) for v in raw], dtype=float)
            epochs = np.arange(1, len(ys) + 1)
            keep = np.isfinite(ys)
            if not keep.any():
                continue
            # Markers matter for short runs, where a line alone can be a single invisible point.
            marker = "o" if len(ys) <= 30 else None
            # Open markers for validation: the only train/val cue left when a run has one epoch.
            ax.plot(epochs[keep], ys[keep], linestyle=style, color=colours[base], linewidth=1.3,
                    marker=marker, markersize=3.2, markerfacecolor=colours[base] if style == "-" else "white")
            drawn.extend(ys[keep].tolist())
    return drawn


@cached_figure
def plot_training_curves(path: str | Path, histories: Mapping[str, Mapping[str, Sequence[float]]],
                         dpi: int = 110) -> Path:
    """Plot loss and metric curves per model, one column of two panels per model.

    The upper panel of each model shows every series whose name contains ``loss``; the lower
    panel the other metrics. Training series are solid, validation series (``val_`` prefix)
    dashed, and a metric has the same colour for every model.

    Parameters
    ----------
    path : str or Path
        Where the PNG is written (parent folders are created).
    histories : dict of str to dict of str to list of float
        Model name to a Keras-style history, e.g. ``{"loss": [...], "val_loss": [...],
        "dice": [...], "val_dice": [...]}``. Keys may be missing, lists empty or one epoch
        long; NaN values are skipped. ``lr`` / ``learning_rate`` are ignored.
    dpi : int, default 110
        Resolution of the PNG.

    Returns
    -------
    Path
        The path written.
    """
    models = list(histories)
    if not models:
        fig = new_figure(_PAGE_WIDTH, 2.0, dpi)
        _no_data(fig.add_subplot())
        return save_png(fig, path, dpi)

    # One colour per metric across all models, so "dice" reads the same in every column.
    loss_bases: list[str] = []
    metric_bases: list[str] = []
    for hist in histories.values():
        losses, metrics = _split_history(hist or {})
        loss_bases += [b for b in losses if b not in loss_bases]
        metric_bases += [b for b in metrics if b not in metric_bases]
    colours = {b: _colour(i) for i, b in enumerate(loss_bases + metric_bases)}

    ncols = min(len(models), 3)
    groups = math.ceil(len(models) / ncols)
    fig = new_figure(_PAGE_WIDTH, 0.5 + 2.7 * groups, dpi)
    grid = fig.add_gridspec(2 * groups, ncols, height_ratios=[1.0, 1.15] * groups)

    for i, name in enumerate(models):
        hist = histories[name] or {}
        row, col = divmod(i, ncols)
        ax_loss = fig.add_subplot(grid[2 * row, col])
        ax_metric = fig.add_subplot(grid[2 * row + 1, col], sharex=ax_loss)
        ax_loss.set_title(wrap_label(name, 30), fontsize=_FONT)
        losses, metrics = _split_history(hist)

        n_epochs = max((len(v) for k, v in hist.items() if v is not None and k not in _NOT_METRICS), default=0)
        with_data = []
        for ax, bases, ylabel in ((ax_loss, losses, "loss"), (ax_metric, metrics, "metric")):
            drawn = _plot_series(ax, hist, bases, colours)
            if not drawn:
                _no_data(ax, f"no {ylabel} recorded")
                continue
            with_data.append(ax)
            _style_axis(ax)
            ax.set_ylabel(ylabel, fontsize=_SMALL)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
            if ax is ax_metric and min(drawn) >= 0.0 and max(drawn) <= 1.0:
                # A fixed 0..1 scale lets the reader compare models column against column.
                ax.set_ylim(-0.02, 1.02)
        ax_loss.tick_params(labelbottom=False)
        if not with_data:
            continue
        # The whole run, not just the finite points: a lone point would get fractional epoch ticks.
        pad = max(0.5, 0.03 * n_epochs)
        ax_loss.set_xlim(1 - pad, n_epochs + pad)
        if n_epochs == 1:
            ax_loss.set_xticks([1])
        bottom = with_data[-1]  # epoch labels go under the lowest panel that has a curve
        bottom.tick_params(labelbottom=True)
        bottom.set_xlabel("epoch", fontsize=_SMALL)

    handles: list[object] = [Line2D([], [], color=colours[b], linewidth=1.6) for b in colours]
    labels = list(colours)
    if labels:
        handles += [Line2D([], [], color="0.3", linestyle="-", marker="o", markersize=3.2),
                    Line2D([], [], color="0.3", linestyle="--", marker="o", markersize=3.2, markerfacecolor="white")]
        labels += ["training", "validation"]
    _figure_legend(fig, handles, labels)
    return save_png(fig, path, dpi)


# --------------------------------------------------------------------------- per batch


@cached_figure
def plot_batch_metric(path: str | Path, values: Mapping[str, Sequence[tuple[int, float]]], metric: str,
                      means: Mapping[str, float] | None = None, highlight: Sequence[int] | None = None,
                      dpi: int = 110) -> Path:
    """Plot a metric batch by batch for each model.

    Parameters
    ----------
    path : str or Path
        Where the PNG is written (parent folders are created).
    values : dict of str to list of (int, float)
        Model name to ``(batch index, value)`` pairs; order does not matter, NaN values are
        skipped.
    metric : str
        Metric name, used as the y-axis label.
    means : dict of str to float, optional
        Model name to the mean drawn as a dashed horizontal line (for instance the per-image
        mean over the whole test set). When omitted, the mean of the plotted batch values
        is drawn instead.
    highlight : list of int, optional
        Batch indices to shade (the batches shown in the dossier).
    dpi : int, default 110
        Resolution of the PNG.

    Returns
    -------
    Path
        The path written.
    """
    fig = new_figure(_PAGE_WIDTH, 3.2, dpi)
    ax = fig.add_subplot()
    handles: list[object] = []
    labels: list[str] = []
    drawn_any = False

    for i, (name, pairs) in enumerate(values.items()):
        points = sorted((int(b), _as_float(v)) for b, v in (pairs or []))
        xs = np.array([p[0] for p in points], dtype=float)
        ys = np.array([p[1] for p in points], dtype=float)
        keep = np.isfinite(ys)
        colour = _colour(i)
        if keep.any():
            drawn_any = True
            # Points at exactly 0 or 1 sit on the axis limits: keep them whole.
            (line,) = ax.plot(xs[keep], ys[keep], color=colour, linewidth=1.1, marker=_MARKERS[i % len(_MARKERS)],
                              markersize=3.2, clip_on=False, zorder=3)
            handles.append(line)
            labels.append(str(name))
        mean = _as_float(means.get(name)) if means is not None else (
            float(ys[keep].mean()) if keep.any() else math.nan)
        if math.isfinite(mean):
            drawn_any = True
            mline = ax.axhline(mean, color=colour, linestyle="--", linewidth=1.0, zorder=2)
            handles.append(mline)
            labels.append(f"{name} mean {mean:.3f}")

    marked = sorted({int(h) for h in (highlight or [])})
    for j, idx in enumerate(marked):
        span = ax.axvspan(idx - 0.5, idx + 0.5, color="0.6", alpha=0.25, linewidth=0, zorder=1)
        if j == 0:
            handles.append(span)
            labels.append("batch in dossier")

    if not drawn_any:
        _no_data(ax)
        return save_png(fig, path, dpi)

    _style_axis(ax)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("batch", fontsize=_SMALL)
    ax.set_ylabel(metric, fontsize=_SMALL)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _figure_legend(fig, handles, labels)
    return save_png(fig, path, dpi)


# --------------------------------------------------------------------------- confusion


@cached_figure
def plot_confusion_matrices(path: str | Path, counts: Mapping[str, Mapping[str, int]], dpi: int = 110) -> Path:
    """Draw one pixel-level 2x2 confusion matrix per model.

    Rows are the ground truth (lesion, background), columns the prediction. A cell's colour is
    its share of the truth row (so recall and specificity read off the diagonal); its text
    gives that share in percent and the raw count.

    Parameters
    ----------
    path : str or Path
        Where the PNG is written (parent folders are created).
    counts : dict of str to dict of str to int
        Model name to ``{"tp": ..., "fp": ..., "fn": ..., "tn": ...}``. A missing or NaN
        count is shown as "n/a" and makes its row's shares unknown.
    dpi : int, default 110
        Resolution of the PNG.

    Returns
    -------
    Path
        The path written.
    """
    models = list(counts)
    if not models:
        fig = new_figure(_PAGE_WIDTH, 2.0, dpi)
        _no_data(fig.add_subplot())
        return save_png(fig, path, dpi)

    ncols = min(len(models), 4)
    nrows = math.ceil(len(models) / ncols)
    fig = new_figure(min(_PAGE_WIDTH, 1.65 * ncols + 1.1), 2.45 * nrows + 0.1, dpi)
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(len(models))]
    cmap = ListedColormap(_blues(256)).with_extremes(bad="0.88")
    image = None
    for i, (ax, name) in enumerate(zip(axes, models)):
        c = counts[name] or {}
        grid = np.array([[_as_float(c.get("tp")), _as_float(c.get("fn"))],
                         [_as_float(c.get("fp")), _as_float(c.get("tn"))]])
        totals = grid.sum(axis=1, keepdims=True)  # NaN when any count in the row is unknown
        with np.errstate(invalid="ignore", divide="ignore"):
            shares = np.where(totals > 0, grid / totals, np.nan)
        image = ax.imshow(np.ma.masked_invalid(shares), cmap=cmap, vmin=0.0, vmax=1.0)
        for (r, k), share in np.ndenumerate(shares):
            count = grid[r, k]
            count_text = f"{int(count):,}" if math.isfinite(count) else "n/a"
            share_text = f"{share:.1%}" if math.isfinite(share) else "n/a"
            dark = math.isfinite(share) and share > 0.55
            ax.text(k, r, f"{share_text}\n{count_text}", ha="center", va="center", fontsize=_SMALL,
                    color="white" if dark else "black", linespacing=1.25)
        ax.set_title(wrap_label(name, 22), fontsize=_FONT)
        ax.set_xticks([0, 1], ["lesion", "background"], fontsize=_SMALL)
        ax.set_xlabel("prediction", fontsize=_SMALL)
        ax.tick_params(length=0)
        if i % ncols == 0:
            ax.set_yticks([0, 1], ["lesion", "background"], fontsize=_SMALL, rotation=90, va="center")
            ax.set_ylabel("ground truth", fontsize=_SMALL)
        else:
            ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    if image is not None:
        bar = fig.colorbar(image, ax=axes, shrink=0.8, aspect=25, pad=0.02)
        bar.set_label("share of ground-truth row", fontsize=_SMALL)
        bar.ax.tick_params(labelsize=_SMALL)
        bar.ax.yaxis.set_major_formatter(lambda v, _pos: f"{v:.0%}")
    return save_png(fig, path, dpi)


def _blues(n: int) -> np.ndarray:
    """A light-to-dark blue ramp that keeps dark text readable on its light half."""
    from matplotlib import colormaps  # local: registry lookup only needed here

    return colormaps["Blues"](np.linspace(0.05, 0.9, n))


# --------------------------------------------------------------------------- histogram


@cached_figure
def plot_histogram(path: str | Path, values: Mapping[str, Sequence[float]], metric: str,
                   threshold: float | None = None, dpi: int = 110) -> Path:
    """Plot the per-image distribution of a 0..1 metric for each model.

    Parameters
    ----------
    path : str or Path
        Where the PNG is written (parent folders are created).
    values : dict of str to list of float
        Model name to per-image values; NaN values are skipped and values outside 0..1 are
        counted in the edge bins.
    metric : str
        Metric name, used as the x-axis label.
    threshold : float, optional
        Draws a labelled vertical line there (e.g. 0.65, the ISIC Jaccard failure threshold)
        and adds each model's share of images below it to the legend.
    dpi : int, default 110
        Resolution of the PNG.

    Returns
    -------
    Path
        The path written.
    """
    fig = new_figure(_PAGE_WIDTH, 3.0, dpi)
    ax = fig.add_subplot()
    bins = np.linspace(0.0, 1.0, 21)
    handles: list[object] = []
    labels: list[str] = []
    for i, (name, raw) in enumerate(values.items()):
        data = np.clip(_finite(raw or []), 0.0, 1.0)
        if data.size == 0:
            continue
        style = LINESTYLES[i % len(LINESTYLES)]
        ax.hist(data, bins=bins, histtype="step", color=_colour(i), linewidth=1.5, linestyle=style)
        label = f"{name} (n={data.size:,}, median {np.median(data):.3f}"
        if threshold is not None and math.isfinite(_as_float(threshold)):
            label += f", {np.mean(data < threshold):.0%} below {threshold:g}"
        handles.append(Line2D([], [], color=_colour(i), linewidth=1.5, linestyle=style))
        labels.append(label + ")")

    if not handles:
        _no_data(ax)
        return save_png(fig, path, dpi)

    _style_axis(ax)
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel(metric, fontsize=_SMALL)
    ax.set_ylabel("images", fontsize=_SMALL)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    if threshold is not None and math.isfinite(_as_float(threshold)):
        thr = float(threshold)
        ax.axvline(thr, color="0.15", linestyle=":", linewidth=1.3, zorder=4)
        # Label on the side with more room so it never runs off the axis.
        left = thr > 0.5
        ax.text(thr + (-0.01 if left else 0.01), 0.97, f"threshold {thr:g}", transform=ax.get_xaxis_transform(),
                ha="right" if left else "left", va="top", fontsize=_SMALL, color="0.15")
    _figure_legend(fig, handles, labels)
    return save_png(fig, path, dpi)


# --------------------------------------------------------------------------- comparison


@cached_figure
def plot_metric_comparison(path: str | Path, metrics: Mapping[str, Mapping[str, float]],
                           intervals: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
                           dpi: int = 110) -> Path:
    """Grouped bar chart of summary metrics: one group per metric, one bar per model.

    Parameters
    ----------
    path : str or Path
        Where the PNG is written (parent folders are created).
    metrics : dict of str to dict of str to float
        Model name to ``{metric name: value in 0..1}``. Metrics missing for a model or NaN
        leave a gap.
    intervals : dict of str to dict of str to (float, float), optional
        Model name to ``{metric name: (low, high)}``, drawn as error bars (e.g. bootstrap
        confidence intervals).
    dpi : int, default 110
        Resolution of the PNG.

    Returns
    -------
    Path
        The path written.
    """
    models = list(metrics)
    names: list[str] = []
    for table in metrics.values():
        names += [m for m in (table or {}) if m not in names]

    fig = new_figure(_PAGE_WIDTH, 3.3, dpi)
    ax = fig.add_subplot()
    if not models or not names:
        _no_data(ax)
        return save_png(fig, path, dpi)

    n_models = len(models)
    width = 0.8 / n_models
    groups = np.arange(len(names), dtype=float)
    # Bar width in inches decides whether a value label ("0.873", 6.5 pt) fits upright.
    bar_inches = (_PAGE_WIDTH - 0.8) / len(names) * width
    rotate = bar_inches * 0.92 < 5 * 0.6 * 6.5 / 72
    label_room = 0.16 if rotate else 0.07  # in data units, above the highest bar or whisker

    handles: list[object] = []
    top = 1.0
    drawn_any = False
    for i, name in enumerate(models):
        table = metrics[name] or {}
        band = (intervals or {}).get(name) or {}
        xs = groups - 0.4 + width * (i + 0.5)
        colour = _colour(i)
        handles.append(Patch(facecolor=colour, edgecolor="none"))
        for x, metric in zip(xs, names):
            value = _as_float(table.get(metric))
            if not math.isfinite(value):
                # Say so, or an absent bar reads as a score of zero.
                ax.text(x, 0.01, "n/a", ha="center", va="bottom", fontsize=6.5, color="0.45",
                        rotation=90 if rotate else 0)
                continue
            drawn_any = True
            ax.bar(x, value, width=width * 0.92, color=colour, edgecolor="none", zorder=2)
            head = value
            low, high = _interval(band.get(metric))
            if math.isfinite(low) and math.isfinite(high):
                ax.errorbar(x, value, yerr=[[max(value - low, 0.0)], [max(high - value, 0.0)]], fmt="none",
                            ecolor="0.15", elinewidth=0.9, capsize=2.0, zorder=3)
                head = max(head, high)
            ax.text(x, head + 0.012, f"{value:.3f}", ha="center", va="bottom", fontsize=6.5,
                    rotation=90 if rotate else 0, zorder=4)
            top = max(top, head + label_room)

    if not drawn_any:
        _no_data(ax)
        return save_png(fig, path, dpi)

    _style_axis(ax)
    ax.set_xticks(groups, [wrap_label(n, max(int(bar_inches * n_models * 12), 6)) for n in names], fontsize=_SMALL)
    ax.tick_params(axis="x", length=0)
    # The axis runs a little past 1 only to make room for the labels; ticks stop at 1.
    ax.set_ylim(0.0, max(top, 1.0 + label_room))
    ax.set_yticks(np.linspace(0.0, 1.0, 6))
    ax.spines["left"].set_bounds(0.0, 1.0)
    ax.set_xlim(-0.5, len(names) - 0.5)
    _figure_legend(fig, handles, [str(m) for m in models])
    return save_png(fig, path, dpi)


def _interval(pair: object) -> tuple[float, float]:
    """``(low, high)`` as floats, NaN for anything missing or malformed."""
    try:
        low, high = pair  # type: ignore[misc]
    except (TypeError, ValueError):
        return math.nan, math.nan
    return _as_float(low), _as_float(high)


# --------------------------------------------------------------------------- operating points


@cached_figure
def plot_operating_points(path: str | Path, curves: Mapping[str, Sequence[Mapping[str, float]]],
                          threshold: float = 0.5, dpi: int = 110) -> Path:
    """Two panels per audit: macro Dice against the threshold, and micro precision against
    micro recall as the threshold moves; the operating threshold is marked on both.

    Parameters
    ----------
    path : str or Path
        Where the PNG is written (parent folders are created).
    curves : dict of str to list of dict
        Model name to rows with ``threshold``, ``macro_dice``, ``micro_precision`` and
        ``micro_recall`` (as stored in the ``operating_points`` table), any order.
    threshold : float, default 0.5
        The operating threshold the audit scores at.
    dpi : int, default 110
        Resolution of the PNG.
    """
    fig = new_figure(_PAGE_WIDTH, 3.2, dpi)
    left, right = fig.subplots(1, 2)
    handles: list[object] = []
    labels: list[str] = []
    for i, (name, rows) in enumerate(curves.items()):
        rows = sorted(rows, key=lambda r: r["threshold"])
        if not rows:
            continue
        # Precision is undefined (stored as NULL) at thresholds where nothing is predicted.
        t, dice, prec, rec = (np.array([_as_float(r[k]) for r in rows])
                              for k in ("threshold", "macro_dice", "micro_precision", "micro_recall"))
        style = LINESTYLES[i % len(LINESTYLES)]
        left.plot(t, dice, color=_colour(i), linestyle=style, linewidth=1.5)
        right.plot(rec, prec, color=_colour(i), linestyle=style, linewidth=1.5)
        at = int(np.argmin(np.abs(t - threshold)))
        left.plot(t[at], dice[at], "o", color=_colour(i), markersize=5)
        right.plot(rec[at], prec[at], "o", color=_colour(i), markersize=5)
        best = int(np.argmax(dice))
        handles.append(Line2D([], [], color=_colour(i), linewidth=1.5, linestyle=style))
        labels.append(f"{name} (Dice {dice[at]:.3f} at {t[at]:g}; best {dice[best]:.3f} at {t[best]:g})")
    if not handles:
        _no_data(left)
        _no_data(right)
        return save_png(fig, path, dpi)
    for ax in (left, right):
        _style_axis(ax)
    left.axvline(threshold, color="0.15", linestyle=":", linewidth=1.0)
    left.set_xlabel("threshold on the probability", fontsize=_SMALL)
    left.set_ylabel("Dice (image mean)", fontsize=_SMALL)
    left.set_xlim(0.0, 1.0)
    right.set_xlabel("recall (pixels)", fontsize=_SMALL)
    right.set_ylabel("precision (pixels)", fontsize=_SMALL)
    _figure_legend(fig, handles, labels)
    return save_png(fig, path, dpi)
