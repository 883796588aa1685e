"""The fault battery: every fault of ``tests/reliability`` once, and ``kill -9`` twenty times.

    python benchmarks/fault_battery.py                 # about 20-40 minutes on 2 shared cores
    python benchmarks/fault_battery.py --kills 5 --keep

Prints one row per case: what was done, the exit code, the message, whether every version
that existed before is still byte-identical and passes ``verify``, ``PRAGMA integrity_check``
of every database, and whether the guarantee held. Exits 1 if any did not.

The audit is tiny (one 32 px variant, trained once; no explanations; ``--llm`` adds the LLM
appendix to every run); runs are real ``python -m glassbox_audit`` children where the fault
needs a process (kill -9, concurrent runs, a lock held elsewhere, a file-size limit) and
click's CliRunner in this process otherwise. Half of the kills land at a random moment of
the whole run, half at a random moment of the version build (after the reservation
appears), timed from one complete baseline run measured first.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from reliability import battery as b  # noqa: E402


def _cell(text: object, width: int) -> str:
    text = str(text).replace("|", "/").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def print_row(o: b.Outcome, root: Path) -> None:
    r = o.row()
    message = str(r["message"]).replace(f"{root}/", "")  # paths relative to the work folder
    print(f"| {_cell(r['case'], 34)} | {_cell(r['what was done'], 80)} | {r['exit']} | {_cell(message, 130)} "
          f"| {r['earlier versions verify']} | {_cell(r['integrity'], 30)} | {_cell(r['held'], 120)} |", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=20, help="runs killed by kill -9 (default 20)")
    ap.add_argument("--root", help="work folder (default: a new temporary folder)")
    ap.add_argument("--llm", action="store_true", help="answer the LLM appendix's standard questions in every run")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="fault-battery-"))
    rng = random.Random(args.seed)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    sb = b.Sandbox(root, llm=args.llm)
    print(f"work folder: {sb.root} (paths below are relative to it)", flush=True)
    sb.prepare()
    print(f"set-up (train the tiny model, write v001 and v002): {time.perf_counter() - wall0:.0f} s", flush=True)

    print("\n| case | what was done | exit | message | earlier versions verify | integrity | held |")
    print("|---|---|---|---|---|---|---|")
    outcomes: list[b.Outcome] = []

    def record(rows: list[b.Outcome]) -> None:
        for o in rows:
            outcomes.append(o)
            print_row(o, sb.root)

    for _, fn in b.CASES:
        record(b.run_case(fn, sb))
    if b.tmpfs_available():
        for margin in (4 * 1024, 64 * 1024, 512 * 1024):
            record([b.case_disk_full_tmpfs(sb, margin)])
    # All below the database's final size (about 200 KiB): 160 KiB lets every figure through
    # and fails a late write of the database.
    for limit in (16 * 1024, 64 * 1024, 160 * 1024):
        record([b.case_disk_full_rlimit(sb, limit)])
    for n in (2, 3):
        record([b.case_concurrent(sb, n)])

    base = b.baseline_run(sb)
    record([base["outcome"]])
    print(f"\nbaseline child run: {base['seconds']:.1f} s, version reserved at {base['reserved_at'] or 0:.1f} s, "
          f"build {base['build_seconds']:.1f} s", flush=True)
    # Repeat until the signal has landed ``--kills`` times (a run can finish first).
    stages: Counter = Counter()
    i = landed = 0
    while landed < args.kills and i < 3 * args.kills:
        after_reserve = i % 2 == 1
        at = rng.uniform(0, 0.95 * (base["build_seconds"] if after_reserve else base["seconds"]))
        o = b.kill_nine(sb, at, after_reserve, i)
        stages[o.extra["stage"]] += 1
        landed += o.extra["stage"] != "finished before the kill"
        record([o])
        i += 1

    held = sum(o.held for o in outcomes)
    print(f"\n{held} of {len(outcomes)} cases held; kill -9 landed {landed} times in {i} runs: "
          + ", ".join(f"{n} {stage}" for stage, n in stages.items()))
    print(f"this process: {time.process_time() - cpu0:.0f} s CPU; wall {time.perf_counter() - wall0:.0f} s "
          "(child processes not counted in CPU)")
    if not args.keep and not args.root:
        b._make_writable(root)
        shutil.rmtree(root, ignore_errors=True)
    return 0 if held == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
