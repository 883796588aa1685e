"""What the review workstation shows, read from the audits folder: audits, versions, their
verify status, reviews and change logs, and each version's table of test images.

Everything here reads; nothing writes. Databases are opened read-only. Names that come from a
URL are checked against the shapes an audit and a version can have and must resolve inside
the audits folder, so no request reaches a file outside it, and a version still being built
(a hidden ``.building-*`` folder, or a folder without its seal) is not found.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import SAFE_NAME
from ..metrics import IMAGE_METRICS, REVIEW_METRICS, error_shares
from ..store import DATABASE, AuditStore
from ..versions import MANIFEST, SEAL, VerifyReport, list_versions, verify_version

__all__ = ["AuditEntry", "ImageTable", "NotFound", "TablePage", "VersionEntry", "Library", "SORT_COLUMNS"]

_VERSION_NAME = re.compile(r"^v\d{3,}$")
# Columns of the image table a reviewer can sort by, per variant (and the image's own).
SORT_COLUMNS = REVIEW_METRICS


class NotFound(LookupError):
    """No such audit, version or image (or a name that cannot be one)."""


@dataclass
class VersionEntry:
    name: str
    path: Path
    status: str  # "intact", "changed", "broken chain", "seal broken"
    problems: list[str]
    run_version: str  # the version whose evaluation this one holds (itself, or the reviewed one)
    created: str
    decisions: list[dict]  # reviews recorded in this version's database
    changes: list[dict]  # what changed against the previous measurement (comparison_changes)
    deltas: list[dict]  # metric deltas against the previous measurement (paired bootstrap), per model

    @property
    def regressions(self) -> list[dict]:
        return [d for d in self.deltas if d.get("regression")]

    @property
    def is_review(self) -> bool:
        return bool(self.run_version) and self.run_version != self.name


@dataclass
class AuditEntry:
    name: str
    versions: list[VersionEntry] = field(default_factory=list)


def _status(report: VerifyReport) -> tuple[str, list[str]]:
    problems = [f"{label}: {f}" for label, f in report.file_findings]
    if report.chain not in ("ok", "first"):
        problems.append(f"chain: {report.chain}")
    if report.seal not in ("ok", "legacy"):
        problems.append(f"seal: {report.seal}")
    if report.ok:
        return "intact", problems
    if report.file_findings:
        return "changed", problems
    return ("broken chain" if report.chain not in ("ok", "first") else "seal broken"), problems


def _signature(folder: Path) -> tuple:
    """Sizes and modification times of every file: what a cached verify result is valid for."""
    out = []
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            st = p.stat()
            out.append((p.relative_to(folder).as_posix(), st.st_size, st.st_mtime_ns))
    prev = folder.parent
    return tuple(out) + tuple((q.name, q.stat().st_mtime_ns) for q in prev.glob(f"v*/{MANIFEST}"))


class Library:
    """The audits folder as the workstation reads it (thread-safe; caches what cannot change
    while its files do not)."""

    def __init__(self, audits_dir: str | Path):
        self.root = Path(audits_dir).resolve()
        self._lock = threading.Lock()
        self._verified: dict[Path, tuple[tuple, VerifyReport]] = {}
        self._tables: dict[tuple[Path, str], ImageTable] = {}

    # --- names from URLs -------------------------------------------------------------------

    def audit_dir(self, audit: str) -> Path:
        if not SAFE_NAME.match(audit or ""):
            raise NotFound(f"no audit {audit!r}")
        path = (self.root / audit).resolve()
        if path.parent != self.root or not path.is_dir() or not list_versions(path):
            raise NotFound(f"no audit {audit!r}")
        return path

    def _sealed_dir(self, audit: str, version: str) -> Path:
        if not _VERSION_NAME.match(version or ""):
            raise NotFound(f"no version {version!r}")
        audit_dir = self.audit_dir(audit)
        path = (audit_dir / version).resolve()
        if path.parent != audit_dir or not (path / MANIFEST).is_file():
            raise NotFound(f"no sealed version {audit}/{version}")
        return path

    def version_dir(self, audit: str, version: str) -> Path:
        """A sealed version's folder with its database; NotFound for anything else (a build
        in progress, a name outside the audits folder)."""
        path = self._sealed_dir(audit, version)
        if not (path / DATABASE).is_file():
            raise NotFound(f"{audit}/{version} has no database to browse")
        return path

    # --- listings ----------------------------------------------------------------------------

    def verify(self, folder: Path) -> VerifyReport:
        sig = _signature(folder)
        with self._lock:
            hit = self._verified.get(folder)
        if hit and hit[0] == sig:
            return hit[1]
        report = verify_version(folder)
        with self._lock:
            self._verified[folder] = (sig, report)
        return report

    def audits(self) -> list[AuditEntry]:
        if not self.root.is_dir():
            return []
        names = sorted(p.name for p in self.root.iterdir()
                       if p.is_dir() and SAFE_NAME.match(p.name) and list_versions(p))
        return [self.audit(n) for n in names]

    def audit(self, audit: str) -> AuditEntry:
        folder = self.audit_dir(audit)
        entry = AuditEntry(audit)
        for _, path in list_versions(folder):
            if (path / MANIFEST).is_file():
                entry.versions.append(self.version(audit, path.name))
        return entry

    def version(self, audit: str, version: str) -> VersionEntry:
        path = self._sealed_dir(audit, version)
        status, problems = _status(self.verify(path))
        try:
            created = json.loads((path / MANIFEST).read_text(encoding="utf-8")).get("created", "")
        except (OSError, ValueError):
            created = ""
        if not (path / DATABASE).is_file():  # listed (it is sealed) but there is nothing to browse
            return VersionEntry(version, path, status, problems or [f"removed: {DATABASE}"], "", created, [], [], [])
        with AuditStore(path / DATABASE, readonly=True) as store:
            run = store.run()
            metrics, changes = store.comparison(run["id"])
            decisions = store.reviews()
        return VersionEntry(version, path, status, problems, f"v{run['version']:03d}", created,
                            decisions, changes, metrics)

    # --- one version --------------------------------------------------------------------------

    def summary(self, audit: str, version: str) -> dict:
        """The run, its evaluations (macro/micro/dataset figures with intervals), acceptance."""
        from ..report.context import acceptance_rows

        path = self.version_dir(audit, version)
        with AuditStore(path / DATABASE, readonly=True) as store:
            run = store.run()
            evals = store.evaluations(run["id"])
            dataset = store.dataset(evals[0]["dataset_fingerprint"]) if evals else None
            selected = store.selected_batches(run["id"])
        criteria = run["config"].get("report", {}).get("acceptance", [])
        return {"run": run, "evaluations": evals, "dataset": dataset, "selected": selected,
                "acceptance": acceptance_rows(criteria, evals) if evals else []}

    def table(self, audit: str, version: str) -> "ImageTable":
        path = self.version_dir(audit, version)
        seal = (path / SEAL).read_text(encoding="utf-8") if (path / SEAL).is_file() else str(_signature(path))
        key = (path, seal)
        with self._lock:
            table = self._tables.get(key)
        if table is None:
            table = ImageTable.read(path / DATABASE)
            with self._lock:
                self._tables[key] = table
        return table

    def image(self, audit: str, version: str, image_id: str) -> dict:
        """Every stored figure of one test image, per variant, and the flags reviews gave it."""
        path = self.version_dir(audit, version)
        with AuditStore(path / DATABASE, readonly=True) as store:
            run = store.run()
            rows = store.rows(
                "select e.model_name, e.jaccard_threshold, m.* from image_metrics m "
                "join evaluations e on e.id = m.evaluation_id where e.run_id = ? and m.image_id = ? order by e.id",
                [run["id"], image_id])
            if not rows:
                raise NotFound(f"no test image {image_id!r} in {audit}/{version}")
            flags = store.rows("select r.reviewed_version, r.reviewer, f.flag from image_flags f "
                               "join reviews r on r.id = f.review_id where f.image_id = ? order by r.id",
                               [image_id])
            files = store.rows("select role, path, sha256, height, width from data_files "
                               "where dataset_fingerprint = (select dataset_fingerprint from evaluations "
                               "where run_id = ? limit 1) and partition = 'test' and sample_id = ?",
                               [run["id"], image_id])
        for r in rows:
            r.update({k: float(v) for k, v in error_shares(np.array([r["tp"], r["fp"], r["fn"], r["tn"]])).items()})
        return {"rows": rows, "flags": flags, "files": files, "batch_index": rows[0]["batch_index"]}


@dataclass
class TablePage:
    rows: list[dict]  # image_id, batch, failure, flagged, values: {variant index: {column: value}}
    total: int  # rows passing the filter
    page: int
    pages: int
    per_page: int


@dataclass
class ImageTable:
    """One version's test images with each variant's figures, as arrays: sorted, filtered and
    paged in memory (a sealed version never changes, so it is read once)."""

    variants: list[str]
    ids: np.ndarray  # (N,) str
    batch: np.ndarray  # (N,) int
    values: dict[str, np.ndarray]  # column -> (V, N) float, NaN where undefined
    jaccard_threshold: float
    stored_flags: frozenset[str]  # images flagged by a review already recorded in this version

    @classmethod
    def read(cls, db_path: Path) -> "ImageTable":
        with AuditStore(db_path, readonly=True) as store:
            run = store.run()
            evals = store.rows("select id, model_name, jaccard_threshold from evaluations where run_id = ? "
                               "order by id", [run["id"]])
            flagged = frozenset(r["image_id"] for r in store.rows("select distinct image_id from image_flags"))
            stored = [c for c in SORT_COLUMNS if c in IMAGE_METRICS]  # the rest come from the counts
            per_variant = [store.rows(f"select image_id, batch_index, tp, fp, fn, tn, {', '.join(stored)} "
                                      "from image_metrics where evaluation_id = ? order by image_id", [e["id"]])
                           for e in evals]
        ids = np.array([r["image_id"] for r in per_variant[0]], dtype=object) if evals else np.array([], object)
        values: dict[str, list[np.ndarray]] = {c: [] for c in SORT_COLUMNS}
        for rows in per_variant:
            if [r["image_id"] for r in rows] != list(ids):
                raise ValueError(f"{db_path}: the variants were evaluated on different images")
            counts = np.array([[r["tp"], r["fp"], r["fn"], r["tn"]] for r in rows], dtype=np.int64).reshape(-1, 4)
            shares = error_shares(counts)
            for c in SORT_COLUMNS:
                values[c].append(shares[c] if c in shares else
                                 np.array([np.nan if r[c] is None else r[c] for r in rows], dtype=np.float64))
        batch = np.array([r["batch_index"] for r in per_variant[0]], dtype=np.int64) if evals else np.array([], int)
        stacked = {c: np.vstack(v) if v else np.zeros((0, 0)) for c, v in values.items()}
        thr = float(evals[0]["jaccard_threshold"]) if evals else 0.65
        return cls([e["model_name"] for e in evals], ids, batch, stacked, thr, flagged)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def failures(self) -> np.ndarray:
        """Images whose Jaccard is below the threshold for any variant (the dossier's failures)."""
        return np.any(self.values["iou"] < self.jaccard_threshold, axis=0)

    @property
    def batches(self) -> list[int]:
        return sorted({int(b) for b in self.batch})

    def order(self, sort: str = "image", descending: bool = False, only: str = "", batch: int | None = None,
              flagged: frozenset[str] | set[str] = frozenset()) -> np.ndarray:
        """Row indices passing the filter, in the requested order (ties by image id; undefined
        values last whichever the direction)."""
        keep = np.ones(len(self.ids), dtype=bool)
        flagged_all = self.stored_flags | set(flagged)
        if only == "failures":
            keep &= self.failures
        elif only == "flagged":
            keep &= np.array([i in flagged_all for i in self.ids], dtype=bool)
        if batch is not None:
            keep &= self.batch == batch
        rows = np.flatnonzero(keep)
        by_id = np.argsort(self.ids[rows].astype(str), kind="stable")
        rows = rows[by_id]
        if sort == "image":
            return rows[::-1] if descending else rows
        if sort == "batch":
            key = self.batch[rows].astype(np.float64)
        else:
            column, _, k = sort.partition(":")
            if column not in SORT_COLUMNS or not k.isdigit() or int(k) >= len(self.variants):
                raise NotFound(f"cannot sort by {sort!r}")
            key = self.values[column][int(k), rows]
        undefined = np.isnan(key)
        key = np.where(undefined, 0.0, -key if descending else key)
        # lexsort: last key first; stable on the id order underneath.
        return rows[np.lexsort((key, undefined))]

    def page(self, order: np.ndarray, page: int = 1, per_page: int = 50,
             flagged: frozenset[str] | set[str] = frozenset()) -> TablePage:
        per_page = max(1, min(int(per_page), 500))
        pages = max(1, -(-len(order) // per_page))
        page = min(max(1, int(page)), pages)
        chosen = order[(page - 1) * per_page: page * per_page]
        failures = self.failures
        flagged_all = self.stored_flags | set(flagged)
        rows = [{"image_id": str(self.ids[i]), "batch": int(self.batch[i]), "failure": bool(failures[i]),
                 "flagged": str(self.ids[i]) in flagged_all,
                 "values": [{c: _num(self.values[c][k, i]) for c in SORT_COLUMNS} for k in range(len(self.variants))]}
                for i in chosen]
        return TablePage(rows, len(order), page, pages, per_page)

    def neighbours(self, order: np.ndarray, image_id: str) -> tuple[str | None, str | None, int | None]:
        """The previous and next image in ``order``, and the image's 1-based position (None when
        the filter leaves it out)."""
        where = np.flatnonzero(self.ids[order] == image_id)
        if not len(where):
            return None, None, None
        k = int(where[0])
        prev = str(self.ids[order[k - 1]]) if k > 0 else None
        nxt = str(self.ids[order[k + 1]]) if k + 1 < len(order) else None
        return prev, nxt, k + 1


def _num(v: float) -> float | None:
    return None if v != v else float(v)
