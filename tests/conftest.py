"""Shared fixtures: tiny synthetic data, tiny models, and builders for dataset folders.

Everything here is small enough that the whole suite runs in minutes on 2 cores: 32 px
models of depth 2 with 4 base filters, trained for an epoch or two.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED_ISIC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "isic2017-256"


def tiny_overrides(tmp: Path) -> list[str]:
    """Config overrides for a complete audit in seconds, writing only under ``tmp``."""
    return [
        f'audits_dir="{tmp / "audits"}"',
        f'models_dir="{tmp / "models"}"',
        f'data.cache_dir="{tmp / "cache"}"',
        f'xai.cache_dir="{tmp / "cache" / "xai"}"', f'report.figure_cache="{tmp / "cache" / "figures"}"',
        "data.synthetic.n_train=16", "data.synthetic.n_val=6", "data.synthetic.n_test=12",
        "data.synthetic.height=40", "data.synthetic.width=52",
        "model.input_size=32", "model.depth=2", "model.base_filters=4",
        "train.epochs=2", "train.finetune_epochs=1", "train.batch_size=4",
        "evaluate.batch_size=4", "report.figure_dpi=50",
        # Explanations with every method and check on, at the smallest sizes that still exercise them.
        "xai.ig_steps=4", "xai.smoothgrad_samples=2", "xai.deletion_steps=4", "xai.randomisation_steps=1",
        "xai.slic_segments=20", 'xai.randomisation_methods=["saliency"]',
        # The LLM appendix has its own tests with the real model (test_llm_model.py); here it
        # would only add its load and six answers to every tiny audit.
        "llm.enabled=false",
    ]


HOSTILE = "<script>alert('x')</script>"


def flip_bit(path: Path, index: int = 0, bit: int = 0) -> None:
    """Flip one bit of a (possibly read-only, sealed) file in place."""
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[index] ^= 1 << bit
    path.write_bytes(bytes(data))


def tree_hashes(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def two_runs(tmp_path_factory):
    """The same tiny audit run twice, the second time with stored models."""
    tmp = tmp_path_factory.mktemp("pipeline")
    from glassbox_audit import load_config, run_audit

    overrides = tiny_overrides(tmp) + ["name=tiny", f'variants.0.description="{HOSTILE}"']
    cfg = load_config(overrides=overrides)
    logger = logging.getLogger("glassbox_audit")
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda r: records.append(r.getMessage())
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        first = run_audit(cfg)
        first_hashes = tree_hashes(first.path)
        first_log = list(records)
        records.clear()
        second = run_audit(cfg)
        second_log = list(records)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return {"first": first, "second": second, "first_hashes": first_hashes, "first_log": first_log,
            "second_log": second_log, "cfg": cfg, "tmp": tmp}


@pytest.fixture(scope="session")
def serve_audit(tmp_path_factory):
    """One tiny audit version for the review workstation's tests (HTML only: they add reviews)."""
    from glassbox_audit import load_config, run_audit

    tmp = tmp_path_factory.mktemp("serve")
    cfg = load_config(overrides=tiny_overrides(tmp) + ["name=tiny", "report.pdf=false"])
    result = run_audit(cfg)
    return {"tmp": tmp, "audits": tmp / "audits", "v1": result.path, "cfg": cfg}


@pytest.fixture
def tiny_config(tmp_path):
    from glassbox_audit.config import load_config

    def make(*extra: str, **flags):
        return load_config(overrides=tiny_overrides(tmp_path) + list(extra), **flags)

    return make


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(path.suffix or ".png", array)
    assert ok
    buf.tofile(str(path))
    return path


def disc_pair(seed: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """An image with a dark disc on a light background and its exact mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    cy, cx = rng.integers(h // 3, 2 * h // 3), rng.integers(w // 3, 2 * w // 3)
    r = rng.integers(min(h, w) // 6, min(h, w) // 3)
    mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8) * 255
    image = np.full((h, w, 3), 200, np.uint8)
    image[mask > 0] = (90, 60, 40)
    return image, mask


@pytest.fixture
def make_isic(tmp_path):
    """Build an ISIC Task 1 folder with the official names of ``year`` and tiny images."""
    from glassbox_audit.data.layouts import ISIC_LAYOUTS

    def make(year: str, counts: dict[str, int], with_masks: tuple[str, ...] = ("train", "val", "test")) -> Path:
        root = tmp_path / f"isic{year}"
        spec = ISIC_LAYOUTS[year]
        n = 0
        for part, count in counts.items():
            img_dir, mask_dir = spec["parts"][part]
            for _ in range(count):
                stem = f"ISIC_{n:07d}"
                image, mask = disc_pair(n, 30, 40)
                write_png(root / img_dir / f"{stem}.jpg", image)
                if year == "2017":  # the official 2017 folders also hold superpixel maps
                    write_png(root / img_dir / f"{stem}_superpixels.png", image)
                if part in with_masks:
                    write_png(root / mask_dir / f"{stem}{spec['suffix']}", mask)
                n += 1
            (root / img_dir / "LICENSE.txt").write_text("CC-BY-NC")
        return root

    return make
