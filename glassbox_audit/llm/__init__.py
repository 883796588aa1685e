"""Questions about an audit, answered by a small local LLM and checked against SQL.

The LLM only reads, and it never writes: for each field of an :class:`Intent` it scores this
run's own names and their aliases (:mod:`.vocabulary`) as continuations of a prompt and takes
the likeliest (:mod:`.reader`, :mod:`.scorer`); fixed, parameterised SQL on a read-only
connection gives the values; an independent rule-based parser reads the same question, and
the answer is ``verified`` only when both readings agree and the LLM's choices were clear. It
answers from the database alone: it imports neither the models nor the explainers.

Example::

    from glassbox_audit.llm import ask
    ans = ask("Which model has the highest recall?", "audits/default/v001/audit.sqlite", cfg.llm,
              log_path="audits/default/questions.sqlite")
    print(ans.status, ans.sentence)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ..errors import GlassBoxError
from .answer import STATUSES, Answer, Value, answer_question
from .catalog import Catalog
from .intent import Intent, parse_question
from .log import QUESTIONS_DB, log_answer, questions_db, read_queries
from .runtime import DEFAULT_MODEL, KNOWN_MODELS, LocalLLM, check_settings, load_model, resolve_model

__all__ = ["DEFAULT_MODEL", "KNOWN_MODELS", "QUESTIONS_DB", "STATUSES", "Answer", "Catalog", "Intent", "Value",
           "answer_question", "answer_standard_questions", "appendix_context", "ask", "check_settings",
           "load_configured_model", "parse_question", "questions_db", "read_queries"]

log = logging.getLogger(__name__)


def load_configured_model(llm_cfg: Any, models_dir: str | Path = "models") -> LocalLLM:
    """The model ``llm_cfg`` names, hash-checked and loaded (once per process)."""
    spec = resolve_model(llm_cfg, models_dir)
    return load_model(spec, n_ctx=llm_cfg.n_ctx, threads=llm_cfg.threads or os.cpu_count() or 1,
                      state_dir=prefix_state_dir(models_dir))


def prefix_state_dir(models_dir: str | Path = "models") -> Path:
    """Where evaluated prompt prefixes persist between processes (a cache: safe to delete)."""
    return Path(models_dir) / "llm" / "prefix-state"


def ask(question: str, db_path: str | Path, llm_cfg: Any, models_dir: str | Path = "models",
        log_path: str | Path | None = None, use_llm: bool = True, source: str = "ask") -> Answer:
    """Answer one question from ``db_path`` (read-only) and log it to ``log_path`` (if given)."""
    catalog = Catalog.load(db_path)
    llm = load_configured_model(llm_cfg, models_dir) if use_llm else None
    ans = answer_question(question, db_path, llm, catalog, min_margin=llm_cfg.min_margin, source=source)
    if log_path is not None:
        log_answer(log_path, ans, catalog)
    return ans


def answer_standard_questions(db_path: str | Path, cfg: Any) -> list[Answer]:
    """Answer ``cfg.llm.standard_questions`` into the run database ``db_path`` (before sealing),
    and ``cfg.llm.change_questions`` when the run stores a comparison with an earlier version.

    A model that cannot be had (not installed, hash mismatch) does not stop the audit: the
    questions are still answered by the parser alone and logged as ``needs review`` with the
    reason, so the dossier shows what happened.
    """
    if not cfg.llm.enabled or not cfg.llm.asks_questions:
        return []
    catalog = Catalog.load(db_path)
    llm: LocalLLM | None = None
    reason = ""
    try:
        llm = load_configured_model(cfg.llm, cfg.models_dir)
    except GlassBoxError as exc:
        reason = str(exc)
        log.warning("llm: %s; standard questions answered by the parser alone", reason)
    answers = []
    for q in cfg.llm.standard_questions + (cfg.llm.change_questions if catalog.against else []):
        ans = answer_question(q, db_path, llm, catalog, min_margin=cfg.llm.min_margin, source="standard")
        if reason:
            ans.llm_error = reason
        log_answer(db_path, ans, catalog)
        answers.append(ans)
        log.info("llm: %s -> %s", q, ans.status)
    return answers


def appendix_context(db: Any, questions_path: str | Path | None = None) -> dict[str, Any]:
    """What ``templates/_llm_appendix.html.j2`` needs, read from a run database.

    ``db`` is a path or an open :class:`~glassbox_audit.store.AuditStore`. Questions come from
    the run's own ``llm_queries`` and, when ``questions_path`` is given, from the audit's
    ``questions.sqlite`` (questions asked of this run after it was sealed).
    """
    path = Path(getattr(db, "path", db))
    catalog_run = None
    try:
        catalog_run = Catalog.load(path).run_id
    except GlassBoxError:
        pass
    rows = read_queries(path, run_id=catalog_run)
    for r in read_queries(questions_path, run_id=catalog_run) if questions_path else []:
        rows.append({**r, "source": "asked after sealing"})
    questions = []
    for r in rows:
        questions.append({
            "question": r["question"], "answer": r["answer"], "status": r["status"],
            "source": r["source"], "asked_at": r["asked_at"], "model": r["model"] or "none",
            "model_sha256": r["model_sha256"] or "", "llm_seconds": r["llm_seconds"],
            "llm_intent": _intent_text(r.get("llm_intent")), "parser_intent": _intent_text(r.get("parser_intent")),
            "sql": [s["sql"] for s in r.get("sql") or []], "error": r.get("error") or "",
        })
    models = sorted({(q["model"], q["model_sha256"]) for q in questions if q["model_sha256"]})
    counts = {s: sum(q["status"] == s for q in questions) for s in STATUSES}
    return {"llm_questions": questions, "llm_models": [{"label": m, "sha256": h} for m, h in models],
            "llm_counts": counts}


def _intent_text(d: dict | None) -> str:
    if not d:
        return ""
    try:
        return Intent(tuple(d["models"]), d["scope"], d.get("batch"), d.get("image"), tuple(d["metrics"]),
                      d["aggregate"]).describe()
    except (KeyError, TypeError):
        return ""
