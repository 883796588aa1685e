"""tools/card_selection.py: the selection record goes into every card of a store, nothing else
of the card changes, and an incomplete record is refused before any card is touched."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

from card_selection import annotate  # noqa: E402

SELECTION = {"choice": "128 px", "reason": "best hold-out", "commands": ["glassbox-audit train"],
             "settings_tried": [{"setting": "96 px", "measured": "Dice 0.80"}]}


def _store(root: Path) -> Path:
    for name in ("base-aaa", "balanced-bbb"):
        (root / name).mkdir(parents=True)
        (root / name / "card.json").write_text(json.dumps({"name": name, "sha256": "f00"}))
    (root / ".backup" / "base-ccc").mkdir(parents=True)  # a training checkpoint, not a shipped card
    (root / ".backup" / "base-ccc" / "card.json").write_text("{}")
    return root


def test_selection_is_written_into_every_card_and_the_rest_kept(tmp_path):
    root = _store(tmp_path / "models")
    written = annotate(SELECTION, root)
    assert [p.parent.name for p in written] == ["balanced-bbb", "base-aaa"]
    for path in written:
        card = json.loads(path.read_text())
        assert card["selection"] == SELECTION
        assert card["sha256"] == "f00" and card["name"] == path.parent.name
    assert json.loads((root / ".backup" / "base-ccc" / "card.json").read_text()) == {}


@pytest.mark.parametrize("broken", [
    {k: v for k, v in SELECTION.items() if k != "reason"},
    dict(SELECTION, settings_tried=[{"setting": "96 px"}]),
])
def test_an_incomplete_selection_is_refused_and_no_card_changes(tmp_path, broken):
    root = _store(tmp_path / "models")
    before = {p: p.read_text() for p in root.glob("*/card.json")}
    with pytest.raises(SystemExit):
        annotate(broken, root)
    assert {p: p.read_text() for p in root.glob("*/card.json")} == before
