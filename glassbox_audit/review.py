"""Human review: a reviewer's decision on an audit version, recorded as a new version.

A sealed version never changes. ``review_version`` checks that the reviewed version is
intact (``verify``), then builds the next version of the audit from it: the same database
(with the review and any per-image flags added), the same figures, a dossier rendered again
with a "Review and sign-off" section, and a manifest chained to the previous version. The
evaluation inside is the reviewed version's, unchanged; the dossier says so.

Example::

    review_version(Path("audits"), "default", "v002", reviewer="A. Reader",
                   decision="approve", note="Figures checked against the data sheet.",
                   flags=[("SYN_0000412", "ground truth questionable")])
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from .data.imageio import sha256_file
from .errors import ConfigError, StoreError
from .report import REPORT_KINDS, render_dossier
from .store import DATABASE, AuditStore
from .versions import MANIFEST, new_version, verify_version

__all__ = ["DECISIONS", "review_version"]

log = logging.getLogger(__name__)

DECISIONS = ("approve", "reject", "needs-changes")


def review_version(audits_dir: Path, audit: str, version_folder: Path, reviewer: str, decision: str,
                   note: str = "", flags: list[tuple[str, str]] | None = None, pdf: bool = True) -> Path:
    """Record a review of ``version_folder`` as a new version; return the new version's path."""
    if decision not in DECISIONS:
        raise ConfigError(f"review decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    if not reviewer.strip():
        raise ConfigError("review needs a reviewer name (--reviewer)")
    report = verify_version(version_folder)
    if not report.ok:
        raise StoreError(f"{version_folder}: refusing to review a version that fails verify "
                         f"(changed {report.changed}, added {report.added}, removed {report.removed}, "
                         f"chain: {report.chain})")
    flags = flags or []
    with AuditStore(version_folder / DATABASE, readonly=True) as src:
        run = src.run()
        known = {r["image_id"] for r in src.rows("select distinct image_id from image_metrics")}
        artifacts = [a for a in src.artifacts(run["id"]) if a["kind"] not in REPORT_KINDS]
    unknown = [i for i, _ in flags if i not in known]
    if unknown:
        raise ConfigError(f"--flag names image {unknown[0]!r}, which is not in {version_folder.name}'s test set")

    with new_version(audits_dir, audit) as build:
        db_path = build.path / DATABASE
        shutil.copyfile(version_folder / DATABASE, db_path)
        db_path.chmod(0o644)  # the copy is a new file of the new version, writable until sealed
        for a in artifacts:
            (build.path / a["path"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(version_folder / a["path"], build.path / a["path"])
        with AuditStore(db_path) as store:
            store.record_review({
                "version": build.number, "reviewed_version": version_folder.name,
                "reviewed_manifest_sha256": sha256_file(version_folder / MANIFEST), "reviewer": reviewer.strip(),
                "decision": decision, "note": note, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }, flags)
            report_cfg = run["config"]["report"]
        rendered = render_dossier(db_path, build.path, None, pdf, report_cfg["figure_dpi"],
                                  report_cfg["max_listed_files"])
        with AuditStore(db_path) as store:
            store.record_artifacts(run["id"], [r.artifact(build.path) for r in rendered])
    log.info("review: %s of %s %s recorded as %s", decision, audit, version_folder.name, build.name)
    return build.final
