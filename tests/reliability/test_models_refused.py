"""A stored model that was changed, corrupted, holds NaN, has another input size or carries
a Lambda layer is refused by name before any version is reserved."""

import pytest

from .battery import MODEL_CASES, bad_model


@pytest.mark.parametrize("case", MODEL_CASES)
def test_a_damaged_or_unsafe_stored_model_is_refused_by_name(sandbox, case):
    o = bad_model(sandbox, case)
    assert o.held, o.problems
    assert "model.keras" in o.message
