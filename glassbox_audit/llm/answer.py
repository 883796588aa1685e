"""Intent -> parameterised SQL -> values -> one answer sentence, with its status.

Every number in an answer comes from a fixed SQL statement of this module run on a read-only
connection; names from the intent travel only as parameters, and metric columns are picked
from a fixed table, so nothing the LLM writes becomes SQL. Status:

- ``verified``: the LLM's reading and the rule parser's agree after canonicalisation, every
  choice the LLM made beat its runner-up by ``min_margin``, neither reader left anything
  unresolved, and SQL returned exactly the values the intent asks for;
- ``needs review``: anything less (or no LLM): both readings and both values are shown;
- ``not found``: the question names something the database does not hold (batch 9999, model 7,
  a metric no run stores);
- ``not about this audit``: nothing in the question names anything an audit holds; no number.

Example::

    ans = answer_question("Which model has the highest recall?", db_path, llm)
    print(ans.status, ans.sentence)
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import LlmConfig
from ..query import ReadOnlyConnection, open_readonly, run_query
from .catalog import ASKABLE_DATASET_METRICS, ASKABLE_IMAGE_METRICS, METRIC_LABELS, Catalog
from .intent import NO_COMPARISON, Intent, change_not_compared, is_about_audit, parse_question

__all__ = ["Answer", "Change", "STATUSES", "Value", "answer_question", "execute"]

log = logging.getLogger(__name__)

STATUSES = ("verified", "needs review", "not found", "not about this audit")

# Metric -> column of image_metrics / batch_metrics. Fixed text: the only identifiers SQL gets.
# Rankings leave undefined values (NULL: recall of a lesion-free image) out: SQLite sorts NULL
# first, so "the worst image by recall" would otherwise be one without a recall.
_COLUMNS = {m: m for m in ASKABLE_IMAGE_METRICS}

_SQL_DATASET = ("select e.model_name as model, m.metric as metric, m.value as value "
                "from evaluation_metrics m join evaluations e on e.id = m.evaluation_id "
                "where e.run_id = ? and e.model_name = ? and m.averaging = ? and m.metric = ?")
_SQL_BATCH_MICRO = ("select e.model_name as model, b.batch_index as batch, b.{col} as value "
                    "from batch_metrics b join evaluations e on e.id = b.evaluation_id "
                    "where e.run_id = ? and e.model_name = ? and b.batch_index = ?")
_SQL_BATCH_MACRO = ("select e.model_name as model, i.batch_index as batch, avg(i.{col}) as value "
                    "from image_metrics i join evaluations e on e.id = i.evaluation_id "
                    "where e.run_id = ? and e.model_name = ? and i.batch_index = ? group by i.batch_index")
_SQL_IMAGE = ("select e.model_name as model, i.image_id as image, i.{col} as value "
              "from image_metrics i join evaluations e on e.id = i.evaluation_id "
              "where e.run_id = ? and e.model_name = ? and i.image_id = ?")
_SQL_RANK_BATCHES_MACRO = ("select e.model_name as model, i.batch_index as batch, avg(i.{col}) as value "
                           "from image_metrics i join evaluations e on e.id = i.evaluation_id "
                           "where e.run_id = ? and e.model_name = ? group by i.batch_index "
                           "having value is not null order by value {order}, batch limit 1")
_SQL_RANK_BATCHES_MICRO = ("select e.model_name as model, b.batch_index as batch, b.{col} as value "
                           "from batch_metrics b join evaluations e on e.id = b.evaluation_id "
                           "where e.run_id = ? and e.model_name = ? and b.{col} is not null "
                           "order by value {order}, batch limit 1")
# The stored comparison with the previous version (compare.diff_databases): image means paired
# image by image, the delta's bootstrap interval and the run's own verdicts.
_SQL_CHANGE = ("select model, metric, against_version, a, b, delta, ci_low, ci_high, significant, regression "
               "from comparisons where run_id = ? and model = ? and metric = ?")
_SQL_RANK_IMAGES = ("select e.model_name as model, i.image_id as image, i.{col} as value, "
                    "(select count(*) from image_metrics j where j.evaluation_id = i.evaluation_id "
                    "and j.{col} = i.{col}) as ties "
                    "from image_metrics i join evaluations e on e.id = i.evaluation_id "
                    "where e.run_id = ? and e.model_name = ? and i.{col} is not null "
                    "order by value {order}, image limit 1")


@dataclass
class Value:
    model: str
    metric: str
    value: float | None
    averaging: str
    batch: int | None = None
    image: str | None = None
    ties: int = 1  # images sharing this extreme value (rankings over images)

    def key(self) -> tuple:
        return (self.model, self.metric, self.batch, self.image)


@dataclass
class Change(Value):
    """A change since the previous version: ``value`` is the delta (this version less that one)."""

    against: str = ""
    before: float | None = None
    after: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    significant: bool = False
    regression: bool = False


@dataclass
class Execution:
    values: list[Value]
    sql: list[tuple[str, list[Any]]]
    winners: dict[str, list[str]] = field(default_factory=dict)  # metric -> best/worst model(s)


@dataclass
class Answer:
    question: str
    status: str
    sentence: str
    values: list[Value] = field(default_factory=list)
    winners: dict[str, list[str]] = field(default_factory=dict)  # metric -> model(s), for "which model" questions
    intent: Intent | None = None  # the intent the values answer (the LLM's, else the parser's)
    llm_intent: Intent | None = None
    parser_intent: Intent | None = None
    parser_values: list[Value] = field(default_factory=list)
    sql: list[tuple[str, list[Any]]] = field(default_factory=list)
    prompt: list[dict[str, str]] = field(default_factory=list)
    raw_output: str = ""  # the LLM's choices, field by field, with their margins
    llm_margin: float | None = None
    llm_error: str = ""
    model_label: str = ""
    model_sha256: str = ""
    llm_seconds: float = 0.0
    seconds: float = 0.0
    source: str = "ask"

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question, "status": self.status, "answer": self.sentence,
            "values": [v.__dict__ for v in self.values], "winners": self.winners,
            "intent": self.intent.to_dict() if self.intent else None,
            "llm_intent": self.llm_intent.to_dict() if self.llm_intent else None,
            "parser_intent": self.parser_intent.to_dict() if self.parser_intent else None,
            "parser_values": [v.__dict__ for v in self.parser_values],
            "sql": [{"sql": s, "params": p} for s, p in self.sql],
            "raw_output": self.raw_output, "llm_error": self.llm_error,
            "model": self.model_label, "model_sha256": self.model_sha256,
            "llm_seconds": round(self.llm_seconds, 4), "seconds": round(self.seconds, 4),
        }


def _averaging(metric: str, aggregate: str, scope: str = "dataset") -> str:
    if scope == "change":
        return "change"
    if metric in ASKABLE_DATASET_METRICS:
        return "dataset"
    return "micro" if aggregate == "micro" else "macro"


def execute(intent: Intent, conn: ReadOnlyConnection, catalog: Catalog) -> Execution:
    """The values ``intent`` asks for, each from one parameterised statement."""
    run = catalog.run_id
    out = Execution([], [])

    def q(sql: str, params: list[Any]) -> list[dict[str, Any]]:
        out.sql.append((sql, params))
        return run_query(conn, sql, params).dicts()

    ranking_units = intent.aggregate in ("max", "min") and intent.scope in ("batch", "image") and \
        intent.batch is None and intent.image is None
    order = "desc" if intent.aggregate == "max" else "asc"
    for metric in intent.metrics:
        avg = _averaging(metric, intent.aggregate, intent.scope)
        if intent.scope in ("batch", "image") and metric in ASKABLE_DATASET_METRICS:
            continue  # no per-batch or per-image figure: reported as not found
        col = _COLUMNS.get(metric)
        for model in intent.models:
            if intent.scope == "change":
                rows = q(_SQL_CHANGE, [run, model, metric])
                out.values += [Change(model, metric, r["delta"], avg, against=r["against_version"], before=r["a"],
                                      after=r["b"], ci_low=r["ci_low"], ci_high=r["ci_high"],
                                      significant=bool(r["significant"]), regression=bool(r["regression"]))
                               for r in rows]
            elif intent.scope == "dataset":
                rows = q(_SQL_DATASET, [run, model, avg, metric])
                out.values += [Value(model, metric, r["value"], avg) for r in rows]
            elif ranking_units and intent.scope == "batch":
                sql = (_SQL_RANK_BATCHES_MICRO if avg == "micro" else _SQL_RANK_BATCHES_MACRO)
                rows = q(sql.format(col=col, order=order), [run, model])
                out.values += [Value(model, metric, r["value"], avg, batch=r["batch"]) for r in rows]
            elif ranking_units and intent.scope == "image":
                rows = q(_SQL_RANK_IMAGES.format(col=col, order=order), [run, model])
                out.values += [Value(model, metric, r["value"], "image", image=r["image"], ties=r["ties"])
                               for r in rows]
            elif intent.scope == "batch":
                sql = _SQL_BATCH_MICRO if avg == "micro" else _SQL_BATCH_MACRO
                rows = q(sql.format(col=col), [run, model, intent.batch])
                out.values += [Value(model, metric, r["value"], avg, batch=r["batch"]) for r in rows]
            else:
                rows = q(_SQL_IMAGE.format(col=col), [run, model, intent.image])
                out.values += [Value(model, metric, r["value"], "image", image=r["image"]) for r in rows]
        if intent.aggregate in ("max", "min") and not ranking_units:
            vals = [v for v in out.values if v.metric == metric and v.value is not None]
            if vals:
                best = (max if intent.aggregate == "max" else min)(v.value for v in vals)
                out.winners[metric] = [v.model for v in vals if v.value == best]
    return out


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _where(intent: Intent) -> str:
    if intent.scope == "batch":
        return f"batch {intent.batch}" if intent.batch is not None else "over batches"
    if intent.scope == "image":
        return f"image {intent.image}" if intent.image is not None else "over images"
    return "test set"


_AVG_TEXT = {"macro": "image mean", "micro": "pooled pixels", "dataset": "whole test set", "image": "per image",
             "change": "image mean"}


def _signed(v: float | None) -> str:
    return "n/a" if v is None else f"{v:+.4f}"


def _change_text(v: Change) -> str:
    verdict = ("significant" if v.significant else "not significant") + (", flagged as a regression"
                                                                        if v.regression else "")
    return (f"{v.model} {_fmt(v.before)} -> {_fmt(v.after)} ({_signed(v.value)}, 95% CI {_signed(v.ci_low)} to "
            f"{_signed(v.ci_high)}, {verdict})")


def _change_sentence(intent: Intent, ex: Execution, metric: str, vals: list[Value]) -> str:
    label = METRIC_LABELS.get(metric, metric)
    since = f"since {vals[0].against}" if isinstance(vals[0], Change) and vals[0].against else "since the previous version"
    changes = "; ".join(_change_text(v) for v in vals if isinstance(v, Change))
    if metric in ex.winners:
        win = set(ex.winners[metric])
        value = next(v.value for v in vals if v.model in win)
        # The extreme change is a drop or a rise by its sign, whichever way the question ranked.
        if intent.aggregate == "max":
            word = "Largest rise" if value > 0 else "Smallest drop"
        else:
            word = "Largest drop" if value < 0 else "Smallest rise"
        return (f"{word} in {label} (image mean, this version less {vals[0].against}): "
                f"{' and '.join(sorted(win, key=intent.models.index))}, {_signed(value)} ({changes})")
    return f"Change in {label} (image mean) {since}: {changes}"


def sentence(intent: Intent, ex: Execution) -> str:
    parts = []
    for metric in intent.metrics:
        vals = [v for v in ex.values if v.metric == metric]
        if not vals:
            continue
        label = METRIC_LABELS.get(metric, metric)
        avg = _AVG_TEXT[vals[0].averaging]
        if intent.scope == "change":
            parts.append(_change_sentence(intent, ex, metric, vals))
        elif metric in ex.winners:
            word = "Highest" if intent.aggregate == "max" else "Lowest"
            win = set(ex.winners[metric])
            value = next(v.value for v in vals if v.model in win)
            parts.append(f"{word} {label} ({avg}) on {_where(intent)}: {' and '.join(sorted(win, key=intent.models.index))}"
                         f", {_fmt(value)} (" + ", ".join(f"{v.model} {_fmt(v.value)}" for v in vals) + ")")
        elif intent.scope in ("batch", "image") and intent.batch is None and intent.image is None \
                and intent.aggregate in ("max", "min"):
            word = "Highest" if intent.aggregate == "max" else "Lowest"
            items = []
            for v in vals:
                unit = f"batch {v.batch}" if v.batch is not None else f"image {v.image}"
                tie = f", tied with {v.ties - 1} other image(s)" if v.ties > 1 else ""
                items.append(f"{v.model}: {unit} ({_fmt(v.value)}{tie})")
            parts.append(f"{word} {label} ({avg}) {_where(intent)}: " + "; ".join(items))
        else:
            parts.append(f"{label[0].upper() + label[1:]} ({avg}) on {_where(intent)}: "
                         + ", ".join(f"{v.model} {_fmt(v.value)}" for v in vals))
    return ". ".join(parts) + "." if parts else ""


def _missing(intent: Intent, catalog: Catalog) -> list[str]:
    missing = list(intent.missing)
    if not intent.models and not any("model" in m for m in missing):
        missing.append("the model named")
    if intent.scope == "batch" and intent.batch is not None and intent.batch not in catalog.batches:
        missing.append(f"batch {intent.batch}")
    if intent.scope == "change":
        if catalog.against is None:
            missing.append(NO_COMPARISON)
        else:
            missing += [change_not_compared(m, catalog) for m in intent.metrics if m not in catalog.compared]
    elif intent.scope != "dataset":
        missing += [f"{METRIC_LABELS[m]} per {intent.scope} (recorded for the whole test set only)"
                    for m in intent.metrics if m in ASKABLE_DATASET_METRICS]
    return list(dict.fromkeys(missing))


def _not_found_sentence(missing: list[str], catalog: Catalog) -> str:
    known = []
    text = " ".join(missing)
    if "batch" in text and catalog.batches:
        known.append(f"batches are {catalog.batches[0]}..{catalog.batches[-1]}")
    if "version" in text:
        known.append(f"this run is compared with {catalog.against}" if catalog.against
                     else "this run has no stored comparison")
    if "model" in text:
        known.append("models are " + ", ".join(f"{m.number} {m.name}" for m in catalog.models))
    return f"Not found in audit {catalog.audit} v{catalog.version:03d}: {'; '.join(missing)}" + \
        (f" ({'; '.join(known)})." if known else ".")


def _complete(intent: Intent, ex: Execution) -> bool:
    """SQL returned exactly the values ``intent`` asks for: one per model and metric (a ranking
    of batches or images gives one per model and metric too), none missing."""
    return len(ex.values) == len(intent.models) * len(intent.metrics) and all(v.value is not None for v in ex.values)


def answer_question(question: str, db_path: str | Path, llm: Any | None = None, catalog: Catalog | None = None,
                    source: str = "ask", min_margin: float = LlmConfig.min_margin,
                    use_parser: bool = True) -> Answer:
    """Answer ``question`` from the database at ``db_path`` (opened read-only).

    ``llm`` is a :class:`~.runtime.LocalLLM` (None: the parser's reading alone, status ``needs
    review``). ``use_parser=False`` answers from the LLM's reading alone (never ``verified``):
    what the benchmark and the tests use to measure the model's reading by itself.
    """
    t0 = time.perf_counter()
    catalog = catalog or Catalog.load(db_path)
    parsed = parse_question(question, catalog) if use_parser else None
    ans = Answer(question, "needs review", "", parser_intent=parsed, source=source)
    reading = None
    if llm is not None:
        ans.model_label, ans.model_sha256 = llm.spec.label, llm.sha256
        reading = llm.read(question, catalog)
        ans.llm_seconds, ans.llm_margin = reading.seconds, reading.margin if reading.decisions else None
        ans.raw_output = reading.describe()
        ans.prompt = [{"role": "prompt", "content": reading.prompt}]
        ans.llm_intent = reading.intent
    else:
        ans.llm_error = "no LLM loaded"

    about = is_about_audit(question, catalog) if use_parser else (reading is not None and reading.about)
    if not about:
        ans.status = "not about this audit"
        ans.sentence = (f"Not a question about audit {catalog.audit} v{catalog.version:03d}: it names no model, "
                        "metric, batch or image of it.")
        ans.seconds = time.perf_counter() - t0
        return ans
    primary = parsed if parsed is not None else ans.llm_intent
    missing = _missing(primary, catalog) if primary is not None else []
    if missing:
        ans.status, ans.intent = "not found", primary
        ans.sentence = _not_found_sentence(missing, catalog)
        ans.seconds = time.perf_counter() - t0
        return ans
    if primary is None:  # LLM alone, and it read the question as not about the audit
        ans.status = "not about this audit"
        ans.sentence = "Not a question about this audit."
        ans.seconds = time.perf_counter() - t0
        return ans

    with open_readonly(db_path) as conn:
        p_canon = p_exec = None
        if parsed is not None:
            p_canon = parsed.canonical(catalog)
            p_exec = execute(p_canon, conn, catalog)
            ans.parser_values = p_exec.values
        if ans.llm_intent is not None and not ans.llm_intent.missing:
            l_canon = ans.llm_intent.canonical(catalog)
            l_exec = execute(l_canon, conn, catalog)
            ans.intent, ans.values, ans.sql, ans.winners = l_canon, l_exec.values, l_exec.sql, l_exec.winners
            agree = p_canon is not None and l_canon == p_canon
            sure = reading is not None and reading.margin >= min_margin
            ans.status = "verified" if agree and sure and _complete(l_canon, l_exec) else "needs review"
            text = sentence(l_canon, l_exec)
            if agree:
                ans.sentence = text or "No stored value answers this question."
                if not sure:
                    ans.sentence += f" (LLM reading not clear enough: margin {reading.margin:.2f} < {min_margin})"
            elif p_canon is None:
                ans.sentence = f"LLM read: {l_canon.describe()}: {text or 'no value'}"
            else:
                ans.sentence = (f"LLM read: {l_canon.describe()}: {text or 'no value'} "
                                f"Parser read: {p_canon.describe()}: {sentence(p_canon, p_exec) or 'no value'}")
        elif p_canon is not None:
            why = ans.llm_error or ("LLM read: " + "; ".join(ans.llm_intent.missing) if ans.llm_intent
                                    else "LLM read: not about the audit")
            ans.intent, ans.values, ans.sql, ans.winners = p_canon, p_exec.values, p_exec.sql, p_exec.winners
            ans.sentence = f"{why}. Parser read: {p_canon.describe()}: {sentence(p_canon, p_exec) or 'no value'}"
    if not ans.values and not ans.parser_values:
        ans.status = "not found"
        ans.sentence = "Not found: no stored value answers this question."
    ans.seconds = time.perf_counter() - t0
    return ans


def values_json(values: list[Value]) -> str:
    return json.dumps([v.__dict__ for v in values], sort_keys=True)
