"""The figure kit every dossier picture is drawn with: a detached figure, reproducible PNG
bytes, the model palette and line styles, label wrapping.

Charts (:mod:`.charts`), image grids (:mod:`.overlays`, :mod:`.grid`) and the explanation
figures (:mod:`glassbox_audit.xai.figures`) all draw through these, so every PNG of a dossier
follows the same reproducibility rules and every model has one colour.
"""

from __future__ import annotations

import re
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["LINESTYLES", "MODEL_COLOURS", "new_figure", "save_png", "wrap_label"]

# Okabe-Ito order with yellow last: yellow lines vanish on a white page.
MODEL_COLOURS: tuple[str, ...] = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow
)
# A line style per model beyond the palette's length (and for readers who cannot tell two colours apart).
LINESTYLES = ("-", (0, (5, 1.5)), "-.", (0, (1, 1)), (0, (3, 1, 1, 1, 1, 1)))


def new_figure(width: float, height: float, dpi: int, constrained: bool = True) -> Figure:
    """A figure on its own Agg canvas, detached from pyplot's global state."""
    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained" if constrained else None)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | Path, dpi: int) -> Path:
    """Write ``fig`` as a reproducible PNG and return its path.

    Matplotlib stamps its version into the PNG "Software" chunk; dropping it keeps the
    bytes identical across patch releases, so audit packs compare equal on re-runs.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # zlib level 1, not Pillow's 6: a third of an audit's drawing time was PNG compression
    # (62 figures: 8.3 s at level 6, 2.1 s at level 1, for 14% more bytes; the PDF embeds the
    # photographic ones as JPEG either way).
    fig.savefig(out, format="png", dpi=dpi, metadata={"Software": None}, facecolor="white",
                pil_kwargs={"compress_level": 1})
    return out


def wrap_label(text: str, width: int, max_lines: int = 2) -> str:
    """Wrap a label over at most ``max_lines`` lines, shortening the last one if needed.

    Model names are identifiers like ``attention_unet_deep_supervision``, so lines break
    after ``_``, ``-`` or ``.`` as well as at spaces; only an over-long part is cut mid-word.
    """
    width = max(width, 4)
    lines: list[str] = []
    current = ""
    for part in re.split(r"(?<=[_\-.\s])", str(text)):
        while len(part) > width:  # a part longer than a line: hard split
            if current:
                lines.append(current)
                current = ""
            lines.append(part[:width])
            part = part[width:]
        if len(current) + len(part.rstrip()) > width and current:
            lines.append(current)
            current = ""
        current += part
    lines = [line.strip() for line in [*lines, current] if line.strip()] or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: width - 1] + "\u2026"
    return "\n".join(lines)
