"""Review workstation responsiveness on a large version: a real audit of 5000 synthetic test
images (tiny models, so it is quick to make), served by ``glassbox-audit serve`` on a real
port, each page fetched over HTTP.

Target (issue 17): the first page of the image table in under 200 ms. Printed for each page:
the cold first request (the server reads the version's table then) and the median of warm
requests, and the ratio to a baseline measured in the same run: reading the same per-image
rows straight from SQLite with ``sqlite3`` (the floor a table page cannot beat by much).

    python benchmarks/serve_bench.py                  # 5000 images, under /tmp/glassbox-serve-bench
    python benchmarks/serve_bench.py --images 20000
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]


def _audit(root: Path, n_images: int) -> Path:
    """A sealed audit version of ``n_images`` synthetic test images (made once, then reused)."""
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import tiny_overrides

    from glassbox_audit import load_config, run_audit

    name = f"bench{n_images}"
    found = sorted((root / "audits" / name).glob("v*/manifest.json"))
    if found:
        return found[0].parent
    overrides = tiny_overrides(root) + [f"name={name}", f"data.synthetic.n_test={n_images}", "report.pdf=false",
                                        "report.max_gallery=16"]
    return run_audit(load_config(overrides=overrides)).path


def _fetch(url: str) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as r:
        body = r.read()
    return time.perf_counter() - t0, body


def _baseline(db: Path, repeats: int) -> float:
    """Reading every image's stored figures of every variant with sqlite3, median seconds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        con.execute("select image_id, batch_index, tp, fp, fn, tn, dice, iou from image_metrics").fetchall()
        con.close()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--root", type=Path, default=Path("/tmp/glassbox-serve-bench"))
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()

    t0 = time.perf_counter()
    version = _audit(args.root, args.images)
    print(f"audit {version} ({args.images} test images) ready in {time.perf_counter() - t0:.0f} s")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "glassbox_audit", "serve", "--audits-dir",
                               str(args.root / "audits"), "--port", str(port), "--no-pdf"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                _fetch(base + "/")
                break
            except OSError:
                time.sleep(0.2)
        audit, v = version.parent.name, version.name
        table = f"{base}/audits/{audit}/{v}"
        floor = _baseline(version / "audit.sqlite", args.repeats)
        print(f"baseline: sqlite3 reads the {args.images} x 3 per-image rows in {1000 * floor:.1f} ms (median)")
        print(f"| page | cold ms | warm median ms | warm / baseline |")
        print(f"|---|---|---|---|")
        pages = [("table, first page", table), ("table sorted by Dice (worst first)", table + "?sort=dice:0"),
                 ("table sorted by FN share, descending", table + "?sort=fn_share:2&desc=1"),
                 ("table, failures only", table + "?only=failures"), ("table, page 50", table + "?page=50"),
                 ("audits index", base + "/")]
        worst = None
        for label, url in pages:
            cold, body = _fetch(url)
            warm = statistics.median(_fetch(url)[0] for _ in range(args.repeats))
            print(f"| {label} | {1000 * cold:.0f} | {1000 * warm:.1f} | {warm / floor:.2f} |")
            if "sort=dice:0" in url:
                worst = re.search(rb'class="image-link" href="([^"]+)"', body).group(1).decode().replace("&amp;", "&")
        if worst:
            cold, _ = _fetch(base + worst)
            warm = statistics.median(_fetch(base + worst)[0] for _ in range(5))
            print(f"| image page (first: loads models and data, predicts its batch) | {1000 * cold:.0f} | "
                  f"{1000 * warm:.1f} | {warm / floor:.2f} |")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
