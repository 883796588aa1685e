"""Read-only SQL over an audit database, for people and for the LLM's answers.

A user's SQL runs on a connection that cannot write, three times over: the file is opened
with ``mode=ro``; an authorizer refuses every statement other than reading (writes, schema
changes, ``ATTACH``, transactions, ``PRAGMA`` assignments and the pragmas that change
behaviour); extension loading is off. A progress handler stops runaway queries (a recursive
CTE that never ends) after ``timeout`` seconds.

Example::

    with open_readonly("audits/default/v001/audit.sqlite") as conn:
        result = run_query(conn, "select model_name, n_images from evaluations")
    print(format_result(result, "table"))
"""

from __future__ import annotations

import csv
import io
import json
import math
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .errors import StoreError
from .store import readonly_uri

__all__ = ["FORMATS", "QueryError", "QueryResult", "ReadOnlyConnection", "format_result", "open_readonly", "run_query"]

FORMATS = ("table", "csv", "json")


class QueryError(StoreError):
    """A query was refused or failed; the message says which and why."""


# Pragmas that only report; anything else (and any of these given a value) is refused.
_READ_PRAGMAS = frozenset({
    "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
    "foreign_key_list", "foreign_key_check", "database_list", "collation_list", "function_list",
    "module_list", "pragma_list", "compile_options", "integrity_check", "quick_check", "page_count",
    "page_size", "freelist_count", "schema_version", "user_version", "application_id", "encoding",
    "foreign_keys", "data_version",
})
# Pragmas that take a table or index name as their argument rather than a new value.
_NAME_ARG_PRAGMAS = frozenset({
    "table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list",
    "foreign_key_check", "integrity_check", "quick_check", "table_list",
})

_ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}

# The authorizer's action codes (sqlite3 shares some numbers with result codes, so no dir() trick).
_ACTION_NAMES = {
    1: "CREATE INDEX", 2: "CREATE TABLE", 3: "CREATE TEMP INDEX", 4: "CREATE TEMP TABLE",
    5: "CREATE TEMP TRIGGER", 6: "CREATE TEMP VIEW", 7: "CREATE TRIGGER", 8: "CREATE VIEW", 9: "DELETE",
    10: "DROP INDEX", 11: "DROP TABLE", 12: "DROP TEMP INDEX", 13: "DROP TEMP TABLE", 14: "DROP TEMP TRIGGER",
    15: "DROP TEMP VIEW", 16: "DROP TRIGGER", 17: "DROP VIEW", 18: "INSERT", 19: "PRAGMA", 20: "READ",
    21: "SELECT", 22: "TRANSACTION", 23: "UPDATE", 24: "ATTACH", 25: "DETACH", 26: "ALTER TABLE",
    27: "REINDEX", 28: "ANALYZE", 29: "CREATE VTABLE", 30: "DROP VTABLE", 31: "FUNCTION", 32: "SAVEPOINT",
    33: "RECURSIVE",
}


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    seconds: float = 0.0
    truncated: bool = False

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r)) for r in self.rows]


@dataclass
class _Guard:
    """The authorizer, remembering the first thing it refused so the error can name it."""

    refused: list[str] = field(default_factory=list)

    def __call__(self, action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None) -> int:
        if action in _ALLOWED:
            if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() == "load_extension":
                return self._deny("load_extension()")
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA:
            name = (arg1 or "").lower()
            if name in _READ_PRAGMAS and (arg2 is None or name in _NAME_ARG_PRAGMAS):
                return sqlite3.SQLITE_OK
            return self._deny(f"PRAGMA {name}" + (f" = {arg2}" if arg2 is not None else ""))
        what = _ACTION_NAMES.get(action, f"action {action}")
        if action == sqlite3.SQLITE_ATTACH:
            return self._deny(what)
        return self._deny(what + (f" {arg1}" if arg1 else ""))

    def _deny(self, what: str) -> int:
        self.refused.append(what)
        return sqlite3.SQLITE_DENY


class ReadOnlyConnection(sqlite3.Connection):
    """A connection that remembers its guard, file and time budget for :func:`run_query`."""

    guard: _Guard
    glassbox_path: Path
    glassbox_timeout: float


@contextmanager
def open_readonly(path: str | Path, timeout: float = 30.0) -> Iterator[ReadOnlyConnection]:
    """A connection to ``path`` that can only read (see the module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise QueryError(f"{p}: database not found")
    try:
        conn = sqlite3.connect(readonly_uri(p), uri=True, timeout=timeout, factory=ReadOnlyConnection)
    except sqlite3.Error as exc:
        raise QueryError(f"{p}: cannot open database read-only ({exc})") from None
    try:
        if hasattr(conn, "enable_load_extension"):
            conn.enable_load_extension(False)
        guard = _Guard()
        conn.set_authorizer(guard)
        conn.guard, conn.glassbox_path, conn.glassbox_timeout = guard, p, timeout
        yield conn
    finally:
        conn.close()


def run_query(conn: ReadOnlyConnection, sql: str, params: list[Any] | tuple[Any, ...] = (),
              max_rows: int = 0) -> QueryResult:
    """Run one statement on a connection from :func:`open_readonly` and fetch its rows.

    ``max_rows`` > 0 keeps the first rows only (``truncated`` says so). Refusals and SQL errors
    raise :class:`QueryError` with one line naming what was refused.
    """
    guard: _Guard | None = getattr(conn, "guard", None)
    if guard is None:
        raise QueryError("run_query needs a connection from open_readonly")
    guard.refused.clear()
    path = getattr(conn, "glassbox_path", "database")
    deadline = time.monotonic() + getattr(conn, "glassbox_timeout", 30.0)
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    t0 = time.perf_counter()
    try:
        cur = conn.execute(sql, list(params))
        columns = [d[0] for d in cur.description or []]
        rows = cur.fetchmany(max_rows + 1) if max_rows > 0 else cur.fetchall()
    except sqlite3.ProgrammingError as exc:  # e.g. two statements at once
        raise QueryError(f"{path}: query refused: {exc}") from None
    except sqlite3.Error as exc:
        if guard.refused:
            named = [r for r in guard.refused if "sqlite_master" not in r and "sqlite_temp_master" not in r]
            keyword = (sql.split() or ["?"])[0].upper()
            raise QueryError(f"{path}: query refused: {keyword} denied ({(named or guard.refused)[0]}); "
                             "the connection is read-only") from None
        if "interrupted" in str(exc):
            raise QueryError(f"{path}: query stopped after {getattr(conn, 'glassbox_timeout', 30.0):g} s") from None
        raise QueryError(f"{path}: query failed: {exc}") from None
    finally:
        conn.set_progress_handler(None, 0)
    truncated = max_rows > 0 and len(rows) > max_rows
    if truncated:
        rows = rows[:max_rows]
    return QueryResult(columns, [tuple(r) for r in rows], time.perf_counter() - t0, truncated)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return str(value)


def format_result(result: QueryResult, fmt: str = "table") -> str:
    """Render as an aligned text table, CSV (header first) or a JSON list of objects."""
    if fmt == "json":
        rows = [{k: (v.hex() if isinstance(v, bytes) else v) for k, v in d.items()} for d in result.dicts()]
        return json.dumps(rows, indent=2, default=str)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows([["" if v is None else (v.hex() if isinstance(v, bytes) else v) for v in r]
                          for r in result.rows])
        return buf.getvalue().rstrip("\n")
    if fmt != "table":
        raise QueryError(f"unknown output format {fmt!r} (one of {', '.join(FORMATS)})")
    cells = [[_cell(v) for v in r] for r in result.rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(result.columns)]
    numeric = [all(isinstance(r[i], (int, float)) or r[i] is None for r in result.rows) and bool(result.rows)
               for i in range(len(result.columns))]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line(result.columns), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    if result.truncated:
        out.append(f"(first {len(result.rows)} rows)")
    return "\n".join(out)
