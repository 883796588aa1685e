"""``run_audit``: the whole audit, stage after stage, data flowing one way.

data -> models (load by hash or train) -> evaluate (full test partition, streamed) ->
select batches -> store (SQLite, in the new version folder) -> overlays -> report
(HTML + PDF from the database) -> seal the version (manifest, read-only, rename).

All heavy work happens before a version number is reserved, and the version folder is
built aside and renamed into place at the end, so a failure at any point leaves the
audits folder as it was.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from . import overlays
from .compare import diff_databases
from .config import AuditConfig, config_hash, config_to_dict
from .data import load_dataset
from .evaluate import predict_batches, predict_thumbnails, select_batches
from .executor import make_executor
from .models import obtain_models
from .provenance import code_sha256, code_version, machine, package_versions
from .report import RenderedFile, default_templates, render_dossier
from .store import AuditStore
from .versions import list_versions, new_version, wait_for_earlier_versions
from .xai import render_xai_figures

__all__ = ["AuditResult", "run_audit"]

log = logging.getLogger(__name__)

DATABASE = "audit.sqlite"


@dataclass
class AuditResult:
    name: str
    version: str
    path: Path
    run_id: str
    database: Path
    html: Path
    pdf: Path | None
    manifest: Path
    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # model -> averaging -> metric
    seconds: float = 0.0
    regressions: list = field(default_factory=list)  # MetricDelta rows beyond the tolerance

    @property
    def summary(self) -> dict[str, dict[str, float]]:
        """Model -> macro (image-mean) metrics."""
        return {name: m["macro"] for name, m in self.metrics.items()}


def _settings_hash(cfg: AuditConfig) -> str:
    """The config hash a version records and ``diff`` compares: every setting except where the
    work ran (``executor``), which changes no figure, so a Dask run and a local run of the same
    audit show no config change (and versions from before the executor existed still match)."""
    import dataclasses

    tree = dataclasses.asdict(cfg)
    tree.pop("executor", None)
    return config_hash(tree)


def _latest_evaluation(versions: list[Path]) -> Path | None:
    """The newest of ``versions`` that holds an evaluation of its own: a version that only
    records a review carries the reviewed version's evaluation, which may be older than the
    last run's, and a nightly change log compares with the last measurement."""
    for folder in reversed(versions):
        if not (folder / DATABASE).is_file():
            continue
        with AuditStore(folder / DATABASE, readonly=True) as store:
            if f"v{store.run()['version']:03d}" == folder.name:
                return folder
    return None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


GALLERY_ROWS = 8  # thumbnails per gallery figure: one figure fits a page


def failure_ids(evals, jaccard_threshold: float) -> list[str]:
    """Images with Jaccard below the threshold for any variant, worst (lowest) first."""
    import numpy as np

    worst: dict[str, float] = {}
    for ev in evals:
        for image_id, iou in zip(ev.ids, ev.per_image["iou"]):
            if iou < jaccard_threshold:
                worst[image_id] = min(float(iou), worst.get(image_id, np.inf))
    return sorted(worst, key=lambda i: (worst[i], i))


def _gallery(thumbs, evals, cfg: AuditConfig, folder: Path) -> list[dict]:
    """Draw the failure gallery (thumbnails with each variant's errors) into ``folder/figures``."""
    n_failures = len(failure_ids(evals, cfg.evaluate.jaccard_threshold))
    iou = {ev.name: dict(zip(ev.ids, ev.per_image["iou"])) for ev in evals}
    artifacts = []
    for k in range(0, len(thumbs), GALLERY_ROWS):
        part = thumbs[k:k + GALLERY_ROWS]
        path = folder / "figures" / f"failures_{k // GALLERY_ROWS + 1:02d}.png"
        path.parent.mkdir(exist_ok=True)
        overlays.save_batch_figure(
            path, [t.image for t in part], [t.mask for t in part],
            {ev.name: [t.preds[ev.name] for t in part] for ev in evals}, [t.image_id for t in part],
            {ev.name: [float(iou[ev.name][t.image_id]) for t in part] for ev in evals},
            scale=cfg.report.figure_scale, dpi=cfg.report.figure_dpi, score_label="Jaccard")
        artifacts.append(RenderedFile(
            path, "failure_gallery",
            f"Failures {k + 1}-{k + len(part)} of {n_failures}: image, ground truth, and each variant's errors "
            "(true positive, false positive, false negative), with its Jaccard").artifact(folder))
    log.info("gallery: %d failure image(s) drawn in %d figure(s)", len(thumbs), len(artifacts))
    return artifacts


def _compute(cfg: AuditConfig, executor) -> tuple:
    """The heavy, pure stages: nothing is written to the audits folder here."""
    ds = load_dataset(cfg.data)
    models = obtain_models(cfg, ds, Path(cfg.models_dir))
    evals = executor.evaluate(models, ds, cfg.model.input_size, cfg.evaluate)
    selected = select_batches(evals, cfg.evaluate)
    views = predict_batches(models, ds, cfg.model.input_size, cfg.evaluate, [b for b, _ in selected])
    explanations = executor.explain(models, views, cfg) if cfg.xai.enabled else {}
    thumbs = predict_thumbnails(models, ds, cfg.model.input_size, cfg.evaluate,
                                failure_ids(evals, cfg.evaluate.jaccard_threshold)[:cfg.report.max_gallery])
    return ds, models, evals, selected, views, explanations, thumbs


def run_audit(cfg: AuditConfig, command: str = "glassbox_audit.run_audit()", executor=None) -> AuditResult:
    """Run a complete audit and return where its new version is.

    ``executor``: a started :mod:`~glassbox_audit.executor` to share between audits (a
    fleet); None makes one from ``cfg.executor`` for this run and closes it afterwards.
    Either way only this process writes the new version.

    Example::

        from glassbox_audit import load_config, run_audit
        result = run_audit(load_config(overrides=["name=nightly"]))
        print(result.path / "dossier.pdf")
    """
    start = time.perf_counter()
    started_at = _now()
    templates = Path(cfg.report.templates) if cfg.report.templates else default_templates()

    if executor is None:
        with make_executor(cfg.executor) as own:
            ds, models, evals, selected, views, explanations, thumbs = _compute(cfg, own)
    else:
        ds, models, evals, selected, views, explanations, thumbs = _compute(cfg, executor)

    regressions: list = []
    with new_version(Path(cfg.audits_dir), cfg.name) as build:
        folder = build.path
        run_id = str(uuid.uuid4())
        db_path = folder / DATABASE
        with AuditStore(db_path) as store:
            store.start_run({
                "id": run_id, "audit_name": cfg.name, "version": build.number, "started_at": started_at,
                "config_json": config_to_dict(cfg), "config_sha256": _settings_hash(cfg),
                "code_version": code_version(), "code_sha256": code_sha256(templates),
                "packages_json": package_versions(), "machine_json": machine(), "command": command,
                "notes_json": ds.notes,
            })
            fingerprint = store.record_dataset(ds)
            store.record_models(models)
            for ev in evals:
                store.record_evaluation(run_id, ev, fingerprint, "test")
            store.record_selected(run_id, selected)

            artifacts = []
            for view in views:
                scores = {ev.name: [float(ev.per_image["dice"][ev.ids.index(i)]) for i in view.ids] for ev in evals}
                preds = view.preds
                for kind, name, desc, draw, args in (
                    ("overlay", f"batch{view.index:04d}_overlays.png",
                     f"Batch {view.index}: image, ground truth, and each variant's errors "
                     "(true positive, false positive, false negative)",
                     overlays.save_batch_figure, (view.images, view.masks, preds, view.ids, scores)),
                    ("probability", f"batch{view.index:04d}_probabilities.png",
                     f"Batch {view.index}: each variant's lesion probability at native resolution",
                     overlays.save_probability_figure, (view.images, view.probs, view.ids)),
                ):
                    path = folder / "figures" / name
                    path.parent.mkdir(exist_ok=True)
                    draw(path, *args, scale=cfg.report.figure_scale, dpi=cfg.report.figure_dpi)
                    artifacts.append(RenderedFile(path, kind, desc).artifact(folder))
            artifacts += _gallery(thumbs, evals, cfg, folder)
            if explanations:
                from .xai import READING

                store.record_xai_readings({**READING, "timing": "Timing: seconds each method took for all "
                                           "images of the batch, per variant (one compiled call per chunk)."})
            for view in views:
                result = explanations.get(view.index)
                if result is None:
                    continue
                store.record_xai(run_id, view.index, result.summary_rows() + [
                    {"check": "timing", "model": t["model"], "method": t["method"], "seconds": t["seconds"]}
                    for t in result.timing_rows()])
                for path, kind, desc in render_xai_figures(result, view.images, folder / "figures",
                                                           prefix=f"batch{view.index:04d}_",
                                                           scale=cfg.report.figure_scale, dpi=cfg.report.figure_dpi):
                    artifacts.append(RenderedFile(path, kind, f"Batch {view.index}: {desc}").artifact(folder))
            # Compare with the newest earlier measurement, which a run started just before ours
            # may still be building: wait for earlier builds first (last, after the figures, so
            # two runs started together draw in parallel and only wait here).
            wait_for_earlier_versions(build)
            previous = _latest_evaluation([p for n, p in list_versions(build.final.parent) if n < build.number])
            if previous is not None:
                diff = diff_databases(previous / DATABASE, db_path)
                store.record_comparison(run_id, diff)
                regressions = diff.regressions(cfg.evaluate.regression_tolerance,
                                               tuple(cfg.evaluate.regression_metrics))
                for r in regressions:
                    log.warning("regression against %s: %s %s fell by %.4f (95%% CI %.4f..%.4f)",
                                diff.a, r.model, r.metric, -r.delta, r.ci_low, r.ci_high)
            store.record_artifacts(run_id, artifacts)
            store.finish_run(run_id, "complete", _now())

        if cfg.llm.enabled and cfg.llm.standard_questions:
            from .llm import answer_standard_questions

            answer_standard_questions(db_path, cfg)

        rendered = render_dossier(db_path, folder, templates, cfg.report.pdf, cfg.report.figure_dpi,
                                  cfg.report.max_listed_files)
        with AuditStore(db_path) as store:
            store.record_artifacts(run_id, [r.artifact(folder) for r in rendered])

    final = build.final
    result = AuditResult(
        cfg.name, build.name, final, run_id, final / DATABASE, final / "dossier.html",
        final / "dossier.pdf" if cfg.report.pdf else None, final / "manifest.json",
        {ev.name: ev.summary for ev in evals}, time.perf_counter() - start, regressions,
    )
    log.info("audit %s %s finished in %.1f s", cfg.name, build.name, result.seconds)
    return result
