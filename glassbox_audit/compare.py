"""Comparing two audit versions: metric deltas with paired-bootstrap significance, and
every hash that changed between them (data, weights, code, config, packages).

Reads two run databases only; knows no TensorFlow.

Example::

    d = diff_databases(Path("audits/a/v001/audit.sqlite"), Path("audits/a/v002/audit.sqlite"))
    for row in d.metrics:
        print(row.model, row.metric, row.delta, row.ci_low, row.ci_high, row.p_value)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import COMPARED_METRICS, METRIC_RULES
from .store import AuditStore

__all__ = ["HashChange", "MetricDelta", "VersionDiff", "diff_databases", "paired_bootstrap"]


@dataclass
class MetricDelta:
    model: str
    metric: str
    a: float  # image mean in the older version
    b: float
    delta: float  # b - a
    ci_low: float  # 95% paired-bootstrap interval of the delta
    ci_high: float
    p_value: float  # two-sided, from the bootstrap distribution
    n_images: int

    @property
    def significant(self) -> bool:
        return self.ci_low > 0 or self.ci_high < 0


@dataclass
class HashChange:
    what: str
    a: str | None
    b: str | None


@dataclass
class VersionDiff:
    a: str  # "v001"
    b: str
    metrics: list[MetricDelta] = field(default_factory=list)
    changes: list[HashChange] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "notes": self.notes,
                "metrics": [dict(asdict(m), significant=m.significant) for m in self.metrics],
                "changes": [asdict(c) for c in self.changes]}

    def regressions(self, tolerance: float, metrics: tuple[str, ...] = ("dice",)) -> list[MetricDelta]:
        """Deltas that fall by more than ``tolerance`` on the named metrics."""
        return [m for m in self.metrics if m.metric in metrics and m.delta < -tolerance]


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0
                     ) -> tuple[float, float, float]:
    """95% interval and two-sided p-value of mean(b - a), resampling images with replacement.

    All resamples are drawn at once as an index matrix: one vectorised mean per row.
    """
    d = np.asarray(b, float) - np.asarray(a, float)
    if d.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(n_boot, d.size))
    means = d[idx].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    if np.all(d == d[0]):  # no spread: the delta is exact
        p = 1.0 if d[0] == 0 else 0.0
    else:
        p = min(1.0, 2 * min(np.mean(means <= 0), np.mean(means >= 0)))
    return float(low), float(high), float(p)


def _per_image(store: AuditStore, run_id: str) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for e in store.evaluations(run_id):
        out[e["model_name"]] = {r["image_id"]: r for r in store.image_metrics(e["id"])}
    return out


def diff_databases(db_a: Path, db_b: Path, n_boot: int = 2000, seed: int = 0) -> VersionDiff:
    """Compare the runs stored in two version databases (``a`` older, ``b`` newer)."""
    with AuditStore(db_a, readonly=True) as sa, AuditStore(db_b, readonly=True) as sb:
        ra, rb = sa.run(), sb.run()
        diff = VersionDiff(f"v{ra['version']:03d}", f"v{rb['version']:03d}")
        ea = {e["model_name"]: e for e in sa.evaluations(ra["id"])}
        eb = {e["model_name"]: e for e in sb.evaluations(rb["id"])}
        ia, ib = _per_image(sa, ra["id"]), _per_image(sb, rb["id"])

        for what, key in (("code version", "code_version"), ("code sha256", "code_sha256"),
                          ("config sha256", "config_sha256")):
            if ra[key] != rb[key]:
                diff.changes.append(HashChange(what, ra[key], rb[key]))
        if sa.metric_rules != sb.metric_rules:
            # Same images, same predictions can give other figures under other rules: say so.
            diff.changes.append(HashChange("metric rules", sa.metric_rules, sb.metric_rules))
            diff.notes.append(f"metric rules changed ({sa.metric_rules} -> {sb.metric_rules}): "
                              f"{METRIC_RULES.get(sb.metric_rules, sb.metric_rules)}")
        fa = next(iter(ea.values()))["dataset_fingerprint"] if ea else None
        fb = next(iter(eb.values()))["dataset_fingerprint"] if eb else None
        if fa != fb:
            diff.changes.append(HashChange("dataset fingerprint", fa, fb))
        for pkg in sorted(set(ra["packages"]) | set(rb["packages"])):
            if ra["packages"].get(pkg) != rb["packages"].get(pkg):
                diff.changes.append(HashChange(f"package {pkg}", ra["packages"].get(pkg), rb["packages"].get(pkg)))
        for name in sorted(set(ea) | set(eb), key=lambda n: list(eb).index(n) if n in eb else len(eb)):
            sha_a = ea[name]["model_sha256"] if name in ea else None
            sha_b = eb[name]["model_sha256"] if name in eb else None
            if sha_a != sha_b:
                diff.changes.append(HashChange(f"weights {name}", sha_a, sha_b))

    for name in eb:
        if name not in ea:
            diff.notes.append(f"model {name} is new in {diff.b}: nothing to compare")
            continue
        common = sorted(set(ia[name]) & set(ib[name]))
        if len(common) < max(len(ia[name]), len(ib[name])):
            diff.notes.append(f"{name}: compared on the {len(common)} test images both versions share")
        for metric in COMPARED_METRICS:
            a = np.array([ia[name][i][metric] for i in common], float)  # None (undefined) -> NaN
            b = np.array([ib[name][i][metric] for i in common], float)
            both = ~(np.isnan(a) | np.isnan(b))  # pairs: images where the metric is defined in both
            a, b = a[both], b[both]
            low, high, p = paired_bootstrap(a, b, n_boot, seed)
            diff.metrics.append(MetricDelta(name, metric, float(a.mean()) if a.size else float("nan"),
                                            float(b.mean()) if b.size else float("nan"),
                                            float((b - a).mean()) if a.size else float("nan"),
                                            low, high, p, int(both.sum())))
    return diff
