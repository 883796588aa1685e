"""The read-only SQL connection: reads work, every kind of write or escape is refused."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest
from click.testing import CliRunner
from llm_testdb import build_audit_db

from glassbox_audit.cli import cli
from glassbox_audit.query import QueryError, format_result, open_readonly, run_query


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    # Shared: every test here either only reads or checks that the file did not change.
    return build_audit_db(tmp_path_factory.mktemp("query") / "audit.sqlite")


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_select_returns_rows_and_columns(db):
    with open_readonly(db) as conn:
        r = run_query(conn, "select model_name, n_images from evaluations order by id")
    assert r.columns == ["model_name", "n_images"]
    assert r.rows == [("precision-optimized", 14), ("balanced", 14), ("recall-optimized", 14)]


@pytest.mark.parametrize("sql, denied", [
    ("DELETE FROM runs", "DELETE"),
    ("DROP TABLE image_metrics", "DROP"),
    ("UPDATE evaluation_metrics SET value = 1", "UPDATE"),
    ("INSERT INTO meta VALUES ('x', 'y')", "INSERT"),
    ("CREATE TABLE evil (a)", "CREATE"),
    ("ATTACH DATABASE ':memory:' AS other", "ATTACH"),
    ("PRAGMA writable_schema = 1", "PRAGMA"),
    ("PRAGMA writable_schema", "PRAGMA"),
    ("PRAGMA journal_mode = delete", "PRAGMA"),
    ("VACUUM", "VACUUM"),
    ("BEGIN", "BEGIN"),
    ("SELECT load_extension('/tmp/x.so')", "load_extension"),
])
def test_writes_attach_and_pragma_changes_are_refused_and_leave_the_file_unchanged(db, sql, denied):
    before = _digest(db)
    with open_readonly(db) as conn:
        with pytest.raises(QueryError, match="refused") as exc:
            run_query(conn, sql)
    assert denied in str(exc.value)
    assert _digest(db) == before


def test_a_second_statement_cannot_ride_along(db):
    with open_readonly(db) as conn:
        with pytest.raises(QueryError, match="one statement"):
            run_query(conn, "select 1; delete from runs")
    with sqlite3.connect(db) as check:
        assert check.execute("select count(*) from runs").fetchone()[0] == 1


def test_reporting_pragmas_are_allowed(db):
    with open_readonly(db) as conn:
        cols = run_query(conn, "PRAGMA table_info(evaluations)").dicts()
        assert "model_name" in {c["name"] for c in cols}
        assert run_query(conn, "PRAGMA foreign_keys").rows


def test_runaway_query_is_stopped(db):
    with open_readonly(db, timeout=0.3) as conn:
        with pytest.raises(QueryError, match="stopped"):
            run_query(conn, "with recursive c(x) as (select 1 union all select x + 1 from c) select count(*) from c")


def test_the_file_itself_is_opened_read_only_even_without_the_authorizer(db):
    with open_readonly(db) as conn:
        conn.set_authorizer(None)
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("delete from runs")


def test_formats_table_csv_and_json(db):
    with open_readonly(db) as conn:
        r = run_query(conn, "select model_name as m, n_images as n from evaluations order by id", max_rows=2)
    assert r.truncated and len(r.rows) == 2
    assert format_result(r, "csv").splitlines() == ["m,n", "precision-optimized,14", "balanced,14"]
    assert json.loads(format_result(r, "json")) == [{"m": "precision-optimized", "n": 14}, {"m": "balanced", "n": 14}]
    table = format_result(r, "table").splitlines()
    assert table[0].split() == ["m", "n"] and table[-1] == "(first 2 rows)"


def test_query_command_prints_rows_and_refuses_delete_with_exit_2(db):
    runner = CliRunner()
    ok = runner.invoke(cli, ["query", "--db", str(db), "--format", "csv", "select count(*) as n from image_metrics"],
                       obj={})
    assert ok.exit_code == 0, ok.output
    assert ok.output.splitlines() == ["n", "42"]
    bad = runner.invoke(cli, ["query", "--db", str(db), "DELETE FROM image_metrics"], obj={})
    assert bad.exit_code == 2
    assert "refused" in bad.output and "Traceback" not in bad.output
