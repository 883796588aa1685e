"""Fleets and the Dask executor: the same figures as a local run, a worker killed mid-shard,
fleet files that are refused in one line, and the fleet's summary and exit code.

One LocalCluster of two worker processes serves the whole module (its address is passed as
``--scheduler``, the way a real cluster is used). The tiny models are those the session's
``two_runs`` audits trained (same settings, same data): nothing is trained here.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import tiny_overrides
from glassbox_audit.cli import cli
from glassbox_audit.config import ExecutorConfig, load_config

# Tiny, quick audits: no PDF, no explanations (one test below checks the XAI fan-out alone), no gallery.
FAST = ["report.pdf=false", "xai.enabled=false", "report.max_gallery=0"]

# Metric tables compared row for row between runs: (table, columns that identify a run rather than a result)
TABLES = {
    "evaluations": ("id", "run_id", "seconds"),
    "evaluation_metrics": ("evaluation_id",),
    "metric_intervals": ("evaluation_id",),
    "image_metrics": ("evaluation_id",),
    "batch_metrics": ("evaluation_id",),
    "operating_points": ("evaluation_id",),
}


def metric_rows(db: Path) -> dict[str, list[tuple]]:
    """Every row of the metric tables with the model's name in place of run-specific ids, sorted."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    names = {r["id"]: r["model_name"] for r in con.execute("select id, model_name from evaluations")}
    out = {}
    for table, skip in TABLES.items():
        rows = []
        for r in con.execute(f"select * from {table}"):
            d = dict(r)
            if "evaluation_id" in d:
                d["model"] = names[d["evaluation_id"]]
            rows.append(tuple(sorted((k, v) for k, v in d.items() if k not in skip)))
        out[table] = sorted(rows, key=repr)
    con.close()
    return out


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("fleet")


@pytest.fixture(scope="module")
def base(tmp, two_runs) -> list[str]:
    """Overrides of every audit here: the tiny audit, writing under ``tmp``, with the stored
    models and the synthetic data of the session's ``two_runs``."""
    shared = two_runs["tmp"]
    return tiny_overrides(tmp) + FAST + [f'models_dir="{shared / "models"}"', f'data.cache_dir="{shared / "cache"}"']


@pytest.fixture(scope="module")
def dask_executor():
    """One LocalCluster (2 worker processes, 1 thread each) for every test of the module."""
    pytest.importorskip("distributed")
    from glassbox_audit.executor import DaskExecutor

    with DaskExecutor(ExecutorConfig(kind="dask", n_workers=2)) as ex:
        yield ex


@pytest.fixture(scope="module")
def local_run(base, dask_executor):
    """The reference: the tiny audit run in this process with the local executor (after the
    cluster's start, so its workers start TensorFlow meanwhile)."""
    from glassbox_audit.pipeline import run_audit

    return run_audit(load_config(overrides=base + ["name=local"]))


def cli_args(base: list[str]) -> list[str]:
    return [a for o in base for a in ("--set", o)]


def test_dask_run_gives_the_same_per_image_metrics_and_database_rows_as_a_local_run(dask_executor, base, local_run):
    from glassbox_audit.executor import worker_state

    result = CliRunner().invoke(cli, ["run", "--name", "sharded", "--executor", "dask",
                                      "--scheduler", dask_executor.address, *cli_args(base)], obj={})
    assert result.exit_code == 0, result.output
    version = Path(result.stdout.strip().splitlines()[-1])
    assert version.parent.name == "sharded" and (version / "audit.sqlite").is_file()

    local, sharded = metric_rows(local_run.database), metric_rows(version / "audit.sqlite")
    assert len(local["image_metrics"]) == 3 * 12  # 3 variants x 12 test images, in 3 batches
    for table in TABLES:
        assert sharded[table] == local[table], table
    with sqlite3.connect(version / "audit.sqlite") as con:
        cfg, sha = con.execute("select config_json, config_sha256 from runs").fetchone()
    assert '"kind": "dask"' in cfg and dask_executor.address in cfg  # the run records where it ran
    # ... but where it ran is no change of settings: the config hash that diff compares is the
    # one the same audit run locally records.
    from glassbox_audit.pipeline import settings_hash

    assert sha == settings_hash(load_config(overrides=base + ["name=sharded"]))
    assert sha != settings_hash(load_config(overrides=base + ["name=sharded", "evaluate.threshold=0.4"]))

    # Each worker loaded each model it met once, from the store, checked by hash.
    states = dask_executor.client.run(worker_state).values()
    assert all(s["loads"] == len(s["models"]) <= 3 for s in states)
    shas = {m.sha256 for m in _stored_models(base)}
    assert set().union(*(s["models"] for s in states)) <= shas


def _stored_models(base: list[str]):
    from glassbox_audit.data import load_dataset
    from glassbox_audit.models import obtain_models

    cfg = load_config(overrides=base, train__mode="never")
    return obtain_models(cfg, load_dataset(cfg.data))


def test_xai_fans_out_per_batch_and_variant_and_merges_like_a_local_run(base, dask_executor):
    from glassbox_audit.data import load_dataset
    from glassbox_audit.evaluate import predict_batches
    from glassbox_audit.executor import LocalExecutor

    cfg = load_config(overrides=base + ["xai.enabled=true", 'xai.methods=["saliency"]', "xai.checks=false",
                                        "xai.randomisation=false", 'xai.cache_dir=""'])
    models = _stored_models(base)[:2]  # 2 batches x 2 variants: 4 tasks
    views = predict_batches(models, load_dataset(cfg.data), cfg.model.input_size, cfg.evaluate, [0, 2])
    local = LocalExecutor().explain(models, views, cfg)
    sharded = dask_executor.explain(models, views, cfg)
    assert list(sharded) == list(local) == [0, 2]
    for b in local:
        a, d = local[b], sharded[b]
        assert d.models == a.models == [m.name for m in models] and d.image_ids == a.image_ids
        assert list(d.maps) == list(a.maps) and list(d.params) == list(a.params) and d.params == a.params
        for key in a.maps:
            assert list(d.maps[key]) == list(a.maps[key])
            for name in a.maps[key]:
                np.testing.assert_allclose(d.maps[key][name], a.maps[key][name], rtol=1e-5, atol=1e-6)
        assert [r["check"] for r in d.summary_rows()] == [r["check"] for r in a.summary_rows()]
        assert {(t["method"], t["model"]) for t in d.timing_rows()} == {(t["method"], t["model"]) for t in a.timing_rows()}


def test_shards_cover_every_batch_once_in_order():
    from glassbox_audit.evaluate import shard_batches

    assert shard_batches(3, 4) == [[0], [1], [2]]
    assert shard_batches(10, 3) == [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9]]
    assert shard_batches(5, 1) == [[0, 1, 2, 3, 4]]
    for total in range(1, 30):
        for n in range(1, 9):
            shards = shard_batches(total, n)
            assert [b for s in shards for b in s] == list(range(total)) and len(shards) == min(n, total)


# --- fleet files ---------------------------------------------------------------------------------


def _fleet(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("text, problem", [
    ("[[audit]\nname = 'a'", "not valid TOML"),
    ("", "no audits"),
    ("[defaults]\nset = []\n", "no audits"),
    ("[[audit]]\nconfig = 'x.toml'\n", "audit 1: 'name' is required"),
    ("[[audit]]\nname = 'a'\n[[audit]]\nname = 'a'\n", "audit name 'a' appears 2 times"),
    ("[[audit]]\nname = 'a'\nepochs = 3\n", "audit 1: unknown key 'epochs'"),
    ("[[audit]]\nname = '../up'\n", "audit 1: name '../up' must be"),
    ("[[audit]]\nname = 'a'\nset = 'train.epochs=3'\n", "audit 1: 'set' must be a list"),
    ("[[audit]]\nname = 'a'\nconfig = 'missing.toml'\n", "config file"),
    ("[[audits]]\nname = 'a'\n", "unknown key 'audits'"),
    ("[executor]\nkind = 'spark'\n[[audit]]\nname = 'a'\n", "config key 'executor.kind' must be one of"),
    ("[[audit]]\nname = 'a'\nthreshold = 'high'\n", "audit 'a': config key 'evaluate.threshold' must be float"),
    ("[[audit]]\nname = 'a'\nset = ['train.epochs=-1']\n", "audit 'a': config key 'train.epochs' must be positive"),
])
def test_a_bad_fleet_file_fails_in_one_line_naming_the_file_and_the_problem(tmp, text, problem):
    path = _fleet(tmp, "bad.toml", text)
    result = CliRunner().invoke(cli, ["fleet", "run", str(path)], obj={})
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ") and problem in lines[0], lines
    assert "Traceback" not in result.output


def test_a_missing_fleet_file_is_named(tmp):
    result = CliRunner().invoke(cli, ["fleet", "run", str(tmp / "nowhere.toml")], obj={})
    assert result.exit_code == 2 and result.stderr.strip() == f"error: {tmp / 'nowhere.toml'}: fleet file not found"


def test_fleet_file_shorthands_and_defaults_become_config_keys(tmp):
    from glassbox_audit.fleet import load_fleet

    (tmp / "base.toml").write_text("[train]\nepochs = 3\n")
    path = _fleet(tmp, "shorthand.toml", """
[defaults]
config = "base.toml"
set = ["report.pdf=false"]
threshold = 0.4
[executor]
kind = "dask"
n_workers = 3
[[audit]]
name = "one"
models = "store"
selected_batches = [1, 2]
acceptance = ["iou >= 0.5"]
set = ["train.finetune_epochs=2"]
[[audit]]
name = "two"
threshold = 0.6
""")
    one, two = load_fleet(path).configs(scheduler="tcp://127.0.0.1:9")
    assert one.train.epochs == two.train.epochs == 3 and not one.report.pdf and one.train.finetune_epochs == 2
    assert one.models_dir == str(tmp / "store") and one.evaluate.selected_batches == [1, 2]
    assert one.report.acceptance == ["iou >= 0.5"]
    assert one.evaluate.threshold == 0.4 and two.evaluate.threshold == 0.6
    assert one.executor == two.executor and one.executor.kind == "dask" and one.executor.n_workers == 3
    assert one.executor.scheduler == "tcp://127.0.0.1:9"


def test_fleet_prints_a_summary_and_exits_1_when_an_audit_fails_regresses_or_errs(tmp, base, local_run,
                                                                                   dask_executor):
    common = ", ".join(json.dumps(o) for o in base)  # a JSON string is a TOML string
    good = _fleet(tmp, "good.toml", f"""
[defaults]
set = [{common}]
[[audit]]
name = "night"
acceptance = ["dice >= 0"]
""")
    result = CliRunner().invoke(cli, ["fleet", "run", str(good), "--scheduler", dask_executor.address], obj={})
    assert result.exit_code == 0, result.output
    head, *rows, total = result.stdout.strip().splitlines()
    assert head.split()[:3] == ["audit", "version", "variant"] and head.endswith("result")
    assert len(rows) == 3 and rows[0].startswith("night ") and " v001 " in rows[0] and rows[0].endswith("PASS")
    assert "none" in rows[0] and "pass" in rows[0]
    assert total == "1 audit(s): 1 pass, 0 fail or regressed, 0 error(s)"

    bad = _fleet(tmp, "bad-night.toml", f"""
[defaults]
set = [{common}]
[[audit]]
name = "night"
threshold = 0.999
acceptance = ["dice >= 0.5"]
[[audit]]
name = "broken"
models = "{tmp / 'empty-store'}"
train = "never"
""")
    result = CliRunner().invoke(cli, ["fleet", "run", str(bad)], obj={})  # the local executor
    assert result.exit_code == 1, result.output
    night = next(line for line in result.stdout.splitlines() if line.startswith("night "))
    broken = next(line for line in result.stdout.splitlines() if line.startswith("broken "))
    assert " v002 " in night and night.endswith("FAIL, REGRESSED")  # fell against its v001, below 0.5
    assert "dice -" in night and "fail: dice >= 0.5" in night
    assert "ERROR: " in broken and "no stored model" in broken
    assert "error: audit broken: " in result.stderr
    assert result.stdout.strip().splitlines()[-1] == "2 audit(s): 0 pass, 1 fail or regressed, 1 error(s)"
    assert not (tmp / "audits" / "broken").exists() or not list((tmp / "audits" / "broken").glob("v*"))


def test_an_unreachable_scheduler_fails_in_one_line(tmp, base):
    result = CliRunner().invoke(cli, ["run", "--name", "nowhere", "--scheduler", "tcp://127.0.0.1:9",
                                      *cli_args(base), "--set", "executor.connect_timeout=2"], obj={})
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().startswith("error: dask scheduler tcp://127.0.0.1:9: cannot connect")
    assert not (tmp / "audits" / "nowhere").exists()


# --- workers that die (last: they restart workers, which start cold) ---------------------------------


def _die_once_then_evaluate(flag: str, refs, ds, input_size, cfg, batches, partition, tf_threads):
    """A shard task whose first run on the first shard kills its worker process outright."""
    if batches[0] == 0 and not os.path.exists(flag):
        open(flag, "w").close()
        os._exit(1)
    from glassbox_audit.executor import evaluate_shard_task

    return evaluate_shard_task(refs, ds, input_size, cfg, batches, partition, tf_threads)


def _always_die(refs, ds, input_size, cfg, batches, partition, tf_threads):
    os._exit(1)


@pytest.fixture
def by_value():
    """Ship this module's functions to the workers by value (they cannot import the tests)."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_a_worker_killed_mid_shard_has_its_shard_rerun_and_the_figures_stay_right(tmp, base, local_run,
                                                                                  dask_executor, by_value):
    from glassbox_audit.pipeline import run_audit

    flag = tmp / "worker-died"
    pids_before = set(dask_executor.client.run(os.getpid).values())
    dask_executor.shard_task = functools.partial(_die_once_then_evaluate, str(flag))
    try:
        cfg = load_config(overrides=base + ["name=killed", "executor.kind=dask"])
        result = run_audit(cfg, executor=dask_executor)
    finally:
        del dask_executor.shard_task  # back to the class's evaluate_shard_task
    assert flag.exists()  # a worker did die, mid-run
    assert metric_rows(result.database) == metric_rows(local_run.database)
    assert result.summary == local_run.summary
    dask_executor.client.wait_for_workers(2, timeout=60)  # the nanny restarted the dead one
    assert set(dask_executor.client.run(os.getpid).values()) != pids_before


def test_a_shard_that_keeps_killing_workers_fails_the_run_in_one_line_and_writes_nothing(tmp, base, local_run,
                                                                                         dask_executor, by_value):
    from glassbox_audit.pipeline import run_audit
    from glassbox_audit.executor import ExecutorError

    def allowed(dask_scheduler, n):
        old, dask_scheduler.allowed_failures = dask_scheduler.allowed_failures, n
        return old

    old = dask_executor.client.run_on_scheduler(allowed, n=0)  # give up at the first death
    dask_executor.shard_task = _always_die
    try:
        cfg = load_config(overrides=base + ["name=doomed"])
        with pytest.raises(ExecutorError, match="workers that died running it.*nothing was written"):
            run_audit(cfg, executor=dask_executor)
    finally:
        del dask_executor.shard_task
        dask_executor.client.run_on_scheduler(allowed, n=old)
    audit = tmp / "audits" / "doomed"
    assert not audit.exists() or not [p for p in audit.iterdir() if p.name.startswith("v")]
    dask_executor.client.wait_for_workers(2, timeout=60)
