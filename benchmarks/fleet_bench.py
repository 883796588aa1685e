"""A fleet of small synthetic audits, local executor against a Dask LocalCluster, same run.

The fleet file written here lists ``--audits`` audits (default 4) of the synthetic layout,
each with its own test set (64, 72, 80, ... images; the training images, and so the small
models, are shared). A first, untimed pass trains the models, so the timed passes only load
them from the store, evaluate the test set, explain one batch
per audit and write a version: the work the executor shares out. Then the same fleet runs
with the local executor and with Dask (a LocalCluster of ``--workers`` processes, one
thread each), alternately, ``--repeats`` times. Printed: wall time of each, the ratio, the
cluster's start-up, the round trip of an empty task and the overhead per shard,
``(dask - local) / shards``.

On 2 cores expect little or no gain: the main process still loads models, draws figures and
writes each version, and the workers share the same two cores. The point is that the
results are the same and the same command scales to a cluster (``--scheduler ADDRESS``).

    python benchmarks/fleet_bench.py                      # 4 audits, 2 workers
    python benchmarks/fleet_bench.py --audits 6 --workers 2 --repeats 2
    python benchmarks/fleet_bench.py --scheduler tcp://10.0.0.5:8786   # an existing cluster
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def fleet_text(work: Path, n_audits: int, n_test: int) -> str:
    common = [
        f'audits_dir="{work / "audits"}"', f'data.cache_dir="{work / "cache"}"', 'xai.cache_dir=""',
        "data.synthetic.n_train=24", "data.synthetic.n_val=8",
        "data.synthetic.height=96", "data.synthetic.width=128",
        "model.input_size=64", "model.depth=3", "model.base_filters=8",
        "train.epochs=2", "train.finetune_epochs=1", "train.batch_size=8", "evaluate.batch_size=8",
        "report.pdf=false", "report.figure_dpi=50", "llm.enabled=false", "report.max_gallery=8",
        # One batch explained per audit (3 variants: 3 XAI tasks), with the cheaper methods and checks.
        "evaluate.selected_batches=[0]", 'xai.methods=["saliency", "gradcam", "integrated_gradients"]',
        "xai.ig_steps=8", "xai.deletion_steps=5", "xai.randomisation=false",
    ]
    lines = ["[defaults]", f'models = "{work / "models"}"', "set = ["]
    lines += [f"  {json.dumps(o)}," for o in common]  # a JSON string is a TOML basic string
    lines += ["]"]
    for k in range(n_audits):
        lines += ["", "[[audit]]", f'name = "bench-{k}"', f'set = ["data.synthetic.n_test={n_test + 8 * k}"]']
    return "\n".join(lines) + "\n"


def noop(x):
    return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--audits", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--test-images", type=int, default=64, help="test images of the first audit (+8 per audit)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--scheduler", default="", help="an existing Dask scheduler instead of a LocalCluster")
    ap.add_argument("--work", default="", help="folder for data, models and audits (default: a temporary one)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("glassbox_audit").setLevel(logging.WARNING)

    from glassbox_audit.config import ExecutorConfig
    from glassbox_audit.evaluate import n_batches, shard_batches
    from glassbox_audit.executor import DaskExecutor, LocalExecutor
    from glassbox_audit.fleet import load_fleet, run_fleet
    from glassbox_audit.pipeline import run_audit

    work = Path(args.work or tempfile.mkdtemp(prefix="fleet-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    path = work / "fleet.toml"
    path.write_text(fleet_text(work, args.audits, args.test_images), encoding="utf-8")
    fleet = load_fleet(path)

    t0 = time.perf_counter()
    print(f"fleet of {args.audits} audits in {work}; untimed warm-up pass (trains the models the first time) ...",
          flush=True)
    run_fleet(fleet, command="fleet_bench warm-up")
    print(f"  warm-up pass: {time.perf_counter() - t0:.0f} s", flush=True)

    dask_cfg = ExecutorConfig(kind="dask", scheduler=args.scheduler, n_workers=args.workers)
    t0 = time.perf_counter()
    dask = DaskExecutor(dask_cfg)
    dask.start()
    startup = time.perf_counter() - t0
    try:
        # An empty task's round trip (submit, schedule, run, gather), workers warm
        dask.client.gather([dask.client.submit(noop, i, pure=False) for i in range(4)])
        n = 50
        t0 = time.perf_counter()
        for i in range(n):
            dask.client.submit(noop, i, pure=False).result()
        empty = (time.perf_counter() - t0) / n

        configs = {kind: fleet.configs(kind=kind, scheduler=args.scheduler,
                                       n_workers=args.workers) for kind in ("local", "dask")}
        executors = {"local": LocalExecutor(), "dask": dask}
        # Warm the workers (TensorFlow import, first traces) as the local process already is.
        run_audit(configs["dask"][0], command="fleet_bench worker warm-up", executor=dask)
        times: dict[str, list[float]] = {"local": [], "dask": []}
        last = {}
        for r in range(args.repeats):
            for kind in ("local", "dask"):
                t0 = time.perf_counter()
                results = [run_audit(cfg, command=f"fleet_bench {kind}", executor=executors[kind])
                           for cfg in configs[kind]]
                times[kind].append(time.perf_counter() - t0)
                last[kind] = results
                print(f"  pass {r + 1}: {kind:5s} {times[kind][-1]:6.1f} s", flush=True)
        same = all(a.summary == b.summary for a, b in zip(last["local"], last["dask"]))

        # An empty shard's round trip: the task, its model references and dataset pickled, the
        # models found in the worker's cache, an empty result back; workers warm.
        from glassbox_audit.data import load_dataset
        from glassbox_audit.executor import ModelRef, evaluate_shard_task, portable_dataset
        from glassbox_audit.models import obtain_models

        cfg0 = configs["dask"][0]
        ds0 = load_dataset(cfg0.data)
        refs = [ModelRef.of(m, cfg0.model.input_size) for m in obtain_models(cfg0, ds0)]
        portable = portable_dataset(ds0, "test")
        shard = lambda: dask.client.submit(evaluate_shard_task, refs, portable, cfg0.model.input_size,  # noqa: E731
                                           cfg0.evaluate, [], "test", 1, pure=False)
        dask.client.gather([shard() for _ in range(4)])
        t0 = time.perf_counter()
        for _ in range(n):
            shard().result()
        empty_shard = (time.perf_counter() - t0) / n
    finally:
        dask.close()

    batches = [n_batches(load_dataset(cfg.data), cfg.evaluate) for cfg in configs["dask"]]
    n_shards = sum(len(shard_batches(b, cfg.executor.shards or 2 * args.workers))
                   for b, cfg in zip(batches, configs["dask"]))
    n_xai = 3 * args.audits
    local, dask_t = statistics.median(times["local"]), statistics.median(times["dask"])
    where = args.scheduler or f"LocalCluster, {args.workers} processes x 1 thread"
    print()
    print("| fleet | executor | wall time | ratio local/dask |")
    print("|---|---|---|---|")
    sizes = f"{args.test_images}..{args.test_images + 8 * (args.audits - 1)}"
    print(f"| {args.audits} audits x {sizes} test images | local (this process) | {local:.1f} s | |")
    print(f"| same | dask ({where}) | {dask_t:.1f} s | {local / dask_t:.2f} |")
    print()
    print(f"cluster start-up (not in the dask time): {startup:.1f} s; round trip of an empty task: "
          f"{empty * 1000:.1f} ms, of an empty shard (3 model references and the test list): {empty_shard * 1000:.1f} ms")
    print(f"tasks: {n_shards} evaluation shards ({sum(batches)} batches of 8) + {n_xai} XAI tasks (1 batch x 3 "
          f"variants per audit); overhead per task, (dask - local) / tasks: "
          f"{(dask_t - local) / (n_shards + n_xai) * 1000:+.0f} ms")
    print(f"same figures (macro summary of every variant of every audit): {'yes' if same else 'NO'}")


if __name__ == "__main__":  # the workers are spawned processes that import this file: no work at import
    main()
