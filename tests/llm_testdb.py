"""A small real audit database for the LLM and query tests, written through AuditStore.

Per-image confusion counts are drawn from a seeded generator and go through the real
ModelEvaluation and AuditStore.record_evaluation, so every table the answers read (runs,
evaluations, evaluation_metrics, image_metrics, batch_metrics) is filled as a run fills it.
No TensorFlow: building one takes well under a second. ``build_compared_db`` adds a second version
with its stored comparison against the first.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

MODELS = (("precision-optimized", "Tversky loss weighting false positives"), ("balanced", "Dice loss"),
          ("recall-optimized", "Hybrid loss weighting false negatives"))
N_IMAGES, BATCH = 14, 4  # batches 0..3, the last one holding 2 images
IMAGE_IDS = [f"IMG_{i:04d}" for i in range(N_IMAGES)]


def build_audit_db(path: Path, seed: int = 0, audit: str = "demo", version: int = 1) -> Path:
    from glassbox_audit.evaluate import ModelEvaluation
    from glassbox_audit.store import AuditStore

    rng = np.random.default_rng(seed)
    run_id = f"run-{audit}-{version}"
    with AuditStore(path) as store:
        store.start_run({"id": run_id, "audit_name": audit, "version": version, "started_at": "2026-01-01T00:00:00Z",
                         "config_json": "{}", "config_sha256": "0" * 64, "code_version": "test", "code_sha256": "0" * 64,
                         "packages_json": "{}", "machine_json": "{}", "command": "test", "notes_json": "[]"})
        with store.db.atomic():
            store.db["datasets"].insert({"fingerprint": "f" * 64, "layout": "synthetic", "root": "", "description": "test",
                                         "test_source": "test", "counts_json": "{}", "notes_json": "[]",
                                         "train_fingerprint": "e" * 64})
        models = [SimpleNamespace(sha256=f"{i + 1:064x}", name=name, key=f"k{i}", path=f"models/{name}",
                                  card={"description": desc, "architecture": {"parameters": 1000}, "loss": {}})
                  for i, (name, desc) in enumerate(MODELS)]
        store.record_models(models)
        batch_index = np.arange(N_IMAGES) // BATCH
        sizes = np.full((N_IMAGES, 2), 40)
        for i, m in enumerate(models):
            tp = rng.integers(100, 600, N_IMAGES)
            fp = rng.integers(0, 200, N_IMAGES)
            fn = rng.integers(0, 200, N_IMAGES)
            tn = 1600 - tp - fp - fn
            counts = np.stack([tp, fp, fn, tn], axis=1)
            if i == 0:
                counts[3] = [0, 0, 0, 1600]  # an image with no lesion and no error: Dice 1 by convention
            ev = ModelEvaluation(m.name, m.sha256, IMAGE_IDS, batch_index, sizes, counts, 0.5, 0.65)
            store.record_evaluation(run_id, ev, "f" * 64, "test")
        store.finish_run(run_id, "complete", "2026-01-01T00:01:00Z")
    return path


def build_compared_db(folder: Path, tolerance: float = 0.01) -> Path:
    """Version 2 of audit "demo" (the numbers of ``build_audit_db(seed=0)``) with its stored
    comparison against version 1 (seed 1), as a nightly run records it: compare.diff_databases
    and AuditStore.record_comparison, Dice drops beyond ``tolerance`` marked regressions."""
    from glassbox_audit.compare import diff_databases
    from glassbox_audit.store import AuditStore

    folder.mkdir(parents=True, exist_ok=True)
    v1 = build_audit_db(folder / "v001.sqlite", seed=1, version=1)
    v2 = build_audit_db(folder / "v002.sqlite", seed=0, version=2)
    diff = diff_databases(v1, v2, n_boot=500)
    with AuditStore(v2) as store:
        store.record_comparison(store.run()["id"], diff, diff.regressions(tolerance))
    return v2
