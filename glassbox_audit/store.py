"""The metrics database: every figure of a run with its provenance, in SQLite.

One database per audit version (``audit.sqlite`` in the version folder), written through
sqlite-utils inside transactions, with foreign keys on. It knows no TensorFlow and renders
nothing: the pipeline writes it, the dossier and the query tools read it.

Tables (``schema_version`` in ``meta``):

``runs``, ``datasets``, ``data_files``, ``skipped_files``, ``models``, ``evaluations``, ``evaluation_metrics``
(tall: one row per metric and averaging), ``metric_intervals`` (95% bootstrap), ``image_metrics``, ``batch_metrics``,
``operating_points`` (metrics per threshold), ``selected_batches``, ``comparisons`` and ``comparison_changes`` (against the previous
version), ``xai_checks`` (faithfulness and sanity checks of the explanations, tall),
``xai_notes`` (methods skipped for a model, and why), ``reviews`` and ``image_flags`` (human review), ``artifacts``.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Iterable

import sqlite_utils

from .errors import StoreError
from .metrics import IMAGE_COLUMNS, IMAGE_METRICS, METRIC_RULES_VERSION

__all__ = ["DATABASE", "SCHEMA_VERSION", "AuditStore", "readonly_uri"]

# The database's file name inside a version folder.
DATABASE = "audit.sqlite"
# 2: image_metrics.thresholded_jaccard (was jaccard_thresholded), evaluation_metrics.n_undefined,
# datasets.ground_truth and empty_masks_json, comparisons.significant and regression, meta.metric_rules. Version 1
# databases are read through _UPGRADES (a sealed version is never rewritten).
SCHEMA_VERSION = 2
# Seconds a connection waits for another process's lock before giving up with an error.
BUSY_TIMEOUT = 30.0

_METRIC_COLS = {name: float for name in IMAGE_METRICS}
_COUNT_COLS = {"tp": int, "fp": int, "fn": int, "tn": int}
# Questions asked about a run (glassbox_audit.llm): one row each, with everything needed to audit
# the answer. The same table lives in audits/<name>/questions.sqlite for questions asked of a
# sealed version, whose own database never changes.
LLM_QUERY_COLS = {
    "id": int, "asked_at": str, "audit": str, "version": int, "run_id": str, "source": str, "question": str,
    "prompt_json": str, "raw_output": str, "llm_intent_json": str, "parser_intent_json": str, "intent_json": str,
    "sql_json": str, "result_json": str, "answer": str, "status": str, "model": str, "model_sha256": str,
    "llm_seconds": float, "seconds": float, "error": str,
}


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def readonly_uri(path: str | Path) -> str:
    """The SQLite URI that opens ``path`` read-only.

    ``as_uri()`` percent-encodes spaces, '?', '#' and '%' in the path, which a raw "file:"
    URI would misread as its query or fragment.
    """
    return Path(path).resolve().as_uri() + "?mode=ro"


def _upgrade_image_row_v1(row: dict[str, Any]) -> dict[str, Any]:
    if "jaccard_thresholded" in row:
        row["thresholded_jaccard"] = row.pop("jaccard_thresholded")
    return row


def _upgrade_comparison_row_v1(row: dict[str, Any]) -> dict[str, Any]:
    if row["metric"] == "jaccard_thresholded":
        row["metric"] = "thresholded_jaccard"
    return row


# Row upgrades per table for databases of an older schema: version -> table -> function.
_UPGRADES = {1: {"image_metrics": _upgrade_image_row_v1, "comparisons": _upgrade_comparison_row_v1}}


class AuditStore:
    """A run database. ``AuditStore(path)`` opens or creates it; ``readonly=True`` opens
    it with ``mode=ro`` so nothing can be written."""

    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = Path(path)
        try:
            if readonly:
                if not self.path.exists():
                    raise StoreError(f"{self.path}: database not found")
                conn = sqlite3.connect(readonly_uri(self.path), uri=True, timeout=BUSY_TIMEOUT)
            else:
                conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT)
            self.db = sqlite_utils.Database(conn)
            self.db.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open database ({exc})") from None
        try:
            if not readonly:
                self._create_schema()
            else:
                self._check_version()
        except sqlite3.Error as exc:
            self.db.close()
            raise StoreError(f"{self.path}: {exc}") from None

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "AuditStore":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close()
        # "database is locked" (another process held it longer than BUSY_TIMEOUT), "database
        # or disk is full", "disk I/O error": one line naming the database, not a traceback.
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"{self.path}: {exc}") from None

    # --- schema --------------------------------------------------------------------------

    def _check_version(self) -> None:
        if "meta" not in self.db.table_names():
            raise StoreError(f"{self.path}: not a GlassBox Audit database (no meta table)")
        version = int(self.db["meta"].get("schema_version")["value"])
        if version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: schema version {version} is newer than this tool ({SCHEMA_VERSION})")
        self.schema_version = version

    def _upgraded(self, table: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rows of ``table`` as the current schema names them."""
        for version in range(self.schema_version, SCHEMA_VERSION):
            fix = _UPGRADES.get(version, {}).get(table)
            if fix is not None:
                rows = [fix(r) for r in rows]
        return rows

    def meta(self, key: str, default: str | None = None) -> str | None:
        rows = self.rows("select value from meta where key = ?", [key])
        return rows[0]["value"] if rows else default

    @property
    def metric_rules(self) -> str:
        """The version of the metric definitions the figures were computed under."""
        return self.meta("metric_rules", "1")

    def _create_schema(self) -> None:
        db = self.db
        if "meta" in db.table_names():
            self._check_version()
            return
        self.schema_version = SCHEMA_VERSION
        with db.atomic():
            db["meta"].create({"key": str, "value": str}, pk="key")
            db["meta"].insert_all([{"key": "schema_version", "value": str(SCHEMA_VERSION)},
                                   {"key": "metric_rules", "value": METRIC_RULES_VERSION}])
            db["runs"].create({
                "id": str, "audit_name": str, "version": int, "status": str, "started_at": str,
                "finished_at": str, "config_json": str, "config_sha256": str, "code_version": str,
                "code_sha256": str, "packages_json": str, "machine_json": str, "command": str,
                "notes_json": str,
            }, pk="id")
            db["datasets"].create({
                "fingerprint": str, "layout": str, "root": str, "description": str,
                "test_source": str, "counts_json": str, "notes_json": str, "train_fingerprint": str,
                "ground_truth": str, "empty_masks_json": str,
            }, pk="fingerprint")
            db["data_files"].create({
                "id": int, "dataset_fingerprint": str, "partition": str, "role": str, "sample_id": str,
                "path": str, "sha256": str, "bytes": int, "height": int, "width": int,
            }, pk="id", foreign_keys=[("dataset_fingerprint", "datasets", "fingerprint")])
            db["data_files"].create_index(["dataset_fingerprint", "partition", "sample_id"])
            db["skipped_files"].create({"dataset_fingerprint": str, "path": str, "reason": str},
                                       pk=("dataset_fingerprint", "path"),
                                       foreign_keys=[("dataset_fingerprint", "datasets", "fingerprint")])
            db["models"].create({
                "sha256": str, "name": str, "key": str, "path": str, "parameters": int,
                "loss_json": str, "card_json": str,
            }, pk="sha256")
            db["evaluations"].create({
                "id": int, "run_id": str, "model_sha256": str, "model_name": str,
                "dataset_fingerprint": str, "partition": str, "threshold": float,
                "jaccard_threshold": float, "n_images": int, "seconds": float,
            }, pk="id", foreign_keys=[("run_id", "runs", "id"), ("model_sha256", "models", "sha256"),
                                      ("dataset_fingerprint", "datasets", "fingerprint")])
            db["evaluations"].create_index(["run_id", "model_name"], unique=True)
            db["evaluation_metrics"].create({
                # n_undefined: images a macro figure leaves out (metric undefined there)
                "evaluation_id": int, "averaging": str, "metric": str, "value": float, "n_undefined": int,
            }, pk=("evaluation_id", "averaging", "metric"),
                foreign_keys=[("evaluation_id", "evaluations", "id")])
            db["metric_intervals"].create({
                "evaluation_id": int, "metric": str, "level": float, "low": float, "high": float,
                "method": str,
            }, pk=("evaluation_id", "metric"), foreign_keys=[("evaluation_id", "evaluations", "id")])
            db["image_metrics"].create({
                "evaluation_id": int, "image_id": str, "batch_index": int, "height": int, "width": int,
                **_COUNT_COLS, **{name: float for name in IMAGE_COLUMNS},
            }, pk=("evaluation_id", "image_id"), foreign_keys=[("evaluation_id", "evaluations", "id")])
            db["image_metrics"].create_index(["evaluation_id", "batch_index"])
            db["batch_metrics"].create({
                "evaluation_id": int, "batch_index": int, "n_images": int, **_COUNT_COLS,
                **_METRIC_COLS, "mean_dice": float, "mean_iou": float,
            }, pk=("evaluation_id", "batch_index"), foreign_keys=[("evaluation_id", "evaluations", "id")])
            db["operating_points"].create({
                "evaluation_id": int, "threshold": float, "micro_precision": float, "micro_recall": float,
                "micro_dice": float, "micro_iou": float, "macro_dice": float, "macro_iou": float,
                "thresholded_jaccard": float,
            }, pk=("evaluation_id", "threshold"), foreign_keys=[("evaluation_id", "evaluations", "id")])
            db["selected_batches"].create({"run_id": str, "batch_index": int, "reason": str},
                                          pk=("run_id", "batch_index"),
                                          foreign_keys=[("run_id", "runs", "id")])
            db["comparisons"].create({
                "run_id": str, "against_version": str, "model": str, "metric": str, "a": float, "b": float,
                "delta": float, "ci_low": float, "ci_high": float, "p_value": float, "n_images": int,
                "significant": int, "regression": int,
            }, pk=("run_id", "model", "metric"), foreign_keys=[("run_id", "runs", "id")])
            db["comparison_changes"].create({
                "run_id": str, "against_version": str, "what": str, "a": str, "b": str,
            }, pk=("run_id", "what"), foreign_keys=[("run_id", "runs", "id")])
            db["xai_checks"].create({
                "run_id": str, "batch_index": int, "check_name": str, "model": str, "method": str,
                "detail": str, "metric": str, "value": float,
            }, pk=("run_id", "batch_index", "check_name", "model", "method", "detail", "metric"),
                foreign_keys=[("run_id", "runs", "id")])
            db["xai_readings"].create({"check_name": str, "reading": str}, pk="check_name")
            db["xai_notes"].create({"run_id": str, "batch_index": int, "note": str}, pk=("run_id", "batch_index", "note"),
                                   foreign_keys=[("run_id", "runs", "id")])
            db["reviews"].create({
                "id": int, "version": int, "reviewed_version": str, "reviewed_manifest_sha256": str,
                "reviewer": str, "decision": str, "note": str, "created_at": str,
            }, pk="id")
            db["image_flags"].create({"review_id": int, "image_id": str, "flag": str},
                                     pk=("review_id", "image_id", "flag"),
                                     foreign_keys=[("review_id", "reviews", "id")])
            db["artifacts"].create({
                "run_id": str, "path": str, "kind": str, "description": str, "sha256": str, "bytes": int,
            }, pk=("run_id", "path"), foreign_keys=[("run_id", "runs", "id")])
            db["llm_queries"].create(LLM_QUERY_COLS, pk="id")

    # --- writes --------------------------------------------------------------------------

    def start_run(self, run: dict[str, Any]) -> None:
        with self.db.atomic():
            self.db["runs"].insert({**run, "status": "running"})

    def finish_run(self, run_id: str, status: str, finished_at: str) -> None:
        with self.db.atomic():
            self.db["runs"].update(run_id, {"status": status, "finished_at": finished_at})

    def record_dataset(self, ds: Any) -> str:
        """Store a :class:`~glassbox_audit.data.Dataset` and its files; returns the fingerprint."""
        fp = ds.fingerprint()
        with self.db.atomic():
            if self.db["datasets"].count_where("fingerprint = ?", [fp]):
                return fp
            self.db["datasets"].insert({
                "fingerprint": fp, "layout": ds.layout, "root": str(ds.root), "description": ds.description,
                "test_source": ds.test_source, "counts_json": _json(ds.counts), "notes_json": _json(ds.notes),
                "train_fingerprint": ds.fingerprint(("train", "val")),
                "ground_truth": ds.ground_truth, "empty_masks_json": _json(ds.empty_masks),
            })
            self.db["data_files"].insert_all(
                ({"dataset_fingerprint": fp, **f.__dict__} for f in ds.files), batch_size=1000)
            self.db["skipped_files"].insert_all(
                {"dataset_fingerprint": fp, "path": path, "reason": reason} for path, reason in ds.skipped)
        return fp

    def record_models(self, models: Iterable[Any]) -> None:
        with self.db.atomic():
            for m in models:
                self.db["models"].upsert({
                    "sha256": m.sha256, "name": m.name, "key": m.key, "path": str(m.path),
                    "parameters": m.card.get("architecture", {}).get("parameters"),
                    "loss_json": _json(m.card.get("loss")), "card_json": _json(m.card),
                }, pk="sha256")

    def record_evaluation(self, run_id: str, ev: Any, dataset_fp: str, partition: str) -> int:
        """Store one :class:`~glassbox_audit.evaluate.ModelEvaluation` in one transaction."""
        per_image = ev.per_image
        with self.db.atomic():
            eid = self.db["evaluations"].insert({
                "run_id": run_id, "model_sha256": ev.sha256, "model_name": ev.name,
                "dataset_fingerprint": dataset_fp, "partition": partition, "threshold": ev.threshold,
                "jaccard_threshold": ev.jaccard_threshold, "n_images": len(ev.ids),
                "seconds": round(ev.seconds, 3),
            }).last_pk
            undefined = ev.summary.get("undefined", {})
            self.db["evaluation_metrics"].insert_all(
                {"evaluation_id": eid, "averaging": avg, "metric": k, "value": v,
                 "n_undefined": undefined.get(k, 0) if avg == "macro" else None}
                for avg, values in ev.summary.items() if avg != "undefined" for k, v in values.items()
            )
            self.db["metric_intervals"].insert_all(
                {"evaluation_id": eid, "metric": k, "level": 0.95, "low": lo, "high": hi,
                 "method": "percentile bootstrap over images, 1000 resamples (macro)"}
                for k, (lo, hi) in ev.intervals.items())
            self.db["image_metrics"].insert_all((
                {"evaluation_id": eid, "image_id": image_id, "batch_index": int(ev.batch_index[i]),
                 "height": int(ev.sizes[i, 0]), "width": int(ev.sizes[i, 1]),
                 **{k: int(ev.counts[i, j]) for j, k in enumerate(_COUNT_COLS)},
                 **{k: float(per_image[k][i]) for k in IMAGE_COLUMNS}}
                for i, image_id in enumerate(ev.ids)), batch_size=1000)
            self.db["batch_metrics"].insert_all({"evaluation_id": eid, **row} for row in ev.batches())
            self.db["operating_points"].insert_all({"evaluation_id": eid, **row} for row in ev.operating_points())
        return int(eid)

    def record_selected(self, run_id: str, batches: list[tuple[int, str]]) -> None:
        """The batches drawn in the dossier, each with the reason it was chosen."""
        with self.db.atomic():
            self.db["selected_batches"].insert_all(
                {"run_id": run_id, "batch_index": b, "reason": reason} for b, reason in batches)

    def record_comparison(self, run_id: str, diff: Any, regressions: Iterable[Any] = ()) -> None:
        """Store a :class:`~glassbox_audit.compare.VersionDiff` against the previous version,
        marking the deltas the run judged regressions."""
        fell = {(r.model, r.metric) for r in regressions}
        with self.db.atomic():
            self.db["comparisons"].insert_all(
                {"run_id": run_id, "against_version": diff.a, "model": m.model, "metric": m.metric, "a": m.a,
                 "b": m.b, "delta": m.delta, "ci_low": m.ci_low, "ci_high": m.ci_high, "p_value": m.p_value,
                 "n_images": m.n_images, "significant": int(m.significant),
                 "regression": int((m.model, m.metric) in fell)} for m in diff.metrics)
            self.db["comparison_changes"].insert_all(
                {"run_id": run_id, "against_version": diff.a, "what": c.what, "a": c.a, "b": c.b}
                for c in diff.changes)

    def comparison(self, run_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The run's comparison with the previous version: metric deltas, changed hashes."""
        rows = self.rows("select * from comparisons where run_id = ? order by rowid", [run_id])
        if rows and "regression" not in rows[0]:
            # Version 1 did not store the run's verdicts; they were the run's own rules on its stored
            # settings and intervals, applied here as the dossier of the day applied them.
            ev = self.run(run_id)["config"]["evaluate"]
            for r in rows:
                r["significant"] = int(r["ci_low"] > 0 or r["ci_high"] < 0)
                r["regression"] = int(r["metric"] in ev["regression_metrics"] and r["delta"] < -ev["regression_tolerance"])
        return self._upgraded("comparisons", rows), self.rows("select * from comparison_changes where run_id = ? order by rowid", [run_id])

    def record_xai_readings(self, readings: dict[str, str]) -> None:
        """One line per check on how to read its table, stored so the dossier needs no XAI code."""
        with self.db.atomic():
            self.db["xai_readings"].upsert_all(
                ({"check_name": k, "reading": v} for k, v in readings.items()), pk="check_name")

    def record_xai(self, run_id: str, batch_index: int, rows: Iterable[dict[str, Any]],
                   notes: Iterable[str] = ()) -> None:
        """Store XAI check summaries (one dict per check, model, method) in tall form:
        every numeric field becomes a (metric, value) row; and the batch's notes (methods
        skipped for a model, and why)."""
        keys = ("check", "model", "method")
        out = []
        for r in rows:
            detail = str(r.get("down_to", r.get("depth", "")))
            for k, v in r.items():
                if k in keys or k in ("down_to", "depth") or not isinstance(v, (int, float)):
                    continue
                out.append({"run_id": run_id, "batch_index": batch_index, "check_name": r["check"],
                            "model": r["model"], "method": r["method"], "detail": detail, "metric": k,
                            "value": float(v)})
        with self.db.atomic():
            self.db["xai_checks"].upsert_all(out, pk=("run_id", "batch_index", "check_name", "model", "method",
                                                      "detail", "metric"))
            self.db["xai_notes"].upsert_all(({"run_id": run_id, "batch_index": batch_index, "note": n}
                                             for n in dict.fromkeys(notes)), pk=("run_id", "batch_index", "note"))

    def xai_notes(self, run_id: str, batch_index: int) -> list[str]:
        """Notes on a batch's explanations; none in databases from before they were stored."""
        if "xai_notes" not in self.db.table_names():
            return []
        return [r["note"] for r in self.rows("select note from xai_notes where run_id = ? and batch_index = ? "
                                             "order by rowid", [run_id, batch_index])]

    def record_review(self, review: dict[str, Any], flags: list[tuple[str, str]]) -> int:
        with self.db.atomic():
            rid = self.db["reviews"].insert(review).last_pk
            self.db["image_flags"].insert_all(
                {"review_id": rid, "image_id": image_id, "flag": flag} for image_id, flag in flags)
        return int(rid)

    def reviews(self) -> list[dict[str, Any]]:
        out = []
        for r in self.rows("select * from reviews order by id"):
            flags = self.rows("select image_id, flag from image_flags where review_id = ? order by image_id", [r["id"]])
            out.append({**r, "flags": flags})
        return out

    def record_artifacts(self, run_id: str, artifacts: Iterable[dict[str, Any]]) -> None:
        with self.db.atomic():
            self.db["artifacts"].upsert_all(({"run_id": run_id, **a} for a in artifacts),
                                            pk=("run_id", "path"))

    # --- reads ---------------------------------------------------------------------------

    def rows(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.query(sql, list(params))]

    def run(self, run_id: str | None = None) -> dict[str, Any]:
        """The run (the only or latest one when ``run_id`` is None), JSON fields decoded."""
        if run_id is None:
            rows = self.rows("select * from runs order by started_at desc limit 1")
        else:
            rows = self.rows("select * from runs where id = ?", [run_id])
        if not rows:
            raise StoreError(f"{self.path}: no run {run_id or ''} recorded")
        return _decode(rows[0])

    def dataset(self, fingerprint: str) -> dict[str, Any]:
        """The dataset record; ``ground_truth`` is None and ``empty_masks`` absent in version 1."""
        row = _decode(self.rows("select * from datasets where fingerprint = ?", [fingerprint])[0])
        row.setdefault("ground_truth", None)
        return row

    def data_files(self, fingerprint: str, limit: int | None = None) -> list[dict[str, Any]]:
        sql = "select * from data_files where dataset_fingerprint = ? order by partition, sample_id, role"
        if limit is not None:
            sql += f" limit {int(limit)}"
        return self.rows(sql, [fingerprint])

    def evaluations(self, run_id: str) -> list[dict[str, Any]]:
        """Evaluations of a run in recording order, each with its model card and metrics."""
        out = []
        for e in self.rows("select * from evaluations where run_id = ? order by id", [run_id]):
            model = _decode(self.rows("select * from models where sha256 = ?", [e["model_sha256"]])[0])
            metrics: dict[str, dict[str, float]] = {"undefined": {}}
            for r in self.rows("select * from evaluation_metrics where evaluation_id = ?", [e["id"]]):
                metrics.setdefault(r["averaging"], {})[r["metric"]] = r["value"]
                if r["averaging"] == "macro":  # version 1 had no undefined values
                    metrics["undefined"][r["metric"]] = r.get("n_undefined") or 0
            intervals = {r["metric"]: (r["low"], r["high"]) for r in self.rows(
                "select metric, low, high from metric_intervals where evaluation_id = ?", [e["id"]])}
            out.append({**e, "model": model, "metrics": metrics, "intervals": intervals})
        return out

    def image_metrics(self, evaluation_id: int) -> list[dict[str, Any]]:
        """Per-image rows; an undefined metric is None (see :mod:`glassbox_audit.metrics`)."""
        return self._upgraded("image_metrics", self.rows(
            "select * from image_metrics where evaluation_id = ? order by batch_index, image_id", [evaluation_id]))

    def failures(self, evaluation_id: int) -> list[dict[str, Any]]:
        """Images whose Jaccard is below the evaluation's threshold, worst first."""
        return self.rows("select i.image_id, i.iou from image_metrics i join evaluations e on e.id = i.evaluation_id "
                         "where i.evaluation_id = ? and i.iou < e.jaccard_threshold order by i.iou, i.image_id",
                         [evaluation_id])

    def batch_metrics(self, evaluation_id: int) -> list[dict[str, Any]]:
        return self.rows("select * from batch_metrics where evaluation_id = ? order by batch_index",
                         [evaluation_id])

    def operating_points(self, evaluation_id: int) -> list[dict[str, Any]]:
        """Metrics per threshold; empty for databases written before the table existed."""
        if "operating_points" not in self.db.table_names():
            return []
        return self.rows("select * from operating_points where evaluation_id = ? order by threshold",
                         [evaluation_id])

    def selected_batches(self, run_id: str) -> list[dict[str, Any]]:
        return self.rows("select * from selected_batches where run_id = ? order by batch_index", [run_id])

    def artifacts(self, run_id: str) -> list[dict[str, Any]]:
        return self.rows("select * from artifacts where run_id = ? order by path", [run_id])


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in row.items():
        if k.endswith("_json") and isinstance(v, str):
            out[k[:-5]] = json.loads(v)
        else:
            out[k] = v
    return out
