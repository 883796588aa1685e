"""The three layouts find the right pairs and partitions; bad pairs are refused by name."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import SHARED_ISIC, disc_pair, write_png
from glassbox_audit.config import DataConfig, FolderConfig, SyntheticConfig
from glassbox_audit.data import iter_batches, load_arrays, load_dataset
from glassbox_audit.data.imageio import read_image, read_mask
from glassbox_audit.errors import DataError


def folder_cfg(root: Path, **folder) -> DataConfig:
    return DataConfig(layout="folder", root=str(root), folder=FolderConfig(**folder))


# --- ISIC ------------------------------------------------------------------------------


def test_isic_2018_keeps_official_partitions(make_isic):
    root = make_isic("2018", {"train": 8, "val": 3, "test": 4})
    ds = load_dataset(DataConfig(layout="isic", root=str(root)))
    assert ds.counts == {"train": 8, "val": 3, "test": 4}
    assert ds.test_source == "test"
    assert ds.samples["test"][0].mask.name.endswith("_segmentation.png")


def test_isic_2017_without_test_masks_uses_validation_and_says_so(make_isic):
    root = make_isic("2017", {"train": 10, "val": 3, "test": 2}, with_masks=("train", "val"))
    ds = load_dataset(DataConfig(layout="isic", root=str(root)))
    assert ds.test_source == "val"
    assert ds.counts["test"] == 3
    assert ds.counts["train"] + ds.counts["val"] == 10  # validation held out of training
    assert any("validation partition" in n and "test partition" in n for n in ds.notes)
    # superpixel maps and licence files are not images of the task
    assert all("superpixels" not in f.path for f in ds.files)


def test_isic_2016_has_no_validation_so_one_is_held_out(make_isic):
    root = make_isic("2016", {"train": 10, "test": 3})
    ds = load_dataset(DataConfig(layout="isic", root=str(root)))
    assert ds.counts == {"train": 9, "val": 1, "test": 3}
    assert ds.samples["train"][0].mask.name.endswith("_Segmentation.png")


def test_isic_image_without_mask_is_named(make_isic):
    root = make_isic("2018", {"train": 4, "val": 2})
    (root / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0000002_segmentation.png").unlink()
    with pytest.raises(DataError, match="ISIC_0000002.jpg: image has no mask"):
        load_dataset(DataConfig(layout="isic", root=str(root)))


def test_not_an_isic_folder_is_refused(tmp_path):
    with pytest.raises(DataError, match="not an ISIC Task 1 folder"):
        load_dataset(DataConfig(layout="isic", root=str(tmp_path)))


@pytest.mark.shared_data
@pytest.mark.skipif(not SHARED_ISIC.is_dir(), reason=f"real ISIC data not present at {SHARED_ISIC}")
def test_shared_isic2017_loads_as_is():
    ds = load_dataset(DataConfig(layout="isic", root=str(SHARED_ISIC)))
    assert ds.counts["test"] == 150 and ds.test_source == "val"
    assert ds.counts["train"] + ds.counts["val"] == 2000
    assert len(ds.files) == 2 * 2150
    assert len(ds.fingerprint()) == 64


# --- folder ----------------------------------------------------------------------------


def make_folder(root: Path, n: int, size=(57, 76), ext=".bmp", suffix="_lesion", gray=False) -> Path:
    for i in range(n):
        image, mask = disc_pair(i, *size)
        if gray:
            image = image[:, :, 0]
        write_png(root / "images" / f"IMD{i:03d}{ext}", image)
        write_png(root / "masks" / f"IMD{i:03d}{suffix}{ext}", mask)
    return root


def test_folder_pairs_bmp_with_lesion_suffix_and_splits_randomly(tmp_path):
    root = make_folder(tmp_path, 20)
    ds = load_dataset(folder_cfg(root, mask_suffix="_lesion", mask_ext=".bmp"))
    assert sum(ds.counts.values()) == 20
    assert ds.counts["test"] == 4
    assert {f.width for f in ds.files} == {76}


def test_folder_split_lists_decide_partitions(tmp_path):
    root = make_folder(tmp_path, 6, ext=".png", suffix="")
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "train.txt").write_text("IMD000\nIMD001\nIMD002\n")
    (splits / "val.txt").write_text("IMD003\n")
    (splits / "test.txt").write_text("IMD004\nIMD005\n")
    ds = load_dataset(folder_cfg(root, splits="splits"))
    assert [s.id for s in ds.samples["test"]] == ["IMD004", "IMD005"]


def test_a_folder_that_trains_nothing_is_all_test_pairs_and_says_so(tmp_path):
    root = make_folder(tmp_path, 7)
    ds = load_dataset(DataConfig(layout="folder", root=str(root), test_only=True,
                                 folder=FolderConfig(mask_suffix="_lesion", mask_ext=".bmp")))
    assert ds.counts == {"train": 0, "val": 0, "test": 7}
    assert any("every one of the 7 image/mask pairs is a test pair" in n for n in ds.notes)


def test_a_test_list_alone_is_enough_when_nothing_is_trained(tmp_path):
    root = make_folder(tmp_path, 6)
    (root / "splits").mkdir()
    (root / "splits" / "test.txt").write_text("IMD001\nIMD004\n")
    cfg = DataConfig(layout="folder", root=str(root), test_only=True,
                     folder=FolderConfig(mask_suffix="_lesion", mask_ext=".bmp", splits="splits"))
    ds = load_dataset(cfg)
    assert [s.id for s in ds.samples["test"]] == ["IMD001", "IMD004"] and not ds.samples["train"]
    with pytest.raises(DataError, match="train.txt: split list not found"):  # training needs its list
        load_dataset(DataConfig(layout="folder", root=str(root),
                                folder=FolderConfig(mask_suffix="_lesion", mask_ext=".bmp", splits="splits")))


def test_split_list_naming_an_unknown_stem_is_refused(tmp_path):
    root = make_folder(tmp_path, 4, ext=".png", suffix="")
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "train.txt").write_text("IMD000\nIMD999\n")
    (tmp_path / "splits" / "test.txt").write_text("IMD001\n")
    with pytest.raises(DataError, match="train.txt: lists 'IMD999'"):
        load_dataset(folder_cfg(root, splits="splits"))


def test_grayscale_images_work_as_three_channels(tmp_path):
    root = make_folder(tmp_path, 10, ext=".png", suffix="_mask", gray=True)
    ds = load_dataset(folder_cfg(root, mask_suffix="_mask"))
    x, y = load_arrays(ds, "train", 32)
    assert x.shape[1:] == (32, 32, 3) and y.shape[1:] == (32, 32, 1)


def test_mask_of_another_size_is_named(tmp_path):
    root = make_folder(tmp_path, 5, ext=".png", suffix="")
    write_png(root / "masks" / "IMD003.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(DataError, match="IMD003.png: mask is 10x10 but its image"):
        load_dataset(folder_cfg(root))


def test_non_binary_mask_is_refused(tmp_path):
    root = make_folder(tmp_path, 5, ext=".png", suffix="")
    write_png(root / "masks" / "IMD001.png", np.full((57, 76), 128, np.uint8))
    with pytest.raises(DataError, match="IMD001.png: mask is not binary"):
        load_dataset(folder_cfg(root))


def test_zero_one_mask_is_read_as_foreground(tmp_path):
    path = write_png(tmp_path / "m.png", np.array([[0, 1], [1, 0]], np.uint8))
    assert read_mask(path).tolist() == [[False, True], [True, False]]


@pytest.mark.parametrize("label", [1, 1000, 65535])
def test_sixteen_bit_label_masks_are_read_in_their_own_depth(tmp_path, label):
    # Scaled to 8 bits first, 0/1 and 0/1000 became all background, and an empty truth scores
    # Dice 1 against an empty prediction: a silently perfect figure.
    path = tmp_path / "label16.png"
    cv2.imwrite(str(path), np.array([[0, label], [label, 0]], np.uint16))
    assert read_mask(path).tolist() == [[False, True], [True, False]]


def test_sixteen_bit_grey_mask_is_thresholded_on_its_own_scale(tmp_path):
    path = tmp_path / "grey16.png"
    cv2.imwrite(str(path), np.array([[0, 200 * 257], [100 * 257, 65535]], np.uint16))
    assert read_mask(path, threshold=128, max_ambiguous=1.0).tolist() == [[False, True], [False, True]]


def test_a_dataset_whose_masks_are_all_empty_is_refused_by_folder(tmp_path):
    root = make_folder(tmp_path, 6, ext=".png", suffix="")
    for mask in (root / "masks").iterdir():
        write_png(mask, np.zeros((57, 76), np.uint8))
    with pytest.raises(DataError, match=r"every mask is empty .*data.mask_threshold"):
        load_dataset(folder_cfg(root))


def test_empty_masks_are_counted_per_partition(tmp_path):
    root = make_folder(tmp_path, 10, ext=".png", suffix="")
    for stem in ("IMD000", "IMD003"):
        write_png(root / "masks" / f"{stem}.png", np.zeros((57, 76), np.uint8))
    ds = load_dataset(folder_cfg(root))
    assert sum(ds.empty_masks.values()) == 2
    partition = {s.id: p for p, ss in ds.samples.items() for s in ss}
    assert ds.empty_masks[partition["IMD000"]] >= 1


def test_corrupt_and_empty_files_are_named(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match="bad.png: not a readable image"):
        read_image(tmp_path / "bad.png")
    with pytest.raises(DataError, match="empty.png: empty file"):
        read_image(tmp_path / "empty.png")


def test_sixteen_bit_image_is_scaled_to_eight(tmp_path):
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), np.full((4, 4), 65535, np.uint16))
    assert read_image(path).max() == 255


def test_fingerprint_changes_when_a_file_changes(tmp_path):
    root = make_folder(tmp_path, 6, ext=".png", suffix="")
    before = load_dataset(folder_cfg(root)).fingerprint()
    image, _ = disc_pair(99, 57, 76)
    write_png(root / "images" / "IMD002.png", image)
    assert load_dataset(folder_cfg(root)).fingerprint() != before


# --- synthetic and streaming -----------------------------------------------------------


def test_synthetic_layout_is_deterministic_and_partitioned(tmp_path):
    cfg = DataConfig(cache_dir=str(tmp_path), synthetic=SyntheticConfig(n_train=6, n_val=2, n_test=3,
                                                                         height=24, width=32))
    a, b = load_dataset(cfg), load_dataset(cfg)
    assert a.counts == {"train": 6, "val": 2, "test": 3}
    assert a.fingerprint() == b.fingerprint()


def test_batches_keep_masks_at_native_resolution(tmp_path):
    root = make_folder(tmp_path, 12, ext=".png", suffix="")
    ds = load_dataset(folder_cfg(root))
    batches = list(iter_batches(ds, "train", 32, 3, keep_images={1}))
    assert sum(len(b.ids) for b in batches) == ds.counts["train"]
    assert batches[0].x.shape[1:] == (32, 32, 3) and batches[0].x.dtype == np.float32
    assert all(m.shape == (57, 76) for b in batches for m in b.masks)
    assert batches[0].images is None and batches[1].images is not None


def test_a_bad_file_met_while_streaming_raises_in_the_caller(tmp_path):
    root = make_folder(tmp_path, 8, ext=".png", suffix="")
    ds = load_dataset(folder_cfg(root))
    ds.samples["train"][-1].image.write_bytes(b"broken")
    with pytest.raises(DataError, match="not a readable image"):
        list(iter_batches(ds, "train", 32, 2))


def test_skip_policy_leaves_bad_pairs_out_and_lists_them(tmp_path):
    root = make_folder(tmp_path, 12, ext=".png", suffix="")
    (root / "images" / "IMD002.png").write_bytes(b"")  # zero-byte image
    write_png(root / "masks" / "IMD005.png", np.zeros((10, 10), np.uint8))  # size differs
    (root / "masks" / "IMD007.png").unlink()  # image without mask
    write_png(root / "masks" / "ORPHAN.png", np.zeros((57, 76), np.uint8))  # mask without image
    cfg = folder_cfg(root)
    with pytest.raises(DataError):
        load_dataset(cfg)
    cfg.on_bad_input = "skip"
    ds = load_dataset(cfg)
    assert sum(ds.counts.values()) == 9
    reasons = {Path(p).name: r for p, r in ds.skipped}
    assert set(reasons) == {"IMD002.png", "IMD005.png", "IMD007.png", "ORPHAN.png"}
    assert "empty file" in reasons["IMD002.png"] and "has no mask" in reasons["IMD007.png"]
    assert all(f.sample_id not in {"IMD002", "IMD005", "IMD007"} for f in ds.files)


def test_duplicate_stems_are_refused_by_name(tmp_path):
    root = make_folder(tmp_path, 6, ext=".png", suffix="")
    image, _ = disc_pair(0, 57, 76)
    write_png(root / "images" / "IMD001.jpg", image)
    with pytest.raises(DataError, match="duplicate image stem 'IMD001'"):
        load_dataset(folder_cfg(root))


def test_streaming_only_some_batches_keeps_their_indices_and_reads_nothing_else(tmp_path):
    root = make_folder(tmp_path, 12, ext=".png", suffix="")
    ds = load_dataset(folder_cfg(root))
    every = list(iter_batches(ds, "train", 32, 2))
    for s in ds.samples["train"][:2]:  # batch 0 becomes unreadable: it must not be touched
        s.image.write_bytes(b"broken")
    picked = list(iter_batches(ds, "train", 32, 2, only={1, len(every) - 1}))
    assert [b.index for b in picked] == [1, len(every) - 1]
    assert [b.ids for b in picked] == [every[1].ids, every[-1].ids]


def test_ground_truth_statement_prefers_the_users_words_then_the_layouts_then_says_not_stated():
    from glassbox_audit.data.layouts import UNSTATED_GROUND_TRUTH, ground_truth_statement

    assert "dermatologists" in ground_truth_statement("isic")
    assert ground_truth_statement("synthetic").startswith("Exact by construction")
    assert ground_truth_statement("folder") == UNSTATED_GROUND_TRUTH
    assert ground_truth_statement("folder", "  Two radiologists, consensus.  ") == "Two radiologists, consensus."
    assert ground_truth_statement("isic", "Re-annotated in-house.") == "Re-annotated in-house."
