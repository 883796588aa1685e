"""Fleets: many audits in one go, from one TOML file, on one executor.

A fleet file lists audits; each is a normal audit configuration (a config file and/or
``key=value`` overrides, as ``glassbox-audit run`` takes them) plus a few shorthands::

    [defaults]                              # optional: every audit starts from these
    set = ["report.pdf=false"]

    [executor]                              # optional: where every audit's heavy stages run
    kind = "dask"                           # the keys of a config's [executor] section
    scheduler = "tcp://10.0.0.5:8786"       # empty or absent: a LocalCluster on this machine

    [[audit]]
    name = "isic2017"                       # required, unique
    config = "configs/isic2017.toml"        # relative to the fleet file
    data = "../shared/data/isic2017-256"    # data.root (relative to the fleet file)
    layout = "isic"                         # data.layout
    models = "models/isic2017"              # models_dir (relative to the fleet file)
    train = "never"                         # train.mode
    selected_batches = [3, 7]               # evaluate.selected_batches
    threshold = 0.5                         # evaluate.threshold
    acceptance = ["dice >= 0.85"]           # report.acceptance
    set = ["evaluate.tta=true"]             # any other key (after the defaults' set)

Every audit's configuration is built and checked before the first one runs, so a bad key
in the last audit costs seconds, not a night. ``run_fleet`` then runs them in order on one
executor (one Dask cluster for the whole fleet) and returns one :class:`FleetOutcome` per
audit; an audit that fails with a :class:`~glassbox_audit.errors.GlassBoxError` is
reported and the others still run.

Example::

    from glassbox_audit.fleet import load_fleet, run_fleet, format_summary
    outcomes = run_fleet(load_fleet("fleet.toml"))
    print(format_summary(outcomes))
"""

from __future__ import annotations

import dataclasses
import logging
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import SAFE_NAME, AuditConfig, ExecutorConfig, from_dict, load_config
from .errors import ConfigError, GlassBoxError
from .metrics import HEADLINE_METRICS

__all__ = ["Fleet", "FleetAudit", "FleetOutcome", "format_summary", "load_fleet", "run_fleet"]

log = logging.getLogger(__name__)

# Shorthand -> (dotted config key, a path relative to the fleet file?)
SHORTHANDS: dict[str, tuple[str, bool]] = {
    "data": ("data.root", True),
    "layout": ("data.layout", False),
    "models": ("models_dir", True),
    "audits": ("audits_dir", True),
    "train": ("train.mode", False),
    "selected_batches": ("evaluate.selected_batches", False),
    "threshold": ("evaluate.threshold", False),
    "acceptance": ("report.acceptance", False),
}
ENTRY_KEYS = ("name", "config", "set", *SHORTHANDS)
TOP_KEYS = ("defaults", "executor", "audit")
FIGURES = HEADLINE_METRICS  # the summary's key figures (macro; the ISIC score)


@dataclass
class FleetAudit:
    """One audit of a fleet: its name, config file, overrides and shorthand settings."""

    name: str
    config: Path | None
    overrides: list[str]
    settings: dict[str, Any]  # dotted key -> value, from the shorthands


@dataclass
class Fleet:
    path: Path
    audits: list[FleetAudit]
    executor: ExecutorConfig

    def configs(self, overrides: list[str] | None = None, **executor: Any) -> list[AuditConfig]:
        """Every audit's configuration, checked. ``overrides`` (``key=value``) apply to every audit
        after its own; ``executor`` overrides fields of the fleet's executor (None leaves a field as
        the file has it). Errors name the fleet file and the audit."""
        ex = dataclasses.replace(self.executor, **{k: v for k, v in executor.items() if v is not None})
        flags = {f"executor__{k}": v for k, v in dataclasses.asdict(ex).items()}
        out = []
        for a in self.audits:
            settings = {k.replace(".", "__"): v for k, v in a.settings.items()}
            try:
                out.append(load_config(a.config, a.overrides + list(overrides or []), name=a.name,
                                       **settings, **flags))
            except ConfigError as exc:
                raise ConfigError(f"{self.path}: audit {a.name!r}: {exc}") from None
        return out


def _problem(path: Path, message: str) -> ConfigError:
    return ConfigError(f"{path}: {message}")


def _entry(path: Path, raw: Any, where: str, defaults: dict[str, Any] | None) -> FleetAudit:
    """One [[audit]] table (or [defaults] when ``defaults`` is None) merged over the defaults."""
    if not isinstance(raw, dict):
        raise _problem(path, f"{where} must be a table, got {raw!r}")
    allowed = ENTRY_KEYS if defaults is not None else tuple(k for k in ENTRY_KEYS if k != "name")
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise _problem(path, f"{where}: unknown key {unknown[0]!r} (known: {', '.join(allowed)})")
    base = defaults or {}
    name = raw.get("name", "")
    if defaults is not None:
        if not isinstance(name, str) or not name:
            raise _problem(path, f"{where}: 'name' is required (a string)")
        if not SAFE_NAME.match(name):
            raise _problem(path, f"{where}: name {name!r} must be 1-64 letters, digits, '.', '_' or '-' "
                                 "starting with a letter or digit")
    sets = raw.get("set", [])
    if not isinstance(sets, list) or not all(isinstance(s, str) and "=" in s for s in sets):
        raise _problem(path, f"{where}: 'set' must be a list of \"key.path=value\" strings, got {sets!r}")
    config = raw.get("config", base.get("config"))
    if config is not None and not isinstance(config, (str, Path)):
        raise _problem(path, f"{where}: 'config' must be a path (string), got {config!r}")
    if isinstance(config, str):
        config = path.parent / config
        if not config.is_file():
            raise _problem(path, f"{where}: config file {config} not found")
    settings = dict(base.get("settings", {}))
    for key, (dotted, is_path) in SHORTHANDS.items():
        if key in raw:
            value = raw[key]
            if is_path:
                if not isinstance(value, str) or not value:
                    raise _problem(path, f"{where}: {key!r} must be a path (string), got {value!r}")
                value = str(path.parent / value)
            settings[dotted] = value
    return FleetAudit(name, config, list(base.get("overrides", [])) + list(sets), settings)


def load_fleet(path: str | Path) -> Fleet:
    """Read and check a fleet file; a problem raises :class:`ConfigError` naming the file."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _problem(path, "fleet file not found") from None
    except IsADirectoryError:
        raise _problem(path, "is a folder, not a fleet file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise _problem(path, f"not valid TOML: {exc}") from None
    unknown = sorted(set(doc) - set(TOP_KEYS))
    if unknown:
        raise _problem(path, f"unknown key {unknown[0]!r} (known at the top: {', '.join(TOP_KEYS)}; "
                             "audits are [[audit]] tables)")
    d = _entry(path, doc.get("defaults", {}), "[defaults]", None)
    defaults = {"config": d.config, "overrides": d.overrides, "settings": d.settings}
    raw_executor = doc.get("executor", {})
    if not isinstance(raw_executor, dict):
        raise _problem(path, f"[executor] must be a table, got {raw_executor!r}")
    try:
        executor = from_dict(ExecutorConfig, raw_executor, "executor")
    except ConfigError as exc:
        raise _problem(path, str(exc)) from None
    raw_audits = doc.get("audit", [])
    if not isinstance(raw_audits, list) or not raw_audits:
        raise _problem(path, "no audits: add [[audit]] tables, each with at least a name")
    audits = [_entry(path, raw, f"audit {i + 1}", defaults) for i, raw in enumerate(raw_audits)]
    names = [a.name for a in audits]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise _problem(path, f"audit name {dupes[0]!r} appears {names.count(dupes[0])} times (names must be unique)")
    return Fleet(path, audits, executor)


@dataclass
class FleetOutcome:
    """What one audit of a fleet gave."""

    name: str
    version: str = ""
    path: Path | None = None
    figures: dict[str, dict[str, float]] = field(default_factory=dict)  # variant -> key figures
    failed: dict[str, list[str]] = field(default_factory=dict)  # variant -> acceptance criteria not met
    regressions: dict[str, list[str]] = field(default_factory=dict)  # variant -> "dice -0.0123"
    error: str = ""
    seconds: float = 0.0

    @property
    def status(self) -> str:
        if self.error:
            return "ERROR"
        parts = (["FAIL"] if any(self.failed.values()) else []) + (["REGRESSED"] if any(self.regressions.values()) else [])
        return ", ".join(parts) or "PASS"

    @property
    def ok(self) -> bool:
        return self.status == "PASS"


def _outcome(cfg: AuditConfig, result: Any) -> FleetOutcome:
    from .report import acceptance_rows  # the dossier's own acceptance rule, so both say the same

    names = list(result.metrics)
    rows = acceptance_rows(cfg.report.acceptance, [{"metrics": result.metrics[n]} for n in names])
    out = FleetOutcome(cfg.name, result.version, result.path, seconds=result.seconds)
    for k, n in enumerate(names):
        m = result.metrics[n]
        out.figures[n] = {f: m["macro"].get(f, m["dataset"].get(f)) for f in FIGURES}
        out.failed[n] = [r["criterion"] for r in rows if not r["passes"][k]]
        out.regressions[n] = [f"{r.metric} {r.delta:+.4f}" for r in result.regressions if r.model == n]
    return out


def run_fleet(fleet: Fleet, command: str = "glassbox_audit.run_fleet()", overrides: list[str] | None = None,
              **executor: Any) -> list[FleetOutcome]:
    """Run every audit of ``fleet`` in order on one executor; one outcome per audit.

    ``overrides``: ``key=value`` for every audit. ``executor``: fields of the fleet's ``[executor]`` to override (``kind="dask"``,
    ``scheduler="tcp://..."``). Configurations are all checked first (a bad one raises
    :class:`ConfigError` before anything runs); an audit that fails later is reported in its
    outcome and the next one runs.
    """
    from .executor import make_executor
    from .pipeline import run_audit

    configs = fleet.configs(overrides, **executor)
    outcomes = []
    with make_executor(configs[0].executor) as ex:
        for cfg in configs:
            t0 = time.perf_counter()
            log.info("fleet: audit %s (%d of %d)", cfg.name, len(outcomes) + 1, len(configs))
            try:
                outcomes.append(_outcome(cfg, run_audit(cfg, command=command, executor=ex)))
            except GlassBoxError as exc:
                log.error("fleet: audit %s failed: %s", cfg.name, exc)
                outcomes.append(FleetOutcome(cfg.name, error=str(exc), seconds=time.perf_counter() - t0))
    return outcomes


def format_summary(outcomes: list[FleetOutcome]) -> str:
    """The fleet's summary table: a row per audit and variant, then one line of totals."""
    head = ["audit", "version", "variant", "Dice", "IoU", "thr. Jaccard", "regressions", "acceptance", "result"]
    rows = []
    for o in outcomes:
        if o.error:
            rows.append([o.name, "-", "-", "", "", "", "", "", f"ERROR: {o.error}"])
            continue
        for k, (variant, fig) in enumerate(o.figures.items()):
            rows.append([o.name if k == 0 else "", o.version if k == 0 else "", variant,
                         *(f"{fig[f]:.4f}" if fig[f] is not None else "-" for f in FIGURES),
                         ", ".join(o.regressions.get(variant, [])) or "none",
                         "fail: " + ", ".join(o.failed[variant]) if o.failed.get(variant) else "pass",
                         o.status if k == 0 else ""])
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head) - 1)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in [head, *rows]]
    lines = [line.rstrip() for line in lines]
    counts = {s: sum(o.status == s for o in outcomes) for s in ("PASS", "ERROR")}
    n_bad = len(outcomes) - counts["PASS"]
    lines.append(f"{len(outcomes)} audit(s): {counts['PASS']} pass, {n_bad - counts['ERROR']} fail or regressed, "
                 f"{counts['ERROR']} error(s)")
    return "\n".join(lines)
