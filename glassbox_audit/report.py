"""The dossier: HTML and PDF rendered from the run database alone.

``render_dossier`` reads everything it shows from ``audit.sqlite`` (numbers, cards,
hashes) and the figure files the run recorded as artifacts; it draws the charts from the
stored numbers, renders the Jinja template with autoescaping on, and prints the HTML to
PDF with WeasyPrint. It imports neither the models nor TensorFlow, so a stored version can
be re-rendered without recomputing anything.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from . import charts
from .data.layouts import ground_truth_statement
from .metrics import METRICS
from .store import AuditStore

__all__ = ["DISCLAIMER", "RenderedFile", "build_context", "default_templates", "render_dossier", "rerender",
           "write_pdf"]

log = logging.getLogger(__name__)

DISCLAIMER = (
    "Research use only. GlassBox Audit is a research tool, not a medical device. The models, "
    "figures and explanations in this dossier have not been cleared or approved by any regulator "
    "and must not be used for diagnosis, treatment or any clinical decision."
)

METRIC_LABELS = {
    "dice": "Dice", "iou": "IoU (Jaccard)", "precision": "Precision", "recall": "Recall (sensitivity)",
    "f1": "F1", "pixel_accuracy": "Pixel accuracy", "specificity": "Specificity",
    "thresholded_jaccard": "ISIC thresholded Jaccard", "fp_share": "False-positive share of pixels",
    "fn_share": "False-negative share of pixels", "lesion_detection_rate": "Lesion detection rate",
    "jaccard_failures": "Images with Jaccard < threshold", "n_images": "Images",
}


# Artifact kinds the report itself draws from the database; every other figure comes from the run.
REPORT_KINDS = ("chart", "dossier-html", "dossier-pdf")


@dataclass
class RenderedFile:
    path: Path
    kind: str
    description: str

    def artifact(self, root: Path) -> dict[str, Any]:
        """The ``artifacts`` row of this file: path relative to the version folder, sha256, size."""
        from .data.imageio import sha256_file

        return {"path": self.path.relative_to(root).as_posix(), "kind": self.kind, "description": self.description,
                "sha256": sha256_file(self.path), "bytes": self.path.stat().st_size}


def default_templates() -> Path:
    """The ``templates/`` folder beside the package (the project's top level)."""
    return Path(__file__).resolve().parent.parent / "templates"


def _figure(files: list[RenderedFile], folder: Path, name: str, description: str, draw, *args, **kw) -> str:
    path = folder / "figures" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    draw(path, *args, **kw)
    files.append(RenderedFile(path, "chart", description))
    return f"figures/{name}"


def build_context(store: AuditStore, folder: Path, dpi: int = 110, max_listed_files: int = 200,
                  run_id: str | None = None) -> tuple[dict[str, Any], list[RenderedFile]]:
    """Read the run from ``store`` and draw its charts into ``folder/figures``."""
    run = store.run(run_id)
    evals = store.evaluations(run["id"])
    if not evals:
        raise ValueError(f"{store.path}: run {run['id']} has no evaluations")
    dataset = store.dataset(evals[0]["dataset_fingerprint"])
    n_files = store.rows("select count(*) as n from data_files where dataset_fingerprint = ?",
                         [dataset["fingerprint"]])[0]["n"]
    files = store.data_files(dataset["fingerprint"], limit=max_listed_files)
    selected = store.selected_batches(run["id"])
    artifacts = {a["kind"] + ":" + a["path"]: a for a in store.artifacts(run["id"])}
    written: list[RenderedFile] = []

    names = [e["model_name"] for e in evals]
    batch_rows = {e["model_name"]: store.batch_metrics(e["id"]) for e in evals}
    image_rows = {e["model_name"]: store.image_metrics(e["id"]) for e in evals}
    jt = evals[0]["jaccard_threshold"]

    figures = {
        "metrics": _figure(written, folder, "metric_comparison.png", "Metric comparison (macro)",
                           charts.plot_metric_comparison,
                           {n: {METRIC_LABELS[k]: e["metrics"]["macro"][k] for k in ("dice", "iou", "precision", "recall", "specificity")}
                            for n, e in zip(names, evals)}, dpi=dpi),
        "confusion": _figure(written, folder, "confusion_matrices.png", "Confusion matrices (pixels)",
                             charts.plot_confusion_matrices,
                             {e["model_name"]: _pooled(image_rows[e["model_name"]]) for e in evals}, dpi=dpi),
        "batch_dice": _figure(written, folder, "batch_dice.png", "Per-batch mean Dice",
                              charts.plot_batch_metric,
                              {n: [(r["batch_index"], r["mean_dice"]) for r in batch_rows[n]] for n in names},
                              "Dice (batch mean)", means={e["model_name"]: e["metrics"]["macro"]["dice"] for e in evals},
                              highlight=[s["batch_index"] for s in selected], dpi=dpi),
        "dice_hist": _figure(written, folder, "dice_histogram.png", "Per-image Dice histogram",
                             charts.plot_histogram, {n: [r["dice"] for r in image_rows[n]] for n in names},
                             "Dice", dpi=dpi),
        "iou_hist": _figure(written, folder, "iou_histogram.png", "Per-image Jaccard histogram",
                            charts.plot_histogram, {n: [r["iou"] for r in image_rows[n]] for n in names},
                            "Jaccard (IoU)", threshold=jt, dpi=dpi),
    }
    curves = {e["model_name"]: store.operating_points(e["id"]) for e in evals}
    if any(curves.values()):
        figures["operating_points"] = _figure(
            written, folder, "operating_points.png", "Operating-point curves", charts.plot_operating_points,
            curves, threshold=evals[0]["threshold"], dpi=dpi)
    histories = {}
    for e in evals:
        card = e["model"]["card"]
        if card.get("base_history"):
            histories.setdefault("base", card["base_history"])
        if card.get("history"):
            histories[e["model_name"]] = card["history"]
    if histories:
        figures["training"] = _figure(written, folder, "training_curves.png", "Training curves",
                                      charts.plot_training_curves, histories, dpi=dpi)

    models = []
    for e in evals:
        card = e["model"]["card"]
        models.append({
            "name": e["model_name"], "description": card.get("description", ""), "sha256": e["model_sha256"],
            "key": card.get("key"), "path": e["model"]["path"], "architecture": card.get("architecture", {}),
            "loss": card.get("loss", {}), "hyperparameters": card.get("hyperparameters", {}),
            "epochs_run": card.get("epochs_run"), "best_epoch": card.get("best_epoch"),
            "best_val_dice": card.get("best_val_dice"), "training_seconds": card.get("training_seconds"),
            "base_training_seconds": card.get("base_training_seconds"), "hardware": card.get("hardware", {}),
            "created": card.get("created"), "base_model": card.get("base_model"),
            "train_fingerprint": card.get("data", {}).get("train_fingerprint"),
        })

    metric_rows = [
        {"key": k, "label": METRIC_LABELS[k],
         "values": [(e["metrics"]["micro"][k], e["metrics"]["macro"][k]) for e in evals],
         "intervals": [e["intervals"].get(k) for e in evals]}
        for k in METRICS
    ]
    dataset_rows = [
        {"key": k, "label": METRIC_LABELS[k], "values": [e["metrics"]["dataset"][k] for e in evals],
         "intervals": [e["intervals"].get(k) for e in evals]}
        for k in ("thresholded_jaccard", "lesion_detection_rate", "fp_share", "fn_share", "jaccard_failures", "n_images")
    ]
    confusion = [{"name": e["model_name"], **_pooled(image_rows[e["model_name"]])} for e in evals]

    readings = {r["check_name"]: r["reading"] for r in store.rows("select * from xai_readings")}
    batches = []
    for s in selected:
        b = s["batch_index"]
        ids = [r["image_id"] for r in image_rows[names[0]] if r["batch_index"] == b]
        per_model = {n: {r["image_id"]: r for r in image_rows[n] if r["batch_index"] == b} for n in names}

        def of_batch(*kinds: str) -> list[dict[str, Any]]:
            return sorted((a for a in artifacts.values() if a["kind"] in kinds
                           and a["path"].startswith(f"figures/batch{b:04d}_")), key=lambda a: a["path"])
        xai_rows = store.rows("select * from xai_checks where run_id = ? and batch_index = ? order by rowid",
                              [run["id"], b])
        batches.append({
            "index": b, "reason": s["reason"],
            "rows": [{"image_id": i, "scores": [per_model[n][i] for n in names]} for i in ids],
            "means": [next(r for r in batch_rows[n] if r["batch_index"] == b) for n in names],
            "figures": of_batch("overlay", "probability"),
            "xai_figures": of_batch("xai", "xai_layers"),
            "xai_check_figures": of_batch("xai_check"),
            "xai_tables": _xai_tables(xai_rows, readings),
        })

    failures = []
    for n in names:
        rows = [r for r in image_rows[n] if r["iou"] < jt]
        failures.append({"name": n, "count": len(rows), "ids": [r["image_id"] for r in sorted(rows, key=lambda r: r["iou"])][:30]})
    worst: dict[str, float] = {}
    for n in names:
        for r in image_rows[n]:
            if r["iou"] < jt:
                worst[r["image_id"]] = min(r["iou"], worst.get(r["image_id"], 1.0))
    gallery = sorted((a for a in artifacts.values() if a["kind"] == "failure_gallery"), key=lambda a: a["path"])
    shown = min(len(worst), run["config"]["report"].get("max_gallery", 0)) if gallery else 0
    failure_union = sorted(worst, key=lambda i: (worst[i], i))
    operating = {n: _operating_summary(curves[n], evals[0]["threshold"]) for n in names if curves[n]}

    acceptance = _acceptance(run["config"]["report"]["acceptance"], evals)

    comparisons, changes = store.comparison(run["id"])
    tolerance = run["config"]["evaluate"]["regression_tolerance"]
    watched = run["config"]["evaluate"]["regression_metrics"]
    for c in comparisons:
        c["significant"] = c["ci_low"] > 0 or c["ci_high"] < 0
        c["regression"] = c["metric"] in watched and c["delta"] < -tolerance

    reviews = store.reviews()
    version = max([run["version"]] + [r["version"] for r in reviews])

    context = {
        "reviews": reviews,
        "acceptance": acceptance,
        "all_pass": all(all(r["passes"]) for r in acceptance),
        "comparisons": comparisons,
        "comparison_changes": changes,
        "regression_tolerance": tolerance,
        "audit": {"name": run["audit_name"], "version": f"v{version:03d}", "run_id": run["id"],
                  "evaluated_in": f"v{run['version']:03d}",
                  "started_at": run["started_at"], "finished_at": run["finished_at"],
                  "rendered_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
        "disclaimer": DISCLAIMER,
        "data": {**dataset, "n_files": n_files, "files": files, "files_truncated": n_files > len(files),
                 "skipped": store.rows("select path, reason from skipped_files where dataset_fingerprint = ? "
                                       "order by path", [dataset["fingerprint"]]),
                 "partition": evals[0]["partition"],
                 "ground_truth": ground_truth_statement(dataset["layout"],
                                                        run["config"]["data"].get("ground_truth", ""))},
        "config": run["config"],
        "config_rows": _flatten(run["config"]),
        "models": models,
        "names": names,
        "metric_rows": metric_rows,
        "dataset_rows": dataset_rows,
        "confusion": confusion,
        "figures": figures,
        "batches": batches,
        "failures": failures,
        "gallery": gallery,
        "gallery_unshown": failure_union[shown:],
        "n_failure_images": len(failure_union),
        "operating": operating,
        "jaccard_threshold": jt,
        "threshold": evals[0]["threshold"],
        "run": run,
        "evaluations": evals,
    }
    return context, written


def _operating_summary(rows: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """The operating point against the best threshold on the test set (for reading, not for tuning)."""
    at = min(rows, key=lambda r: abs(r["threshold"] - threshold))
    best = max(rows, key=lambda r: r["macro_dice"])
    return {"at": at, "best": best}


_OPS = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b}


def _acceptance(criteria: list[str], evals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each criterion checked for each model: macro metrics, or the dataset-level figures."""
    from .config import ACCEPTANCE

    rows = []
    for text in criteria:
        metric, op, value = ACCEPTANCE.match(text).groups()
        values = [e["metrics"]["macro"].get(metric, e["metrics"]["dataset"].get(metric)) for e in evals]
        rows.append({"criterion": text.strip(), "values": values,
                     "passes": [v is not None and _OPS[op](v, float(value)) for v in values]})
    return rows


def _xai_tables(rows: list[dict[str, Any]], readings: dict[str, str]) -> list[dict[str, Any]]:
    """Tall XAI check rows as one table per check: a row per (model, method, detail), a column per metric."""
    tables: dict[str, dict[str, Any]] = {}
    for r in rows:
        t = tables.setdefault(r["check_name"], {"check": r["check_name"], "reading": readings.get(r["check_name"], ""),
                                                "metrics": [], "rows": {}})
        if r["metric"] not in t["metrics"]:
            t["metrics"].append(r["metric"])
        key = (r["model"], r["method"], r["detail"])
        t["rows"].setdefault(key, {})[r["metric"]] = r["value"]
    return [{**t, "rows": [{"model": k[0], "method": k[1], "detail": k[2], "values": v} for k, v in t["rows"].items()]}
            for t in tables.values()]


def _flatten(tree: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Config tree as dotted keys, for a compact two-column table."""
    if isinstance(tree, dict):
        return [kv for k, v in tree.items() for kv in _flatten(v, f"{prefix}.{k}" if prefix else k)]
    if isinstance(tree, list) and tree and isinstance(tree[0], dict):
        return [kv for i, v in enumerate(tree) for kv in _flatten(v, f"{prefix}.{i}")]
    return [(prefix, json.dumps(tree))]


def _pooled(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {k: int(sum(r[k] for r in rows)) for k in ("tp", "fp", "fn", "tn")}


def _environment(templates: Path) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = lambda v, d=1: "n/a" if v is None or v != v else f"{100 * v:.{d}f}%"
    env.filters["num"] = lambda v, d=4: "n/a" if v is None or v != v else f"{v:.{d}f}"
    env.filters["thousands"] = lambda v: f"{int(v):,}"
    env.filters["short"] = lambda v, n=12: (v or "")[:n]
    env.filters["ci"] = lambda iv, d=3: "" if not iv else f"[{iv[0]:.{d}f}, {iv[1]:.{d}f}]"
    return env


def _peak_memory_mb() -> float:
    """This process's own peak resident memory, in MB.

    Linux keeps ``ru_maxrss`` across ``exec``, so a renderer spawned from an audit process
    holding TensorFlow would report the audit's size as its own; ``VmHWM`` belongs to the
    process image alone.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def _pdf_child(html_path: str, pdf_path: str) -> dict[str, float]:
    import weasyprint

    for noisy in ("weasyprint", "fontTools"):  # CSS it skips is not news for the audit log
        logging.getLogger(noisy).setLevel(logging.ERROR)

    t0 = time.perf_counter()
    weasyprint.HTML(filename=html_path, base_url=str(Path(html_path).parent)).write_pdf(pdf_path)
    return {"seconds": time.perf_counter() - t0, "peak_mb": _peak_memory_mb()}


def write_pdf(html_path: Path, pdf_path: Path) -> dict[str, float]:
    """Print the HTML to PDF with WeasyPrint in a child process.

    WeasyPrint holds the whole document in memory (and large runs reach gigabytes); in a
    child, that memory is returned to the system when the page is done, the audit process
    stays small, and the child's peak memory can be measured and logged. The child is
    spawned, not forked, because forking a process that runs TensorFlow threads is unsafe.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_pdf_child, str(html_path), str(pdf_path)).result()


def render_dossier(db_path: Path, folder: Path, templates: Path | None = None, pdf: bool = True,
                   dpi: int = 110, max_listed_files: int = 200, questions_path: Path | None = None
                   ) -> list[RenderedFile]:
    """Render ``dossier.html`` (and ``dossier.pdf``) into ``folder`` from ``db_path``.

    ``questions_path``: the audit's log of questions asked after sealing (``ask``), shown in
    the LLM appendix beside the questions the run answered itself.
    """
    from .llm import appendix_context

    templates = Path(templates) if templates else default_templates()
    with AuditStore(db_path, readonly=True) as store:
        context, written = build_context(store, folder, dpi, max_listed_files)
    context.update(appendix_context(db_path, questions_path if questions_path and Path(questions_path).is_file()
                                    else None))
    env = _environment(templates)
    html = env.get_template("dossier.html.j2").render(**context)
    html_path = folder / "dossier.html"
    html_path.write_text(html, encoding="utf-8")
    written.append(RenderedFile(html_path, "dossier-html", "Audit dossier (HTML)"))
    if pdf:
        pdf_path = folder / "dossier.pdf"
        stats = write_pdf(html_path, pdf_path)
        log.info("report: PDF written in %.1f s, renderer peak memory %.0f MB", stats["seconds"], stats["peak_mb"])
        written.append(RenderedFile(pdf_path, "dossier-pdf", "Audit dossier (PDF)"))
    return written


def rerender(version: Path, output: Path, templates: Path | None = None, pdf: bool = True
             ) -> list[RenderedFile]:
    """Render a stored version again into ``output`` from its database alone.

    The version folder is only read: its database opens read-only, and the figures drawn
    from images (overlays) are copied, since the database holds their hashes, not pixels.
    Figure resolution and listing limits come from the run's stored configuration.
    """
    import shutil

    version, output = Path(version), Path(output)
    db_path = version / "audit.sqlite"
    output.mkdir(parents=True, exist_ok=False)
    with AuditStore(db_path, readonly=True) as store:
        report_cfg = store.run()["config"]["report"]
        for a in store.artifacts(store.run()["id"]):
            if a["kind"] not in REPORT_KINDS:  # drawn from pixels by the run, not from the database
                (output / a["path"]).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(version / a["path"], output / a["path"])
    from .llm import QUESTIONS_DB

    return render_dossier(db_path, output, templates, pdf, report_cfg["figure_dpi"],
                          report_cfg["max_listed_files"], questions_path=version.parent / QUESTIONS_DB)
