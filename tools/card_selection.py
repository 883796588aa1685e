"""Write a model-selection record into the cards of a model store.

Training writes each card (architecture, loss, settings, history, time); why these settings
were shipped, and what the others measured, is known only after evaluating them, so it is
kept in a JSON file beside the configuration and copied into every card of the store under
``selection``. The weights and their sha256 are untouched; each card is rewritten atomically.

    python tools/card_selection.py configs/isic2017-selection.json models/isic2017
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REQUIRED = ("choice", "reason", "settings_tried", "commands")


def annotate(selection: dict, models_dir: Path) -> list[Path]:
    missing = [k for k in REQUIRED if k not in selection]
    if missing:
        raise SystemExit(f"selection lacks {', '.join(missing)}")
    for tried in selection["settings_tried"]:
        if not {"setting", "measured"} <= set(tried):
            raise SystemExit(f"each of settings_tried needs 'setting' and 'measured': {tried}")
    cards = sorted(p for p in models_dir.glob("*/card.json") if not p.parent.name.startswith("."))
    if not cards:
        raise SystemExit(f"{models_dir}: no model cards")
    for path in cards:
        card = json.loads(path.read_text())
        card["selection"] = selection
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(card, fh, indent=2, sort_keys=True, default=str)  # as save_model writes it
            fh.write("\n")
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    return cards


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("selection", type=Path)
    ap.add_argument("models_dir", type=Path)
    args = ap.parse_args(argv)
    for path in annotate(json.loads(args.selection.read_text()), args.models_dir):
        print(path)


if __name__ == "__main__":
    main(sys.argv[1:])
