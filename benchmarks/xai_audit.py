"""The default audit's explanation stage as a whole, timed per method and check, before and after.

``xai_bench.py --audit`` runs this. One run:

1. **prepare** (this checkout's code): load the default audit's data, obtain its three stored
   models (training them if the store has none, as ``make audit`` would), evaluate the test
   set and choose the batches the dossier explains, exactly as ``run_audit`` does;
2. **before** and **after**, each in a fresh process (so neither inherits the other's traced
   functions): the same stored model files and batches explained by ``explain_batch`` with the
   audit's XAI settings and no result cache, by the code of ``--before`` (a git revision,
   extracted to a temporary folder) and by this checkout's code. Each worker reports the stage's
   wall seconds, each method's and check's seconds (summed over batches and variants; the first
   call of each includes its tracing), and saves every map and check value;
3. the table of seconds before / after and their ratio, and the largest difference of every
   map (relative to the map's own scale) and every check value between the two.

Rounds alternate the order (before, after, after, before, ...) and the best wall time of each
side is kept, so load from other jobs on a shared machine lands on both.

    python benchmarks/xai_bench.py --audit --before HEAD~3
    python benchmarks/xai_bench.py --audit --before 45bdeda --rounds 2 --json /tmp/xai_audit.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The XAI tests' tolerance for "the same map": relative to the map's largest magnitude.
MAP_RTOL = 1e-4
CHECK_ATOL = 1e-4


def _code_of(revision: str, into: Path) -> Path:
    """``glassbox_audit`` (and the templates it reads) as of ``revision``, extracted under ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "glassbox_audit", "templates"],
                             check=True, capture_output=True).stdout
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def prepare(out: Path) -> dict:
    """Stored models and the selected batches of the default audit (this checkout's code)."""
    from glassbox_audit.config import load_config
    from glassbox_audit.data import load_dataset
    from glassbox_audit.evaluate import select_batches
    from glassbox_audit.executor import make_executor
    from glassbox_audit.models import obtain_models

    cfg = load_config()
    ds = load_dataset(cfg.data)
    models = obtain_models(cfg, ds, Path(cfg.models_dir))
    with make_executor(cfg.executor) as ex:
        evals = ex.evaluate(models, ds, cfg.model.input_size, cfg.evaluate)
    selected = [b for b, _ in select_batches(evals, cfg.evaluate)]
    plan = {"models": {m.name: str(Path(m.path).resolve()) for m in models}, "batches": selected}
    out.write_text(json.dumps(plan))
    return plan


def worker(plan_path: Path, out: Path) -> None:
    """Explain the plan's batches with whatever ``glassbox_audit`` is first on ``sys.path``."""
    import keras
    import numpy as np

    import glassbox_audit
    from glassbox_audit.config import load_config
    from glassbox_audit.data import load_dataset
    from glassbox_audit.evaluate import predict_batches
    from glassbox_audit.executor import xai_masks
    from glassbox_audit.xai import explain_batch

    plan = json.loads(plan_path.read_text())
    cfg = load_config()
    ds = load_dataset(cfg.data)

    class Stored:  # what predict_batches needs of a model
        def __init__(self, name, path):
            self.name, self.model = name, keras.saving.load_model(path, compile=False, safe_mode=True)

    models = [Stored(n, p) for n, p in plan["models"].items()]
    views = predict_batches(models, ds, cfg.model.input_size, cfg.evaluate, plan["batches"])
    timings: dict[str, float] = {}
    arrays, checks = {}, {}
    t0 = time.perf_counter()
    results = [explain_batch({m.name: m.model for m in models}, v.x, xai_masks(v, cfg.model.input_size), cfg.xai,
                             image_ids=v.ids, cache_dir=None) for v in views]
    wall = time.perf_counter() - t0
    for v, r in zip(views, results):
        for row in r.timing_rows():
            timings[row["method"]] = timings.get(row["method"], 0.0) + row["seconds"]
        for key, per in r.maps.items():
            for model, m in per.items():
                arrays[f"{v.index}|{key}|{model}"] = m
        for row in r.summary_rows():
            ident = "|".join(str(row.get(k, "")) for k in ("check", "model", "method", "depth"))
            checks[f"{v.index}|{ident}"] = {k: float(x) for k, x in row.items()
                                            if isinstance(x, (int, float)) and k not in ("depth", "n_images")}
    np.savez_compressed(out.with_suffix(".npz"), **arrays)
    out.write_text(json.dumps({"code": str(Path(glassbox_audit.__file__).parent), "wall": wall,
                               "timings": timings, "checks": checks}))


def _run_worker(code_root: Path | None, plan: Path, out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(code_root) if code_root else str(ROOT),
               TF_CPP_MIN_LOG_LEVEL="2")
    subprocess.run([sys.executable, __file__, "worker", str(plan), str(out)], check=True, env=env, cwd=ROOT)
    res = json.loads(out.read_text())
    expected = (code_root or ROOT) / "glassbox_audit"
    if Path(res["code"]).resolve() != expected.resolve():
        raise SystemExit(f"worker ran {res['code']}, not {expected}")
    return res


def compare(before: Path, after: Path, checks_before: dict, checks_after: dict) -> dict:
    """Largest relative map difference and largest check difference between the two runs."""
    import numpy as np

    a, b = np.load(before.with_suffix(".npz")), np.load(after.with_suffix(".npz"))
    missing = sorted(set(a.files) ^ set(b.files))
    worst_map, worst_key = 0.0, ""
    per_method: dict[str, float] = {}
    for k in sorted(set(a.files) & set(b.files)):
        scale = float(np.abs(a[k]).max()) or 1.0
        d = float(np.abs(a[k] - b[k]).max()) / scale
        method = k.split("|")[1]
        per_method[method] = max(per_method.get(method, 0.0), d)
        if d > worst_map:
            worst_map, worst_key = d, k
    worst_check, worst_check_key = 0.0, ""
    for k in sorted(set(checks_before) & set(checks_after)):
        for f, x in checks_before[k].items():
            y = checks_after[k].get(f)
            if y is None or (np.isnan(x) and np.isnan(y)):
                continue
            d = abs(x - y)
            if not d <= worst_check:
                worst_check, worst_check_key = d, f"{k}|{f}"
    missing += sorted(set(checks_before) ^ set(checks_after))
    return {"maps": len(set(a.files) & set(b.files)), "max_map_rel_diff": worst_map, "at": worst_key,
            "per_method": per_method,
            "max_check_diff": worst_check, "check_at": worst_check_key, "missing": missing}


def main(before_rev: str, rounds: int = 1, json_out: Path | None = None) -> int:
    with tempfile.TemporaryDirectory(prefix="xai-audit-") as tmp:
        tmp = Path(tmp)
        old = _code_of(before_rev, tmp / "before")
        plan = tmp / "plan.json"
        subprocess.run([sys.executable, __file__, "prepare", str(plan)], check=True, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2"))
        p = json.loads(plan.read_text())
        print(f"default audit: {len(p['models'])} variants x {len(p['batches'])} batches {p['batches']}; "
              f"before = {before_rev} ({old / 'glassbox_audit'}), after = this checkout", flush=True)
        runs: dict[str, list[dict]] = {"before": [], "after": []}
        order = []
        for r in range(rounds):
            order += [("before", old), ("after", None)] if r % 2 == 0 else [("after", None), ("before", old)]
        for side, code in order:
            out = tmp / f"{side}-{len(runs[side])}.json"
            res = _run_worker(code, plan, out)
            res["path"] = out
            runs[side].append(res)
            print(f"  {side}: explanation stage {res['wall']:.1f} s", flush=True)
        best = {side: min(rs, key=lambda r: r["wall"]) for side, rs in runs.items()}
        b, a = best["before"], best["after"]
        keys = list(dict.fromkeys([*b["timings"], *a["timings"]]))
        print(f"\n{'method / check':<24} {'before s':>9} {'after s':>9} {'after / before':>15}")
        for k in keys:
            tb, ta = b["timings"].get(k, float("nan")), a["timings"].get(k, float("nan"))
            print(f"{k:<24} {tb:9.1f} {ta:9.1f} {ta / tb if tb else float('nan'):15.2f}")
        print(f"{'stage (wall)':<24} {b['wall']:9.1f} {a['wall']:9.1f} {a['wall'] / b['wall']:15.2f}")
        diff = compare(b["path"], a["path"], b["checks"], a["checks"])
        same = (not diff["missing"] and diff["max_map_rel_diff"] <= MAP_RTOL and diff["max_check_diff"] <= CHECK_ATOL)
        print(f"\n{diff['maps']} maps compared: largest difference {diff['max_map_rel_diff']:.2e} of the map's scale "
              f"({diff['at']}); check values: largest difference {diff['max_check_diff']:.2e} ({diff['check_at']}); "
              f"missing on one side: {diff['missing'] or 'none'} -> "
              f"{'the same results' if same else 'RESULTS DIFFER'} (tolerance {MAP_RTOL:g} of scale, {CHECK_ATOL:g})")
        print("largest difference per map key (of its scale): " +
              ", ".join(f"{k} {v:.1e}" for k, v in diff["per_method"].items()))
        if json_out:
            json_out.write_text(json.dumps({"before": before_rev, "rounds": {s: [r["wall"] for r in rs]
                                                                             for s, rs in runs.items()},
                                            "timings": {"before": b["timings"], "after": a["timings"]},
                                            "diff": diff}, indent=1))
        return 0 if same else 1


if __name__ == "__main__":
    if sys.argv[1] == "prepare":
        prepare(Path(sys.argv[2]))
    elif sys.argv[1] == "worker":
        worker(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        raise SystemExit("run it as: python benchmarks/xai_bench.py --audit --before REV")
