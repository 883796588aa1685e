"""Behaviour of the embedded synthetic dermoscopy dataset (glassbox_audit.data.synthetic)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from glassbox_audit.data import synthetic
from glassbox_audit.data.synthetic import generate_sample, write_synthetic_dataset

# Small sizes keep the suite fast; the generator scales its pixel-sized parameters.
H, W = 84, 112
SMALL = dict(height=40, width=56)


def _samples(n: int, start: int = 0, height: int = H, width: int = W):
    return [generate_sample(seed, height, width) for seed in range(start, start + n)]


@pytest.fixture(scope="module")
def fifty():
    return _samples(50, start=1000)


def _tmp_leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".tmp-" in p.name]


# --- generate_sample -------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_arrays():
    a_img, a_mask = generate_sample(42, H, W)
    b_img, b_mask = generate_sample(42, H, W)
    assert a_img.tobytes() == b_img.tobytes()
    assert a_mask.tobytes() == b_mask.tobytes()


def test_different_seeds_give_different_images_and_masks():
    images, masks = zip(*_samples(6))
    assert len({img.tobytes() for img in images}) == 6
    assert len({m.tobytes() for m in masks}) == 6


@pytest.mark.parametrize("height,width", [(168, 224), (224, 168), (40, 120), (16, 16)])
def test_shapes_and_dtypes_for_square_and_non_square_sizes(height, width):
    image, mask = generate_sample(3, height, width)
    assert image.shape == (height, width, 3) and image.dtype == np.uint8
    assert mask.shape == (height, width) and mask.dtype == np.uint8
    assert image.flags.c_contiguous and mask.flags.c_contiguous
    assert mask.any()


def test_masks_are_binary_non_empty_with_sane_lesion_fraction(fifty):
    fractions = []
    for _, mask in fifty:
        assert set(np.unique(mask).tolist()) <= {0, 255}
        assert mask.any()
        fractions.append(float((mask > 0).mean()))
    fractions = np.array(fractions)
    assert fractions.min() > 0.01
    assert fractions.max() < 0.6
    assert 0.05 < np.median(fractions) < 0.3
    # Both small and large lesions occur, not one size for all.
    assert fractions.min() < 0.08 and fractions.max() > 0.2


def test_mask_is_one_or_two_compact_regions_despite_hair_and_rulers(fifty):
    for _, mask in fifty:
        n_labels, _ = cv2.connectedComponents(mask, connectivity=8)
        assert n_labels - 1 in (1, 2)
        # Hair strands in the mask would show as long thin spurs: area far below hull area.
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        largest = max(contours, key=cv2.contourArea)
        hull_area = cv2.contourArea(cv2.convexHull(largest))
        assert cv2.contourArea(largest) > 0.6 * hull_area


def test_artefacts_change_the_image_but_never_the_mask(monkeypatch):
    with_artefacts = _samples(12)
    for name in ("_hairs", "_ruler", "_reflections"):
        monkeypatch.setattr(synthetic, name, lambda *args, **kwargs: None)
    without = _samples(12)
    for (img_a, mask_a), (img_b, mask_b) in zip(with_artefacts, without):
        assert np.array_equal(mask_a, mask_b)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(with_artefacts, without))


def test_lesion_is_darker_than_background_on_average(fifty):
    gaps = []
    for image, mask in fifty:
        grey = image.astype(np.float64).mean(axis=2)
        gaps.append(grey[mask == 0].mean() - grey[mask > 0].mean())
    gaps = np.array(gaps)
    assert gaps.mean() > 20
    assert (gaps > 0).mean() > 0.9


def test_images_look_like_skin_red_over_blue(fifty):
    means = np.array([img.reshape(-1, 3).mean(axis=0) for img, _ in fifty])
    assert (means[:, 0] > means[:, 2]).all()


@pytest.mark.parametrize("height,width", [(8, 64), (64, 0), (64.0, 64), (True, 64)])
def test_invalid_sizes_raise_value_error(height, width):
    with pytest.raises(ValueError):
        generate_sample(0, height, width)


# --- write_synthetic_dataset -----------------------------------------------------------------


def _write(root: Path, **overrides) -> Path:
    args = dict(n_train=3, n_val=2, n_test=1, seed=7, **SMALL)
    args.update(overrides)
    return write_synthetic_dataset(root, **args)


def test_writes_images_masks_splits_and_metadata(tmp_path):
    root = tmp_path / "syn"
    assert _write(root) == root
    stems = [f"SYN_{i:07d}" for i in range(6)]
    assert sorted(p.name for p in (root / "images").iterdir()) == [f"{s}.png" for s in stems]
    assert sorted(p.name for p in (root / "masks").iterdir()) == [f"{s}.png" for s in stems]
    splits = {name: (root / "splits" / f"{name}.txt").read_text().splitlines()
              for name in ("train", "val", "test")}
    assert splits == {"train": stems[:3], "val": stems[3:5], "test": stems[5:]}
    meta = json.loads((root / "dataset.json").read_text())
    assert meta == {"generator": "glassbox_audit.synthetic", "generator_version": 1, "seed": 7,
                    "height": 40, "width": 56, "n_train": 3, "n_val": 2, "n_test": 1}


def test_written_pngs_are_lossless_rgb_and_binary_masks(tmp_path):
    root = _write(tmp_path / "syn")
    expected_img, expected_mask = generate_sample(synthetic._sample_seed(7, 4), 40, 56)
    bgr = cv2.imread(str(root / "images" / "SYN_0000004.png"), cv2.IMREAD_UNCHANGED)
    mask = cv2.imread(str(root / "masks" / "SYN_0000004.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), expected_img)
    assert mask.ndim == 2 and np.array_equal(mask, expected_mask)


def test_image_i_is_the_same_whatever_the_split_sizes(tmp_path):
    a = _write(tmp_path / "a", n_train=3, n_val=2, n_test=1)
    b = _write(tmp_path / "b", n_train=1, n_val=1, n_test=5)
    for i in range(6):
        name = f"SYN_{i:07d}.png"
        assert (a / "images" / name).read_bytes() == (b / "images" / name).read_bytes()
        assert (a / "masks" / name).read_bytes() == (b / "masks" / name).read_bytes()


def test_recalling_with_same_args_reuses_without_rewriting(tmp_path, caplog):
    root = _write(tmp_path / "syn")
    watched = [root / "dataset.json", root / "images" / "SYN_0000000.png",
               root / "splits" / "train.txt"]
    before = [p.stat().st_mtime_ns for p in watched]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=synthetic.__name__):
        assert _write(root) == root
    assert [p.stat().st_mtime_ns for p in watched] == before
    assert len([r for r in caplog.records if r.levelno == logging.INFO]) == 1


def test_writing_logs_exactly_one_info_line(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger=synthetic.__name__):
        _write(tmp_path / "syn")
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 1 and "syn" in infos[0].getMessage()


@pytest.mark.parametrize("change", [dict(seed=8), dict(n_train=4), dict(height=48)])
def test_different_args_on_same_root_raise_value_error_naming_path(tmp_path, change):
    root = _write(tmp_path / "syn")
    with pytest.raises(ValueError, match=str(root)):
        _write(root, **change)


def test_foreign_non_empty_folder_raises_value_error(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("not a dataset")
    with pytest.raises(ValueError, match=str(root)):
        _write(root)
    assert (root / "notes.txt").exists()


def test_existing_empty_folder_is_filled(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    _write(root)
    assert (root / "dataset.json").exists()


def test_no_temporary_folders_left_behind(tmp_path):
    _write(tmp_path / "syn")
    _write(tmp_path / "syn")
    with pytest.raises(ValueError):
        _write(tmp_path / "syn", seed=99)
    assert _tmp_leftovers(tmp_path) == []


def test_failed_image_write_raises_os_error_naming_file_and_cleans_up(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic.cv2, "imwrite", lambda *args, **kwargs: False)
    with pytest.raises(OSError, match="SYN_0000000.png"):
        _write(tmp_path / "syn")
    assert not (tmp_path / "syn").exists()
    assert _tmp_leftovers(tmp_path) == []


def test_dataset_published_concurrently_by_another_process_is_reused(tmp_path, monkeypatch):
    other = _write(tmp_path / "other")
    root = tmp_path / "syn"
    real_move = synthetic._move_into_place

    def racing_move(tmp: Path, target: Path) -> None:
        # The other writer wins the race just before our rename.
        import shutil

        shutil.copytree(other, target)
        real_move(tmp, target)

    monkeypatch.setattr(synthetic, "_move_into_place", racing_move)
    assert _write(root) == root
    assert json.loads((root / "dataset.json").read_text())["seed"] == 7
    assert _tmp_leftovers(tmp_path) == []


def test_concurrent_dataset_with_other_args_raises_value_error(tmp_path, monkeypatch):
    other = _write(tmp_path / "other", seed=1)
    real_move = synthetic._move_into_place

    def racing_move(tmp: Path, target: Path) -> None:
        import shutil

        shutil.copytree(other, target)
        real_move(tmp, target)

    monkeypatch.setattr(synthetic, "_move_into_place", racing_move)
    with pytest.raises(ValueError, match="syn"):
        _write(tmp_path / "syn")
    assert _tmp_leftovers(tmp_path) == []


@pytest.mark.parametrize("bad", [dict(n_train=-1), dict(n_train=0, n_val=0, n_test=0),
                                 dict(seed=-3), dict(n_val=1.5)])
def test_invalid_counts_or_seed_raise_value_error(tmp_path, bad):
    with pytest.raises(ValueError):
        _write(tmp_path / "syn", **bad)
    assert not (tmp_path / "syn").exists()
