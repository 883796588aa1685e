"""A stored model that was changed, corrupted, holds NaN, has another input size or carries
a Lambda layer is refused by name before any version is reserved."""

import pytest

from .battery import MODEL_CASES, bad_model


@pytest.mark.parametrize("case", MODEL_CASES)
def test_a_damaged_or_unsafe_stored_model_is_refused_by_name(sandbox, case):
    o = bad_model(sandbox, case)
    assert o.held, o.problems
    assert "model.keras" in o.message


def test_a_model_stored_again_by_a_concurrent_run_loads_from_either_reference(tmp_path):
    # Two runs that train the same key at once both store it; the first run's reference must
    # still load (the copy on disk, vouched for by its own card), and no folder is left over.
    from glassbox_audit.models.registry import load_model, save_model
    from glassbox_audit.models.unet import build_attention_unet

    key = "k" * 64
    first = save_model(tmp_path, "balanced", key, build_attention_unet(32, 2, 4), {"run": "first"})
    second = save_model(tmp_path, "balanced", key, build_attention_unet(32, 2, 4), {"run": "second"})
    assert first.sha256 != second.sha256
    loaded = load_model(first, 32)
    assert loaded.card["run"] == "second" and loaded.sha256 == second.sha256
    assert [p.name for p in tmp_path.iterdir()] == [f"balanced-{key[:12]}"]
