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

from .compare import diff_databases
from .config import AuditConfig, config_hash, config_to_dict
from .data import Dataset, load_dataset
from .evaluate import predict_batches, predict_thumbnails, select_batches
from .executor import make_executor
from .models import obtain_models
from .models.external import external_models, first_test_batch
from .provenance import code_sha256, code_version, machine, package_versions
from .report import RenderedFile, overlays, render_dossier, run_templates
from .report.figure_cache import figure_cache
from .store import DATABASE, AuditStore
from .versions import list_versions, new_version, wait_for_earlier_versions
from .xai import render_xai_figures

__all__ = ["AuditResult", "Computed", "failure_ids", "run_audit", "settings_hash"]

log = logging.getLogger(__name__)


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


def settings_hash(cfg: AuditConfig) -> str:
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


@dataclass
class Computed:
    """What the heavy, pure stages produce, before anything is written to the audits folder."""

    dataset: Dataset
    models: list
    evals: list  # ModelEvaluation per model, in config order
    selected: list[tuple[int, str]]  # (batch index, why it was chosen)
    views: list  # BatchView per selected batch: images, masks, predictions
    explanations: dict  # batch index -> explanations of that batch
    thumbs: list  # Thumbnail per failure drawn in the gallery


def _compute(cfg: AuditConfig, executor) -> Computed:
    """The heavy, pure stages: nothing is written to the audits folder here."""
    ds = load_dataset(cfg.data)
    if cfg.models:  # audited as they are: nothing is trained
        models = external_models(cfg, first_test_batch(ds, cfg))
    else:
        models = obtain_models(cfg, ds, Path(cfg.models_dir))
    evals = executor.evaluate(models, ds, cfg.model.input_size, cfg.evaluate)
    selected = select_batches(evals, cfg.evaluate)
    views = predict_batches(models, ds, cfg.model.input_size, cfg.evaluate, [b for b, _ in selected])
    explanations = executor.explain(models, views, cfg) if cfg.xai.enabled else {}
    thumbs = predict_thumbnails(models, ds, cfg.model.input_size, cfg.evaluate,
                                failure_ids(evals, cfg.evaluate.jaccard_threshold)[:cfg.report.max_gallery])
    return Computed(ds, models, evals, selected, views, explanations, thumbs)


def _record_run(store: AuditStore, cfg: AuditConfig, c: Computed, run_id: str, number: int, started_at: str,
                command: str, templates: Path) -> None:
    """The run, its data, models, evaluations and selected batches, with their provenance."""
    store.start_run({
        "id": run_id, "audit_name": cfg.name, "version": number, "started_at": started_at,
        "config_json": config_to_dict(cfg), "config_sha256": settings_hash(cfg),
        "code_version": code_version(), "code_sha256": code_sha256(templates),
        "packages_json": package_versions(), "machine_json": machine(), "command": command,
        "notes_json": c.dataset.notes,
    })
    fingerprint = store.record_dataset(c.dataset)
    store.record_models(c.models)
    for ev in c.evals:
        store.record_evaluation(run_id, ev, fingerprint, "test")
    store.record_selected(run_id, c.selected)


def _draw_batches(cfg: AuditConfig, c: Computed, folder: Path) -> list[dict]:
    """Each selected batch's overlays and probability maps; their artifact rows."""
    artifacts = []
    for view in c.views:
        scores = {ev.name: [float(ev.per_image["dice"][ev.ids.index(i)]) for i in view.ids] for ev in c.evals}
        for kind, name, desc, draw, args in (
            ("overlay", f"batch{view.index:04d}_overlays.png",
             f"Batch {view.index}: image, ground truth, and each variant's errors "
             "(true positive, false positive, false negative)",
             overlays.save_batch_figure, (view.images, view.masks, view.preds, view.ids, scores)),
            ("probability", f"batch{view.index:04d}_probabilities.png",
             f"Batch {view.index}: each variant's lesion probability at native resolution",
             overlays.save_probability_figure, (view.images, view.probs, view.ids)),
        ):
            path = folder / "figures" / name
            path.parent.mkdir(exist_ok=True)
            draw(path, *args, scale=cfg.report.figure_scale, dpi=cfg.report.figure_dpi)
            artifacts.append(RenderedFile(path, kind, desc).artifact(folder))
    return artifacts


def _record_explanations(store: AuditStore, cfg: AuditConfig, c: Computed, run_id: str, folder: Path) -> list[dict]:
    """Each selected batch's explanation checks (stored) and figures (drawn); their artifact rows."""
    if not c.explanations:
        return []
    from .xai import READING

    store.record_xai_readings({**READING, "timing": "Timing: seconds each method took for all "
                               "images of the batch, per variant (one compiled call per chunk)."})
    artifacts = []
    for view in c.views:
        result = c.explanations.get(view.index)
        if result is None:
            continue
        store.record_xai(run_id, view.index, result.summary_rows() + [
            {"check": "timing", "model": t["model"], "method": t["method"], "seconds": t["seconds"]}
            for t in result.timing_rows()], notes=result.notes)
        for path, kind, desc in render_xai_figures(result, view.images, folder / "figures",
                                                   prefix=f"batch{view.index:04d}_",
                                                   scale=cfg.report.figure_scale, dpi=cfg.report.figure_dpi):
            artifacts.append(RenderedFile(path, kind, f"Batch {view.index}: {desc}").artifact(folder))
    return artifacts


def _compare_with_previous(store: AuditStore, cfg: AuditConfig, build, run_id: str, db_path: Path) -> list:
    """Compare with the newest earlier measurement and store the diff; returns the regressions.

    A run started just before ours may still be building it: wait for earlier builds first
    (called last, after the figures, so two runs started together draw in parallel and only
    wait here).
    """
    wait_for_earlier_versions(build)
    previous = _latest_evaluation([p for n, p in list_versions(build.final.parent) if n < build.number])
    if previous is None:
        return []
    diff = diff_databases(previous / DATABASE, db_path)
    regressions = diff.regressions(cfg.evaluate.regression_tolerance, tuple(cfg.evaluate.regression_metrics))
    store.record_comparison(run_id, diff, regressions)
    for r in regressions:
        log.warning("regression against %s: %s %s fell by %.4f (95%% CI %.4f..%.4f)",
                    diff.a, r.model, r.metric, -r.delta, r.ci_low, r.ci_high)
    return regressions


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
    templates = run_templates(config_to_dict(cfg))
    if cfg.llm.enabled and cfg.llm.asks_questions:
        from .llm.runtime import check_settings

        check_settings(cfg.llm)  # a wrong model name fails now, not after the training

    if executor is None:
        with make_executor(cfg.executor) as own:
            computed = _compute(cfg, own)
    else:
        computed = _compute(cfg, executor)

    # Figures drawn before (same pictures: same models, data, settings) are copied, not drawn.
    with figure_cache(cfg.report.figure_cache or None, cfg.report.figure_cache_max_mb):
        with new_version(Path(cfg.audits_dir), cfg.name) as build:
            folder = build.path
            run_id = str(uuid.uuid4())
            db_path = folder / DATABASE
            with AuditStore(db_path) as store:
                _record_run(store, cfg, computed, run_id, build.number, started_at, command, templates)
                artifacts = _draw_batches(cfg, computed, folder)
                artifacts += _gallery(computed.thumbs, computed.evals, cfg, folder)
                artifacts += _record_explanations(store, cfg, computed, run_id, folder)
                regressions = _compare_with_previous(store, cfg, build, run_id, db_path)
                store.record_artifacts(run_id, artifacts)
                store.finish_run(run_id, "complete", _now())

            if cfg.llm.enabled and cfg.llm.asks_questions:
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
        {ev.name: ev.summary for ev in computed.evals}, time.perf_counter() - start, regressions,
    )
    log.info("audit %s %s finished in %.1f s", cfg.name, build.name, result.seconds)
    return result
