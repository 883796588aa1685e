"""The SQLite store: schema, round trip, foreign keys, transactions, read-only access."""

import sqlite3
from dataclasses import dataclass, field

import numpy as np
import pytest

from glassbox_audit.data.dataset import DataFile, Dataset
from glassbox_audit.evaluate import ModelEvaluation
from glassbox_audit.store import SCHEMA_VERSION, AuditStore


@dataclass
class FakeModel:
    name: str
    sha256: str
    key: str = "k"
    path: str = "models/x/model.keras"
    card: dict = field(default_factory=lambda: {"architecture": {"parameters": 123}, "loss": {"kind": "dice"}})


def dataset() -> Dataset:
    files = [DataFile(f"images/{i}.png", role, "test", str(i), f"{i:064d}", 10, 4, 5)
             for i in range(3) for role in ("image", "mask")]
    return Dataset("folder", "/data", "three images", {"train": [], "val": [], "test": []}, files)


def evaluation(name="balanced", sha="a" * 64) -> ModelEvaluation:
    counts = np.array([[6, 2, 4, 8], [0, 0, 0, 20], [5, 5, 0, 10]])
    return ModelEvaluation(name, sha, ["0", "1", "2"], np.array([0, 0, 1]), np.array([[4, 5]] * 3), counts, 0.5, 0.65)


def filled(path) -> tuple[AuditStore, int]:
    store = AuditStore(path)
    store.start_run({"id": "run1", "audit_name": "a", "version": 1, "started_at": "now", "config_json": {}})
    fp = store.record_dataset(dataset())
    store.record_models([FakeModel("balanced", "a" * 64)])
    eid = store.record_evaluation("run1", evaluation(), fp, "test")
    return store, eid


def test_round_trip_of_an_evaluation(tmp_path):
    store, eid = filled(tmp_path / "a.sqlite")
    evals = store.evaluations("run1")
    assert len(evals) == 1
    assert evals[0]["metrics"]["micro"]["dice"] == pytest.approx(2 * 11 / (2 * 11 + 7 + 4))
    assert evals[0]["model"]["card"]["architecture"]["parameters"] == 123
    rows = store.image_metrics(eid)
    assert [r["image_id"] for r in rows] == ["0", "1", "2"]
    assert rows[1]["dice"] == 1.0 and rows[0]["jaccard_thresholded"] == 0.0
    batches = store.batch_metrics(eid)
    assert [b["n_images"] for b in batches] == [2, 1]
    assert batches[0]["tp"] == 6 and batches[0]["tn"] == 28
    assert len(store.data_files(store.run()["id"] and evals[0]["dataset_fingerprint"])) == 6
    assert store.rows("select value from meta where key = 'schema_version'")[0]["value"] == str(SCHEMA_VERSION)


def test_foreign_keys_are_enforced(tmp_path):
    store, _ = filled(tmp_path / "a.sqlite")
    with pytest.raises(sqlite3.IntegrityError):
        store.record_evaluation("no-such-run", evaluation("other"), "no-such-dataset", "test")


def test_a_failed_evaluation_write_leaves_no_partial_rows(tmp_path):
    store, _ = filled(tmp_path / "a.sqlite")
    before = {t: store.db[t].count for t in ("evaluations", "image_metrics", "batch_metrics")}
    bad = evaluation("balanced")  # same run and model name: the unique index refuses it
    with pytest.raises(sqlite3.IntegrityError):
        store.record_evaluation("run1", bad, store.evaluations("run1")[0]["dataset_fingerprint"], "test")
    assert {t: store.db[t].count for t in before} == before


def test_read_only_store_cannot_write(tmp_path):
    store, _ = filled(tmp_path / "a.sqlite")
    store.close()
    ro = AuditStore(tmp_path / "a.sqlite", readonly=True)
    assert ro.run()["id"] == "run1"
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        ro.db.execute("delete from image_metrics")
