"""What the dossier shows, read from a run database: one named step per part of the dossier.

Every step reads what the run stored (numbers, cards, hashes, verdicts, statements) and
computes nothing the run had already decided: failures are the images the database lists
below the stored Jaccard threshold, regressions the deltas the run marked, the ground-truth
statement and the metric rules the text the run recorded. Only the charts are drawn here,
from stored numbers, into the version's ``figures/`` folder.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.imageio import sha256_file
from ..data.layouts import ground_truth_statement
from ..config import ACCEPTANCE
from ..metrics import COMPARED_METRICS, DATASET_FIGURES, IMAGE_METRICS, METRIC_RULES, UNDEFINED_RULES, label
from ..store import AuditStore
from . import charts

__all__ = ["DISCLAIMER", "REPORT_KINDS", "RenderedFile", "acceptance_rows", "build_context"]

DISCLAIMER = (
    "Research use only. GlassBox Audit is a research tool, not a medical device. The models, "
    "figures and explanations in this dossier have not been cleared or approved by any regulator "
    "and must not be used for diagnosis, treatment or any clinical decision."
)

# Artifact kinds the report itself draws from the database; every other figure comes from the run.
REPORT_KINDS = ("chart", "dossier-html", "dossier-pdf")
# The macro metrics the comparison chart shows side by side.
_CHART_METRICS = tuple(m for m in IMAGE_METRICS if m in COMPARED_METRICS)


@dataclass
class RenderedFile:
    path: Path
    kind: str
    description: str

    def artifact(self, root: Path) -> dict[str, Any]:
        """The ``artifacts`` row of this file: path relative to the version folder, sha256, size."""
        return {"path": self.path.relative_to(root).as_posix(), "kind": self.kind, "description": self.description,
                "sha256": sha256_file(self.path), "bytes": self.path.stat().st_size}


@dataclass
class _Run:
    """The stored run a dossier is about, read once."""

    run: dict[str, Any]
    evals: list[dict[str, Any]]
    names: list[str]
    image_rows: dict[str, list[dict[str, Any]]]
    batch_rows: dict[str, list[dict[str, Any]]]
    curves: dict[str, list[dict[str, Any]]]
    selected: list[dict[str, Any]]
    artifacts: dict[str, dict[str, Any]]

    @property
    def jaccard_threshold(self) -> float:
        return self.evals[0]["jaccard_threshold"]

    @property
    def threshold(self) -> float:
        return self.evals[0]["threshold"]


def _read_run(store: AuditStore, run_id: str | None) -> _Run:
    run = store.run(run_id)
    evals = store.evaluations(run["id"])
    if not evals:
        raise ValueError(f"{store.path}: run {run['id']} has no evaluations")
    names = [e["model_name"] for e in evals]
    return _Run(run, evals, names,
                {e["model_name"]: store.image_metrics(e["id"]) for e in evals},
                {e["model_name"]: store.batch_metrics(e["id"]) for e in evals},
                {e["model_name"]: store.operating_points(e["id"]) for e in evals},
                store.selected_batches(run["id"]),
                {a["kind"] + ":" + a["path"]: a for a in store.artifacts(run["id"])})


def _pooled(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {k: int(sum(r[k] for r in rows)) for k in ("tp", "fp", "fn", "tn")}


def _draw_charts(r: _Run, folder: Path, dpi: int) -> tuple[dict[str, str], list[RenderedFile]]:
    """The dossier's charts, drawn from the stored numbers; returns their paths by role."""
    written: list[RenderedFile] = []

    def figure(name: str, description: str, draw, *args, **kw) -> str:
        path = folder / "figures" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        draw(path, *args, dpi=dpi, **kw)
        written.append(RenderedFile(path, "chart", description))
        return f"figures/{name}"

    macro = {e["model_name"]: e["metrics"]["macro"] for e in r.evals}
    figures = {
        "metrics": figure("metric_comparison.png", "Metric comparison (macro)", charts.plot_metric_comparison,
                          {n: {label(k): macro[n][k] for k in _CHART_METRICS} for n in r.names}),
        "confusion": figure("confusion_matrices.png", "Confusion matrices (pixels)", charts.plot_confusion_matrices,
                            {n: _pooled(r.image_rows[n]) for n in r.names}),
        "batch_dice": figure("batch_dice.png", "Per-batch mean Dice", charts.plot_batch_metric,
                             {n: [(b["batch_index"], b["mean_dice"]) for b in r.batch_rows[n]] for n in r.names},
                             "Dice (batch mean)", means={n: macro[n]["dice"] for n in r.names},
                             highlight=[s["batch_index"] for s in r.selected]),
        "dice_hist": figure("dice_histogram.png", "Per-image Dice histogram", charts.plot_histogram,
                            {n: [i["dice"] for i in r.image_rows[n]] for n in r.names}, "Dice"),
        "iou_hist": figure("iou_histogram.png", "Per-image Jaccard histogram", charts.plot_histogram,
                           {n: [i["iou"] for i in r.image_rows[n]] for n in r.names}, "Jaccard (IoU)",
                           threshold=r.jaccard_threshold),
    }
    if any(r.curves.values()):
        figures["operating_points"] = figure("operating_points.png", "Operating-point curves",
                                             charts.plot_operating_points, r.curves, threshold=r.threshold)
    histories = {}
    for e in r.evals:
        card = e["model"]["card"]
        if card.get("base_history"):
            histories.setdefault("base", card["base_history"])
        if card.get("history"):
            histories[e["model_name"]] = card["history"]
    if histories:
        figures["training"] = figure("training_curves.png", "Training curves", charts.plot_training_curves, histories)
    return figures, written


def _models(r: _Run) -> list[dict[str, Any]]:
    """Each model's card, as the model chapter lists it."""
    out = []
    for e in r.evals:
        card = e["model"]["card"]
        out.append({
            "name": e["model_name"], "description": card.get("description", ""), "sha256": e["model_sha256"],
            "key": card.get("key"), "path": e["model"]["path"], "architecture": card.get("architecture", {}),
            "loss": card.get("loss", {}), "hyperparameters": card.get("hyperparameters", {}),
            "epochs_run": card.get("epochs_run"), "best_epoch": card.get("best_epoch"),
            "best_val_dice": card.get("best_val_dice"), "training_seconds": card.get("training_seconds"),
            "base_training_seconds": card.get("base_training_seconds"), "hardware": card.get("hardware", {}),
            "seconds_per_epoch": card.get("seconds_per_epoch"), "base_seconds_per_epoch": card.get("base_seconds_per_epoch"),
            "created": card.get("created"), "base_model": card.get("base_model"),
            "train_fingerprint": card.get("data", {}).get("train_fingerprint"),
            "external": card.get("external"),
        })
    return out


def _metric_tables(r: _Run) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows of the micro/macro table (with the images each macro figure leaves out) and of the
    dataset-figure table, in registry order."""
    metric_rows = [
        {"key": k, "label": label(k),
         "values": [(e["metrics"]["micro"][k], e["metrics"]["macro"][k]) for e in r.evals],
         "undefined": [e["metrics"]["undefined"].get(k, 0) for e in r.evals],
         "intervals": [e["intervals"].get(k) for e in r.evals]}
        for k in IMAGE_METRICS
    ]
    dataset_rows = [
        {"key": k, "label": label(k), "values": [e["metrics"]["dataset"][k] for e in r.evals],
         "intervals": [e["intervals"].get(k) for e in r.evals]}
        for k in DATASET_FIGURES
    ]
    return metric_rows, dataset_rows


def _xai_tables(rows: list[dict[str, Any]], readings: dict[str, str]) -> list[dict[str, Any]]:
    """Tall XAI check rows as one table per check: a row per (model, method, detail), a column per metric."""
    tables: dict[str, dict[str, Any]] = {}
    for row in rows:
        t = tables.setdefault(row["check_name"], {"check": row["check_name"],
                                                  "reading": readings.get(row["check_name"], ""),
                                                  "metrics": [], "rows": {}})
        if row["metric"] not in t["metrics"]:
            t["metrics"].append(row["metric"])
        t["rows"].setdefault((row["model"], row["method"], row["detail"]), {})[row["metric"]] = row["value"]
    return [{**t, "rows": [{"model": k[0], "method": k[1], "detail": k[2], "values": v} for k, v in t["rows"].items()]}
            for t in tables.values()]


def _batches(store: AuditStore, r: _Run) -> list[dict[str, Any]]:
    """Each selected batch: its images' scores per model, its means, its figures and XAI checks."""
    readings = {row["check_name"]: row["reading"] for row in store.rows("select * from xai_readings")}
    out = []
    for s in r.selected:
        b = s["batch_index"]
        ids = [i["image_id"] for i in r.image_rows[r.names[0]] if i["batch_index"] == b]
        per_model = {n: {i["image_id"]: i for i in r.image_rows[n] if i["batch_index"] == b} for n in r.names}

        def of_batch(*kinds: str) -> list[dict[str, Any]]:
            return sorted((a for a in r.artifacts.values() if a["kind"] in kinds
                           and a["path"].startswith(f"figures/batch{b:04d}_")), key=lambda a: a["path"])

        xai_rows = store.rows("select * from xai_checks where run_id = ? and batch_index = ? order by rowid",
                              [r.run["id"], b])
        out.append({
            "index": b, "reason": s["reason"],
            "rows": [{"image_id": i, "scores": [per_model[n][i] for n in r.names]} for i in ids],
            "means": [next(row for row in r.batch_rows[n] if row["batch_index"] == b) for n in r.names],
            "figures": of_batch("overlay", "probability"),
            "xai_figures": of_batch("xai", "xai_layers"),
            "xai_check_figures": of_batch("xai_check"),
            "xai_tables": _xai_tables(xai_rows, readings),
            "xai_notes": store.xai_notes(r.run["id"], b),
        })
    return out


def _failures(store: AuditStore, r: _Run) -> dict[str, Any]:
    """The failure table and gallery: the images the database lists below the Jaccard threshold."""
    per_model = {e["model_name"]: store.failures(e["id"]) for e in r.evals}
    worst: dict[str, float] = {}
    for rows in per_model.values():
        for row in rows:
            worst[row["image_id"]] = min(row["iou"], worst.get(row["image_id"], 1.0))
    union = sorted(worst, key=lambda i: (worst[i], i))
    gallery = sorted((a for a in r.artifacts.values() if a["kind"] == "failure_gallery"), key=lambda a: a["path"])
    shown = min(len(union), r.run["config"]["report"].get("max_gallery", 0)) if gallery else 0
    return {
        "failures": [{"name": n, "count": len(rows), "ids": [row["image_id"] for row in rows][:30]}
                     for n, rows in per_model.items()],
        "gallery": gallery,
        "gallery_unshown": union[shown:],
        "n_failure_images": len(union),
    }


def _operating_summary(rows: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """The operating point against the best threshold on the test set (for reading, not for tuning)."""
    at = min(rows, key=lambda row: abs(row["threshold"] - threshold))
    best = max(rows, key=lambda row: row["macro_dice"])
    return {"at": at, "best": best}


_OPS = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b}


def acceptance_rows(criteria: list[str], evals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each criterion checked for each model: macro metrics, or the dataset-level figures.

    A criterion on a figure that is undefined for a model (no value) does not pass.
    """
    rows = []
    for text in criteria:
        metric, op, value = ACCEPTANCE.match(text).groups()
        values = [e["metrics"]["macro"].get(metric, e["metrics"]["dataset"].get(metric)) for e in evals]
        rows.append({"criterion": text.strip(), "values": values,
                     "passes": [v is not None and v == v and _OPS[op](v, float(value)) for v in values]})
    return rows


def _flatten(tree: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Config tree as dotted keys, for a compact two-column table."""
    if isinstance(tree, dict):
        return [kv for k, v in tree.items() for kv in _flatten(v, f"{prefix}.{k}" if prefix else k)]
    if isinstance(tree, list) and tree and isinstance(tree[0], dict):
        return [kv for i, v in enumerate(tree) for kv in _flatten(v, f"{prefix}.{i}")]
    return [(prefix, json.dumps(tree))]


def _data_sheet(store: AuditStore, r: _Run, max_listed_files: int) -> dict[str, Any]:
    dataset = store.dataset(r.evals[0]["dataset_fingerprint"])
    fp = dataset["fingerprint"]
    n_files = store.rows("select count(*) as n from data_files where dataset_fingerprint = ?", [fp])[0]["n"]
    files = store.data_files(fp, limit=max_listed_files)
    # The statement the run printed; databases from before it was stored (schema 1) had it
    # from the layout's text in the code of the day, the closest we can give now.
    stated = dataset["ground_truth"]
    if stated is None:
        stated = ground_truth_statement(dataset["layout"], r.run["config"]["data"].get("ground_truth", ""))
    return {**dataset, "n_files": n_files, "files": files, "files_truncated": n_files > len(files),
            "skipped": store.rows("select path, reason from skipped_files where dataset_fingerprint = ? "
                                  "order by path", [fp]),
            "partition": r.evals[0]["partition"], "ground_truth": stated}


def _metric_notes(store: AuditStore) -> dict[str, Any]:
    """The metric definitions the figures were computed under, as the run recorded them."""
    rules = store.metric_rules
    return {"version": rules, "rules": METRIC_RULES.get(rules, f"metric rules {rules}"),
            "undefined": {label(k): v for k, v in UNDEFINED_RULES.items()} if rules != "1" else {}}


def build_context(store: AuditStore, folder: Path, dpi: int = 110, max_listed_files: int = 200,
                  run_id: str | None = None) -> tuple[dict[str, Any], list[RenderedFile]]:
    """Read the run from ``store`` and draw its charts into ``folder/figures``."""
    r = _read_run(store, run_id)
    run = r.run
    figures, written = _draw_charts(r, folder, dpi)
    metric_rows, dataset_rows = _metric_tables(r)
    acceptance = acceptance_rows(run["config"]["report"]["acceptance"], r.evals)
    comparisons, changes = store.comparison(run["id"])
    reviews = store.reviews()
    version = max([run["version"]] + [rv["version"] for rv in reviews])
    context = {
        "reviews": reviews,
        "acceptance": acceptance,
        "all_pass": all(all(row["passes"]) for row in acceptance),
        "comparisons": comparisons,
        "comparison_changes": changes,
        "regression_tolerance": run["config"]["evaluate"]["regression_tolerance"],
        "audit": {"name": run["audit_name"], "version": f"v{version:03d}", "run_id": run["id"],
                  "evaluated_in": f"v{run['version']:03d}",
                  "started_at": run["started_at"], "finished_at": run["finished_at"],
                  "rendered_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
        "disclaimer": DISCLAIMER,
        "data": _data_sheet(store, r, max_listed_files),
        "config": run["config"],
        "config_rows": _flatten(run["config"]),
        "models": _models(r),
        "names": r.names,
        "metric_rows": metric_rows,
        "dataset_rows": dataset_rows,
        "metric_notes": _metric_notes(store),
        "confusion": [{"name": n, **_pooled(r.image_rows[n])} for n in r.names],
        "figures": figures,
        "batches": _batches(store, r),
        **_failures(store, r),
        "operating": {n: _operating_summary(r.curves[n], r.threshold) for n in r.names if r.curves[n]},
        "jaccard_threshold": r.jaccard_threshold,
        "threshold": r.threshold,
        "run": run,
        "evaluations": r.evals,
    }
    return context, written
