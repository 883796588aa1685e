"""Flags a reviewer has set but not yet submitted, kept beside the audits (never inside a
sealed version) so a closed browser or a restarted server loses nothing.

A flag is one of :data:`FLAG_LABELS`, optionally followed by the reviewer's own words
(``"model wrong: misses the lower lobe"``), the text ``glassbox-audit review --flag`` records.
Submitting a decision turns the drafts of that version into the new version's flags and
clears them.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import sqlite_utils

__all__ = ["DRAFTS", "FLAG_LABELS", "Drafts", "flag_text", "split_flags"]

# Where drafts live, relative to the audits folder (hidden: not an audit).
DRAFTS = Path(".workstation") / "drafts.sqlite"

FLAG_LABELS = (
    "ground truth questionable",
    "model wrong",
    "all variants wrong",
    "artefact",
    "poor image quality",
    "edge case",
    "other",
)
MAX_TEXT = 2000


def flag_text(label: str, text: str = "") -> str:
    """The stored flag: the label, then ': ' and the reviewer's words when there are any."""
    if label not in FLAG_LABELS:
        raise ValueError(f"unknown flag {label!r}; choose one of: {', '.join(FLAG_LABELS)}")
    text = " ".join(text.split())[:MAX_TEXT]
    return f"{label}: {text}" if text else label


def split_flags(flags: list[str]) -> tuple[set[str], str]:
    """The labels among ``flags`` and the reviewer's words (the form shows them back)."""
    labels, words = set(), ""
    for f in flags:
        label, _, text = f.partition(": ")
        if label in FLAG_LABELS:
            labels.add(label)
            words = words or text
    return labels, words


class Drafts:
    """Pending flags per (audit, version, image)."""

    def __init__(self, audits_dir: Path):
        self.path = Path(audits_dir) / DRAFTS
        self._lock = threading.Lock()

    def _db(self) -> sqlite_utils.Database:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite_utils.Database(self.path)
        if "flags" not in db.table_names():
            db["flags"].create({"audit": str, "version": str, "image_id": str, "flag": str, "created_at": str},
                               pk=("audit", "version", "image_id", "flag"), if_not_exists=True)
        return db

    def set_image(self, audit: str, version: str, image_id: str, flags: list[str]) -> None:
        """Replace the image's pending flags with ``flags`` (empty: clear them)."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self._lock:
            db = self._db()
            with db.atomic():
                db.execute("delete from flags where audit = ? and version = ? and image_id = ?",
                           [audit, version, image_id])
                db["flags"].insert_all({"audit": audit, "version": version, "image_id": image_id, "flag": f,
                                        "created_at": now} for f in dict.fromkeys(flags))
            db.close()

    def image(self, audit: str, version: str, image_id: str) -> list[str]:
        return [f for i, f in self.version(audit, version) if i == image_id]

    def version(self, audit: str, version: str) -> list[tuple[str, str]]:
        """Every pending (image id, flag) of a version, by image."""
        if not self.path.is_file():
            return []
        with self._lock:
            db = self._db()
            rows = [(r["image_id"], r["flag"]) for r in db.query(
                "select image_id, flag from flags where audit = ? and version = ? order by image_id, created_at, flag",
                [audit, version])]
            db.close()
        return rows

    def flagged(self, audit: str, version: str) -> frozenset[str]:
        return frozenset(i for i, _ in self.version(audit, version))

    def clear(self, audit: str, version: str) -> None:
        if not self.path.is_file():
            return
        with self._lock:
            db = self._db()
            with db.atomic():
                db.execute("delete from flags where audit = ? and version = ?", [audit, version])
            db.close()
