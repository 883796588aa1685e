"""The SQLite store: schema, round trip, foreign keys, transactions, read-only access."""

import sqlite3
from pathlib import Path
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
    assert rows[1]["dice"] == 1.0 and rows[0]["thresholded_jaccard"] == 0.0
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


def test_an_undefined_metric_is_stored_as_null_and_counted_beside_its_macro_figure(tmp_path):
    store, eid = filled(tmp_path / "a.sqlite")  # image "1" has no lesion and no prediction
    rows = {r["image_id"]: r for r in store.image_metrics(eid)}
    assert rows["1"]["recall"] is None and rows["1"]["precision"] is None and rows["1"]["dice"] == 1.0
    macro = store.evaluations("run1")[0]["metrics"]
    assert macro["undefined"]["recall"] == 1 and macro["undefined"]["dice"] == 0
    assert macro["macro"]["recall"] == pytest.approx((6 / 10 + 5 / 5) / 2)  # image "1" left out
    # SQL over the stored rows agrees with the stored figure: avg() skips NULL as the image mean does.
    sql = store.rows("select avg(recall) as r from image_metrics where evaluation_id = ?", [eid])[0]["r"]
    assert sql == pytest.approx(macro["macro"]["recall"])


# --- a database written by the previous release (schema 1), as shipped in tests/data --------

RELEASE_DB = Path(__file__).parent / "data" / "release-0.1.0" / "audit.sqlite"


def test_a_release_database_of_schema_1_reads_under_todays_names(tmp_path):
    from glassbox_audit.store import readonly_uri

    with sqlite3.connect(readonly_uri(RELEASE_DB), uri=True) as raw:  # what is really on disk
        assert raw.execute("select value from meta where key = 'schema_version'").fetchone() == ("1",)
        columns = [c[1] for c in raw.execute("pragma table_info(image_metrics)")]
        assert "jaccard_thresholded" in columns and "thresholded_jaccard" not in columns
    with AuditStore(RELEASE_DB, readonly=True) as store:
        assert store.schema_version == 1 and store.metric_rules == "1"
        run = store.run()
        ev = store.evaluations(run["id"])[0]
        rows = store.image_metrics(ev["id"])
        assert rows and all("thresholded_jaccard" in r and "jaccard_thresholded" not in r for r in rows)
        assert all(r["thresholded_jaccard"] in (0.0, r["iou"]) for r in rows)
        assert ev["metrics"]["undefined"]["recall"] == 0  # schema 1 had no undefined values
        comparisons, _ = store.comparison(run["id"])
        assert {c["metric"] for c in comparisons} >= {"dice", "thresholded_jaccard"}
        assert all(c["regression"] in (0, 1) and c["significant"] in (0, 1) for c in comparisons)
        assert store.dataset(ev["dataset_fingerprint"])["ground_truth"] is None


def test_a_release_database_renders_its_dossier_context(tmp_path):
    from glassbox_audit.data.layouts import GROUND_TRUTH
    from glassbox_audit.report import build_context

    with AuditStore(RELEASE_DB, readonly=True) as store:
        context, written = build_context(store, tmp_path)
    assert context["data"]["ground_truth"] == GROUND_TRUTH["synthetic"]  # schema 1 stored none
    assert context["metric_notes"]["version"] == "1" and not context["metric_notes"]["undefined"]
    assert all(f.path.is_file() for f in written)
