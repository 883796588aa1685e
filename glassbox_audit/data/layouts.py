"""Finding image/mask pairs and their partitions in the supported folder layouts.

* ``isic``: the official ISIC 2016, 2017 and 2018 Task 1 folder and file names, keeping the
  official partitions.
* ``folder``: any folder of images and a folder of masks paired by stem, optional split lists.
* ``synthetic``: generated into a cache folder, then read as a ``folder`` layout.

Each returns a :class:`Discovery`: the samples per partition, plus notes (for the log and
the dossier) saying how partitions were chosen.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import DataConfig, config_hash
from ..errors import DataError
from .imageio import printable

__all__ = ["Discovery", "Sample", "ISIC_LAYOUTS", "discover", "ground_truth_statement"]

log = logging.getLogger(__name__)

PARTITIONS = ("train", "val", "test")

# How each layout's masks were made, for the dossier's data sheet (CLAIM asks for it). A
# folder of masks says nothing about its own making, so its statement comes from the user.
GROUND_TRUTH = {
    "synthetic": "Exact by construction: each mask is the lesion shape the synthetic layout drew into its "
                 "image (no annotator, no disagreement). Figures on synthetic data test the pipeline, "
                 "not clinical performance.",
    "isic": "ISIC Challenge lesion masks as published by the challenge: made with a fully automated "
            "method, semi-automated flood-fill or manual polygon tracing, and reviewed and curated by "
            "practising dermatologists with expertise in dermoscopy. One mask per image; annotators "
            "and method per image are not recorded, and inter-annotator variability is not measured.",
}
UNSTATED_GROUND_TRUTH = ("Not stated. Set data.ground_truth to say who drew the masks, with which tool and "
                         "protocol, and how they were reviewed.")


def ground_truth_statement(layout: str, stated: str = "") -> str:
    """How the masks of a dataset were made: the user's own statement, else the layout's."""
    return stated.strip() or GROUND_TRUTH.get(layout, UNSTATED_GROUND_TRUTH)


@dataclass(frozen=True)
class Sample:
    id: str
    image: Path
    mask: Path
    partition: str


@dataclass
class Discovery:
    layout: str
    root: Path
    samples: dict[str, list[Sample]]
    notes: list[str] = field(default_factory=list)
    test_source: str = "test"  # the official partition evaluated as the test set
    description: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason), with on_bad_input = skip


class _Problems:
    """Per-file problems: raised at once (policy ``fail``) or collected (policy ``skip``)."""

    def __init__(self, policy: str):
        self.policy = policy
        self.skipped: list[tuple[str, str]] = []

    def __call__(self, path: Path, reason: str) -> None:
        if self.policy == "fail":
            raise DataError(f"{path}: {reason}")
        self.skipped.append((printable(path), printable(reason)))
        log.warning("data: skipping %s: %s", path, reason)


# Official Task 1 names: (images folder, masks folder) per partition, and the mask suffix.
ISIC_LAYOUTS: dict[str, dict] = {
    "2018": {
        "parts": {
            "train": ("ISIC2018_Task1-2_Training_Input", "ISIC2018_Task1_Training_GroundTruth"),
            "val": ("ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1_Validation_GroundTruth"),
            "test": ("ISIC2018_Task1-2_Test_Input", "ISIC2018_Task1_Test_GroundTruth"),
        },
        "suffix": "_segmentation.png",
    },
    "2017": {
        "parts": {
            "train": ("ISIC-2017_Training_Data", "ISIC-2017_Training_Part1_GroundTruth"),
            "val": ("ISIC-2017_Validation_Data", "ISIC-2017_Validation_Part1_GroundTruth"),
            "test": ("ISIC-2017_Test_v2_Data", "ISIC-2017_Test_v2_Part1_GroundTruth"),
        },
        "suffix": "_segmentation.png",
    },
    "2016": {
        "parts": {
            "train": ("ISBI2016_ISIC_Part1_Training_Data", "ISBI2016_ISIC_Part1_Training_GroundTruth"),
            "test": ("ISBI2016_ISIC_Part1_Test_Data", "ISBI2016_ISIC_Part1_Test_GroundTruth"),
        },
        "suffix": "_Segmentation.png",
    },
}
# Image files only: the 2017 folders also hold ISIC_xxxxxxx_superpixels.png, and every
# folder may hold LICENSE or ATTRIBUTION text files.
_ISIC_IMAGE = re.compile(r"^(ISIC_\d{7})\.(jpe?g|png)$", re.IGNORECASE)


def discover(cfg: DataConfig) -> Discovery:
    """Find every image/mask pair for the configured layout."""
    problems = _Problems(cfg.on_bad_input)
    if cfg.layout == "isic":
        found = _discover_isic(Path(cfg.root), cfg, problems)
    elif cfg.layout == "folder":
        found = _discover_folder(Path(cfg.root), cfg, cfg.folder, problems)
    else:
        found = _discover_synthetic(cfg, problems)
    found.skipped = problems.skipped
    if cfg.limit:
        found.samples = {p: s[: cfg.limit] for p, s in found.samples.items()}
        found.notes.append(f"limited to the first {cfg.limit} images of each partition (data.limit)")
    for p in ("test",) if cfg.test_only else ("train", "test"):
        if not found.samples.get(p):
            raise DataError(f"{found.root}: no {p} images found for the {found.layout!r} layout")
    for note in found.notes:
        log.info("data: %s", note)
    return found


def _carve(samples: list[Sample], fraction: float, seed: int, new_partition: str
           ) -> tuple[list[Sample], list[Sample]]:
    """Split off a seeded share of ``samples`` as ``new_partition``; both parts keep id order."""
    n_out = max(1, int(round(len(samples) * fraction)))
    if n_out >= len(samples):
        raise DataError(f"only {len(samples)} images: too few to hold out {fraction:.0%} as {new_partition}")
    order = np.random.default_rng(seed).permutation(len(samples))
    out = set(order[:n_out].tolist())
    kept = [s for i, s in enumerate(samples) if i not in out]
    moved = [Sample(s.id, s.image, s.mask, new_partition) for i, s in enumerate(samples) if i in out]
    return kept, moved


# --- ISIC ------------------------------------------------------------------------------


def _isic_pairs(root: Path, images_dir: str, masks_dir: str, suffix: str, partition: str,
                problems: _Problems) -> list[Sample] | None:
    """Pairs of one official partition; None when the masks folder is absent."""
    img_dir, mask_dir = root / images_dir, root / masks_dir
    if not mask_dir.is_dir():
        return None
    images = {}
    for p in img_dir.iterdir():
        m = _ISIC_IMAGE.match(p.name)
        if m:
            images[m.group(1)] = p
    masks = {}
    for p in mask_dir.iterdir():
        if p.name.lower().endswith(suffix.lower()) and p.name.startswith("ISIC_"):
            masks[p.name[: -len(suffix)]] = p
    for stem in sorted(set(images) - set(masks)):
        problems(images[stem], f"image has no mask (expected {mask_dir / (stem + suffix)})")
    for stem in sorted(set(masks) - set(images)):
        problems(masks[stem], f"mask has no image in {img_dir}")
    return [Sample(s, images[s], masks[s], partition) for s in sorted(set(images) & set(masks))]


def _discover_isic(root: Path, cfg: DataConfig, problems: _Problems) -> Discovery:
    year = next(
        (y for y, spec in ISIC_LAYOUTS.items() if (root / spec["parts"]["train"][0]).is_dir()), None
    )
    if year is None:
        expected = ", ".join(spec["parts"]["train"][0] for spec in ISIC_LAYOUTS.values())
        raise DataError(f"{root}: not an ISIC Task 1 folder (expected one of: {expected})")
    spec = ISIC_LAYOUTS[year]
    notes: list[str] = [f"ISIC {year} Task 1 layout with official partition names"]
    found: dict[str, list[Sample] | None] = {}
    for part, (img_dir, mask_dir) in spec["parts"].items():
        if not (root / img_dir).is_dir():
            found[part] = None
            continue
        found[part] = _isic_pairs(root, img_dir, mask_dir, spec["suffix"], part, problems)
        if found[part] is None:
            notes.append(f"{img_dir}: no ground truth folder {mask_dir}; partition '{part}' not used")
    if not found.get("train"):
        raise DataError(f"{root / spec['parts']['train'][1]}: training masks not found")
    train, val, test = found["train"], found.get("val"), found.get("test")
    test_source = "test"
    if not test:
        if not val:
            raise DataError(f"{root}: no partition with masks to test on (need a validation or test ground truth folder)")
        test = [Sample(s.id, s.image, s.mask, "test") for s in val]
        test_source = "val"
        val = None
        notes.append(
            f"no official test masks: the official validation partition ({len(test)} images) "
            "is used as the test partition"
        )
    if not val:
        train, val = _carve(train, cfg.val_from_train_fraction, cfg.split_seed, "val")
        notes.append(
            f"validation for early stopping: {len(val)} images ({cfg.val_from_train_fraction:.0%}) "
            f"held out of the official training partition, seed {cfg.split_seed}"
        )
    return Discovery("isic", root, {"train": train, "val": val, "test": test}, notes, test_source,
                     f"ISIC {year} Task 1")


# --- folder ----------------------------------------------------------------------------


def _resolve(root: Path, sub: str) -> Path:
    p = Path(sub)
    return p if p.is_absolute() else root / p


def _discover_folder(root: Path, cfg: DataConfig, fc, problems: _Problems, description: str = "") -> Discovery:
    img_dir, mask_dir = _resolve(root, fc.images), _resolve(root, fc.masks)
    for key, d in (("data.folder.images", img_dir), ("data.folder.masks", mask_dir)):
        if not d.is_dir():
            raise DataError(f"{d}: folder not found ({key})")
    exts = {e.lower() for e in fc.image_exts}
    images: dict[str, Path] = {}
    dup_images: set[str] = set()
    for p in sorted(img_dir.iterdir()):
        if p.is_file() and p.suffix.lower() in exts:
            if p.stem in images:  # IMD002.png beside IMD002.jpg: which one is meant?
                problems(p, f"duplicate image stem '{p.stem}' (also {images[p.stem].name}); both left out")
                dup_images.add(p.stem)
                continue
            images[p.stem] = p
    if not images:
        raise DataError(f"{img_dir}: no images with extensions {', '.join(sorted(exts))}")
    mask_exts = {fc.mask_ext.lower()} if fc.mask_ext else exts
    masks: dict[str, Path] = {}
    for p in sorted(mask_dir.iterdir()):
        if not (p.is_file() and p.suffix.lower() in mask_exts):
            continue
        stem = p.stem
        if fc.mask_suffix:
            if not stem.endswith(fc.mask_suffix):
                continue
            stem = stem[: -len(fc.mask_suffix)]
        if stem in masks:
            problems(p, f"duplicate mask for stem '{stem}' (also {masks[stem].name}); both left out")
            dup_images.add(stem)
            continue
        masks[stem] = p
    # With images and masks in one folder, a mask file also looks like an image: drop those.
    if img_dir.resolve() == mask_dir.resolve():
        for p in masks.values():
            images.pop(p.stem, None)
    for stem in dup_images:
        images.pop(stem, None)
        masks.pop(stem, None)
    for stem in sorted(set(images) - set(masks)):
        problems(images[stem], f"image has no mask (expected {stem}{fc.mask_suffix}"
                               f"{fc.mask_ext or '.<ext>'} in {mask_dir})")
    for stem in sorted(set(masks) - set(images)):
        problems(masks[stem], f"mask has no image in {img_dir}")

    stems = sorted(set(images) & set(masks))
    notes: list[str] = []
    if fc.splits:
        split_dir = _resolve(root, fc.splits)
        parts = _read_splits(split_dir, set(stems), need=("test",) if cfg.test_only else ("train", "test"))
        if cfg.test_only:
            parts = {"test": parts["test"]}
            notes.append(f"test pairs from {split_dir / 'test.txt'} ({len(parts['test'])}); nothing is trained, "
                         "so the other lists are not used")
        else:
            notes.append(f"partitions from split lists in {split_dir}")
    elif cfg.test_only:
        parts = {"test": stems}
        notes.append(f"every one of the {len(stems)} image/mask pairs is a test pair (nothing is trained, so "
                     "none is held out for training)")
    else:
        order = np.random.default_rng(cfg.split_seed).permutation(len(stems))
        n_test = max(1, int(round(len(stems) * fc.test_fraction)))
        n_val = int(round(len(stems) * fc.val_fraction))
        if n_test + n_val >= len(stems):
            raise DataError(f"{img_dir}: only {len(stems)} image/mask pairs, too few to split")
        shuffled = [stems[i] for i in order]
        parts = {
            "test": sorted(shuffled[:n_test]),
            "val": sorted(shuffled[n_test:n_test + n_val]),
            "train": sorted(shuffled[n_test + n_val:]),
        }
        notes.append(
            f"random split with seed {cfg.split_seed}: test {fc.test_fraction:.0%}, "
            f"validation {fc.val_fraction:.0%}, rest training"
        )
    samples = {p: [Sample(printable(s), images[s], masks[s], p) for s in parts.get(p, [])] for p in PARTITIONS}
    if not samples["val"] and not cfg.test_only:
        samples["train"], samples["val"] = _carve(samples["train"], cfg.val_from_train_fraction,
                                                  cfg.split_seed, "val")
        notes.append(f"no validation list: {len(samples['val'])} training images held out for validation")
    return Discovery("folder", root, samples, notes, "test", description or f"image folder {printable(img_dir)}")


def _read_splits(split_dir: Path, stems: set[str], need: tuple[str, ...] = ("train", "test")) -> dict[str, list[str]]:
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: split folder not found (data.folder.splits)")
    parts: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for part in PARTITIONS:
        f = split_dir / f"{part}.txt"
        if not f.exists():
            continue
        # surrogateescape: a listed non-UTF-8 name matches the file name as the folder lists it.
        text = f.read_text(encoding="utf-8", errors="surrogateescape")
        listed = [ln.strip() for ln in text.splitlines() if ln.strip()]
        for stem in listed:
            if stem not in stems:
                raise DataError(f"{f}: lists '{stem}', which has no image/mask pair")
            if stem in seen:
                raise DataError(f"{f}: '{stem}' is also listed in {seen[stem]}.txt")
            seen[stem] = part
        parts[part] = listed
    for part in need:
        if part not in parts:
            raise DataError(f"{split_dir / (part + '.txt')}: split list not found")
    return parts


# --- synthetic -------------------------------------------------------------------------


def _discover_synthetic(cfg: DataConfig, problems: _Problems) -> Discovery:
    from .synthetic import write_synthetic_dataset

    s = cfg.synthetic
    root = Path(cfg.cache_dir) / f"synthetic-{config_hash(s)[:12]}"
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_synthetic_dataset(root, n_train=s.n_train, n_val=s.n_val, n_test=s.n_test,
                                height=s.height, width=s.width, seed=s.seed)
    except ValueError as exc:  # a cache folder holding something else
        raise DataError(str(exc)) from None
    from ..config import FolderConfig

    fc = FolderConfig(images="images", masks="masks", mask_ext=".png", image_exts=[".png"],
                      splits="splits")
    found = _discover_folder(root, cfg, fc, problems, f"synthetic dermoscopy-like images, seed {s.seed}")
    found.layout = "synthetic"
    found.notes = [
        f"synthetic layout: {s.n_train} train, {s.n_val} validation, {s.n_test} test images "
        f"of {s.width}x{s.height} generated with seed {s.seed} into {root}"
    ]
    return found
