"""The ``llm_queries`` log: every question, its prompt, the raw LLM output, both intents, the
SQL, the values, the answer, its status, the model's sha256 and the time taken.

Questions answered while a version is being built go into that version's ``audit.sqlite``
(and so into its dossier and manifest). Questions asked later of a sealed version go to
``audits/<name>/questions.sqlite`` beside the versions, because a sealed version never changes.

Example::

    log_answer(questions_db("audits", "default"), answer, catalog)
    rows = read_queries(questions_db("audits", "default"), version=2)
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlite_utils

from ..errors import StoreError
from ..query import open_readonly, run_query
from ..store import LLM_QUERY_COLS
from .answer import Answer
from .catalog import Catalog

__all__ = ["QUESTIONS_DB", "log_answer", "questions_db", "read_queries"]

QUESTIONS_DB = "questions.sqlite"


def questions_db(audits_dir: str | Path, audit: str) -> Path:
    """Where questions about an audit's sealed versions are logged."""
    return Path(audits_dir) / audit / QUESTIONS_DB


def _row(ans: Answer, catalog: Catalog) -> dict[str, Any]:
    def dump(value: Any) -> str:
        return json.dumps(value, sort_keys=True, default=str)

    return {
        "asked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "audit": catalog.audit,
        "version": catalog.version, "run_id": catalog.run_id, "source": ans.source, "question": ans.question,
        "prompt_json": dump(ans.prompt), "raw_output": ans.raw_output,
        "llm_intent_json": dump(ans.llm_intent.to_dict() if ans.llm_intent else None),
        "parser_intent_json": dump(ans.parser_intent.to_dict() if ans.parser_intent else None),
        "intent_json": dump(ans.intent.to_dict() if ans.intent else None),
        "sql_json": dump([{"sql": s, "params": p} for s, p in ans.sql]),
        "result_json": dump([v.__dict__ for v in ans.values]), "answer": ans.sentence, "status": ans.status,
        "model": ans.model_label, "model_sha256": ans.model_sha256, "llm_seconds": round(ans.llm_seconds, 4),
        "seconds": round(ans.seconds, 4), "error": ans.llm_error,
    }


def log_answer(path: str | Path, ans: Answer, catalog: Catalog) -> int:
    """Append one answer to the ``llm_queries`` table of ``path`` (created if missing); its id."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite_utils.Database(sqlite3.connect(path, timeout=30))
        try:
            with db.atomic():
                if "llm_queries" not in db.table_names():
                    db["llm_queries"].create(LLM_QUERY_COLS, pk="id")
                return int(db["llm_queries"].insert(_row(ans, catalog)).last_pk)
        finally:
            db.close()
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"{path}: cannot log the question ({exc})") from None


def read_queries(path: str | Path, run_id: str | None = None, version: int | None = None) -> list[dict[str, Any]]:
    """Logged questions, oldest first, JSON columns decoded (``intent_json`` -> ``intent``).
    Read-only; a database without the table has none."""
    path = Path(path)
    if not path.is_file():
        return []
    with open_readonly(path) as conn:
        if not run_query(conn, "select name from sqlite_master where type = 'table' and name = 'llm_queries'").rows:
            return []
        rows = run_query(conn, "select * from llm_queries where (? is null or run_id = ?) and "
                               "(? is null or version = ?) order by id", [run_id, run_id, version, version]).dicts()
    out = []
    for r in rows:
        out.append({(k[:-5] if k.endswith("_json") else k): (json.loads(v) if k.endswith("_json") and v else v)
                    for k, v in r.items()})
    return out
