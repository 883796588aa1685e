"""Which training schedule the default audit should use: accuracy per CPU-second (issue 16).

Each candidate schedule trains the default audit's base model and its three variants from
scratch on the embedded synthetic data, with the product's own ``obtain_models`` (into a
temporary model store), and evaluates them on the whole test partition with the product's
``evaluate_models``. Printed per schedule: training seconds (the sum of the model cards'),
its ratio to the current default measured in the same run, each variant's test Dice (image
mean), and whether the three error profiles keep their order (precision-optimized has the
highest precision, recall-optimized the highest recall).

    python benchmarks/default_schedule.py                      # the candidates below
    python benchmarks/default_schedule.py --only current,b16-e10
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# name -> config overrides (the current default first: it is the baseline of the ratios)
CANDIDATES: dict[str, list[str]] = {
    "current": [],
    "b16": ["train.batch_size=16"],
    "b16-e10-f2": ["train.batch_size=16", "train.epochs=10", "train.finetune_epochs=2"],
    "b16-e10-f2-cos": ["train.batch_size=16", "train.epochs=10", "train.finetune_epochs=2",
                       'train.lr_schedule="cosine"'],
    "b16-e8-f2-cos": ["train.batch_size=16", "train.epochs=8", "train.finetune_epochs=2",
                      'train.lr_schedule="cosine"'],
    "b8-e8-f2-cos": ["train.epochs=8", "train.finetune_epochs=2", 'train.lr_schedule="cosine"'],
}


def measure(name: str, overrides: list[str]) -> dict:
    from glassbox_audit.config import load_config
    from glassbox_audit.data import load_dataset
    from glassbox_audit.evaluate import evaluate_models
    from glassbox_audit.models import obtain_models

    with tempfile.TemporaryDirectory(prefix=f"schedule-{name}-") as store:
        cfg = load_config(overrides=[f'models_dir="{store}"', 'train.mode="always"', *overrides])
        ds = load_dataset(cfg.data)
        t0 = time.perf_counter()
        models = obtain_models(cfg, ds, Path(store))
        wall = time.perf_counter() - t0
        base = json.loads(next(Path(store).glob("base-*/card.json")).read_text())
        seconds = base["training_seconds"] + sum(m.card["training_seconds"] for m in models)
        evals = {e.name: e.summary["macro"] for e in evaluate_models(models, ds, cfg.model.input_size, cfg.evaluate)}
    p = {n: m["precision"] for n, m in evals.items()}
    r = {n: m["recall"] for n, m in evals.items()}
    ordered = (max(p, key=p.get) == "precision-optimized" and max(r, key=r.get) == "recall-optimized")
    return {"name": name, "overrides": overrides, "train_seconds": seconds, "wall_seconds": wall,
            "dice": {n: m["dice"] for n, m in evals.items()}, "precision": p, "recall": r, "ordered": ordered}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated candidate names (default: all)")
    ap.add_argument("--json", type=Path, help="append one JSON line per schedule here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    only = [s for s in args.only.split(",") if s]
    rows = []
    for name, overrides in CANDIDATES.items():
        if only and name not in only:
            continue
        row = measure(name, overrides)
        rows.append(row)
        if args.json:
            with args.json.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
        print(f"{name}: {row['train_seconds']:.0f} s, Dice {row['dice']}, ordered {row['ordered']}", flush=True)
    base = rows[0]["train_seconds"]
    print(f"\n| schedule | settings | train s | x {rows[0]['name']} | Dice P / B / R (image mean) "
          "| precision of P | recall of R | profiles ordered |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        d = r["dice"]
        print(f"| {r['name']} | {' '.join(r['overrides']) or 'defaults'} | {r['train_seconds']:.0f} "
              f"| {r['train_seconds'] / base:.2f} | {d['precision-optimized']:.3f} / {d['balanced']:.3f} / "
              f"{d['recall-optimized']:.3f} | {r['precision']['precision-optimized']:.3f} "
              f"| {r['recall']['recall-optimized']:.3f} | {'yes' if r['ordered'] else 'NO'} |")


if __name__ == "__main__":
    main()
