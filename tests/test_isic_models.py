"""The ISIC 2017 models shipped in models/isic2017/: they load safely, serve other dermoscopy
folders without code changes, and keep the error profiles they were designed for.

The accuracy checks read the real ISIC 2017 validation images in ../shared/data/isic2017-256
and skip, with the reason, where that folder is absent (a user's fresh clone).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner

from conftest import SHARED_ISIC
from glassbox_audit.cli import cli

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "isic2017"
CONFIG = ROOT / "configs" / "isic2017.toml"
VARIANTS = ("precision-optimized", "balanced", "recall-optimized")

pytestmark = pytest.mark.skipif(not any(SHIPPED.glob("*/model.keras")),
                                reason="no shipped models in models/isic2017")


def test_each_shipped_model_is_small_carded_and_loads_in_safe_mode():
    from glassbox_audit.models import latest_by_name, load_model

    for name in VARIANTS:
        stored = latest_by_name(SHIPPED, name)
        assert stored is not None, name
        assert stored.path.stat().st_size <= 15 * 1024 * 1024
        card = stored.card
        for key in ("architecture", "loss", "hyperparameters", "history", "training_seconds", "hardware", "data"):
            assert card.get(key), f"{name}: card lacks {key}"
        assert card["data"]["train_fingerprint"]
        model = load_model(stored, card["architecture"]["input_size"]).model  # hash-checked, safe mode
        assert model.input_shape[1:] == (128, 128, 3)


def _ph2_like_folder(root: Path, n: int = 4) -> Path:
    """Dermoscopy-like images as PH2 ships them: non-square 760 x 570 BMP, masks named
    ``<stem>_lesion.bmp``, in two folders."""
    from glassbox_audit.data.synthetic import generate_sample

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        image, mask = generate_sample(100 + i, 570, 760)
        cv2.imwrite(str(root / "images" / f"IMD{i:03d}.bmp"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "masks" / f"IMD{i:03d}_lesion.bmp"), (mask > 0).astype("uint8") * 255)
    return root


def test_shipped_models_evaluate_a_bmp_folder_of_another_source_at_native_size(tmp_path):
    data = _ph2_like_folder(tmp_path / "ph2")
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(cli, [
        "-q", "evaluate", "--layout", "folder", "--data", str(data), "--models-dir", str(SHIPPED),
        "--set", "data.folder.mask_suffix=_lesion", "--set", "data.folder.mask_ext=.bmp",
        "--set", "data.folder.val_fraction=0.25", "--set", "data.folder.test_fraction=0.5",
        "--per-image", "-o", str(out)], obj={})
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["input_size"] == 128
    # Nothing is trained: every pair is evaluated (the split fractions are not applied), and listed.
    assert doc["dataset"]["evaluated"] == [f"IMD{i:03d}" for i in range(4)]
    assert set(doc["models"]) == set(VARIANTS)
    for entry in doc["models"].values():
        assert len(entry["per_image"]) == 4 and 0.0 <= entry["macro"]["dice"] <= 1.0
        assert "dice" in entry["intervals_95"]
        for row in entry["per_image"]:
            assert row["tp"] + row["fp"] + row["fn"] + row["tn"] == 570 * 760  # scored at native size


@pytest.fixture(scope="module")
def isic_val_metrics(tmp_path_factory):
    if not SHARED_ISIC.is_dir():
        pytest.skip(f"{SHARED_ISIC} not present")
    out = tmp_path_factory.mktemp("isic") / "metrics.json"
    result = CliRunner().invoke(cli, ["-q", "evaluate", "--config", str(CONFIG), "--data", str(SHARED_ISIC),
                                      "--models-dir", str(SHIPPED), "-o", str(out)], obj={})
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def test_error_profiles_on_isic_2017_validation_are_ordered_as_designed(isic_val_metrics):
    """Precision-optimized has the highest precision, recall-optimized the highest recall,
    balanced sits between them on both."""
    m = {name: isic_val_metrics["models"][name]["macro"] for name in VARIANTS}
    p, b, r = (m[n] for n in VARIANTS)
    assert p["precision"] > b["precision"] > r["precision"]
    assert r["recall"] > b["recall"] > p["recall"]
    assert isic_val_metrics["dataset"]["counts"]["test"] == 150
