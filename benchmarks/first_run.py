"""A newcomer's first minutes, measured: clone, ``make install`` with an empty pip cache, the
first ``make audit`` and the second, each phase timed, against issue 16's targets
(install 6 min, first audit 5 min, second 1 min, PDF 10 MB).

Phases inside an audit come from its log's timestamps (one-second resolution): data and
models (training or loading), evaluation, explanations, figures and recording, the LLM
answers, the PDF.

    python benchmarks/first_run.py                    # clones this checkout's HEAD into /tmp
    python benchmarks/first_run.py --keep /tmp/fresh  # and keeps the clone
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"install": 360.0, "first audit": 300.0, "second audit": 60.0}
_STAMP = re.compile(r"^(\d\d:\d\d:\d\d) INFO (\S+): (.*)$")


def _timed(cmd: list[str], cwd: Path, env: dict, log: Path) -> float:
    t0 = time.perf_counter()
    with open(log, "w") as out:
        subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - t0


def phases(log: Path) -> dict[str, float]:
    """Seconds per phase of one audit, from the timestamps of its log lines."""
    events = []
    for line in log.read_text(errors="replace").splitlines():
        m = _STAMP.match(line)
        if m:
            events.append((datetime.strptime(m.group(1), "%H:%M:%S"), m.group(2), m.group(3)))
    if not events:
        return {}

    def first(pred) -> datetime | None:
        return next((t for t, name, msg in events if pred(name, msg)), None)

    def last(pred) -> datetime | None:
        return next((t for t, name, msg in reversed(events) if pred(name, msg)), None)

    start = events[0][0]
    evaluated = last(lambda n, m: n.endswith(".evaluate") and m.startswith("evaluate "))
    explained = last(lambda n, m: m.startswith("xai: batch") and "explained" in m) or evaluated
    llm_start = first(lambda n, m: n.endswith("llm.runtime") and "loaded" in m)
    llm_end = last(lambda n, m: n == "glassbox_audit.llm" and "->" in m)
    pdf = last(lambda n, m: "PDF written" in m)
    end = last(lambda n, m: "finished in" in m)
    out = {}
    if evaluated:
        first_eval = first(lambda n, m: n.endswith(".evaluate"))
        out["data and models (train or load)"] = (first_eval - start).total_seconds()
        out["evaluation"] = (evaluated - first_eval).total_seconds()
    if explained and evaluated:
        out["explanations"] = (explained - evaluated).total_seconds()
    if llm_start and explained:
        out["figures and recording"] = (llm_start - explained).total_seconds()
    if llm_start and llm_end:
        out["LLM answers"] = (llm_end - llm_start).total_seconds()
    if pdf and (llm_end or explained):
        out["HTML and PDF"] = (pdf - (llm_end or explained)).total_seconds()
    if end:
        out["audit (its own clock)"] = float(re.search(r"finished in ([\d.]+) s", next(
            m for t, n, m in reversed(events) if "finished in" in m)).group(1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", type=Path, help="clone here and keep it (default: a temporary folder)")
    args = ap.parse_args()

    root = args.keep or Path(tempfile.mkdtemp(prefix="glassbox-first-run-"))
    clone = root / "glassbox-audit"
    if clone.exists():
        shutil.rmtree(clone)
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env = {**os.environ, "PIP_CACHE_DIR": str(root / "empty-pip-cache")}  # nothing cached from before
    logs = root / "logs"
    logs.mkdir(exist_ok=True)

    rows = [("install (make install)", _timed(["make", "install"], clone, env, logs / "install.log"), "install")]
    rows.append(("first make audit", _timed(["make", "audit"], clone, env, logs / "audit1.log"), "first audit"))
    rows.append(("second make audit", _timed(["make", "audit"], clone, env, logs / "audit2.log"), "second audit"))

    print(f"clone {clone} (logs in {logs})")
    print("| step | seconds | target | within |")
    print("|---|---|---|---|")
    for label, seconds, key in rows:
        target = TARGETS[key]
        print(f"| {label} | {seconds:.0f} | {target:.0f} | {'yes' if seconds <= target else 'no'} |")
    for name in ("audit1", "audit2"):
        print(f"\n{name}: " + ", ".join(f"{k} {v:.0f} s" for k, v in phases(logs / f"{name}.log").items()))
    pdfs = sorted((clone / "audits" / "default").glob("v*/dossier.pdf"))
    if pdfs:
        print(f"\nPDF {pdfs[0].relative_to(clone)}: {pdfs[0].stat().st_size / 1e6:.1f} MB (target 10 MB)")


if __name__ == "__main__":
    main()
