"""Clean-up of a predicted binary mask, applied at native resolution before scoring.

Off by default: it suits tasks with one object per image (a skin lesion, an organ) and
would destroy thin or scattered structures (retinal vessels, defects on a part). Enabled
per task in the config (``evaluate.postprocess``), recorded in the database with every run.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from scipy import ndimage

__all__ = ["POSTPROCESS_STEPS", "largest_component", "fill_holes", "postprocess"]


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 8-connected foreground component (an empty mask stays empty)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 2:  # background only, or a single component
        return mask.astype(bool)
    keep = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == keep


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background regions fully enclosed by foreground."""
    return ndimage.binary_fill_holes(mask.astype(bool))


POSTPROCESS_STEPS = {"largest_component": largest_component, "fill_holes": fill_holes}


def postprocess(mask: np.ndarray, steps: Sequence[str]) -> np.ndarray:
    """Apply the named steps in order; no steps returns the mask unchanged (as bool)."""
    out = mask.astype(bool)
    for step in steps:
        out = POSTPROCESS_STEPS[step](out)
    return out
