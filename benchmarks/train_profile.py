"""Where a training step of the Attention U-Net spends its time: a per-operation profile.

Issue 14 asks to profile per operation before choosing where to cut. This traces steady-state
train steps of the shipped ISIC architecture (128 px, 12 base filters, batch 8, the loss and
optimizer of ``configs/isic2017.toml``) with TensorFlow's profiler, reads the trace it writes
(an ``XSpace`` protobuf, parsed with the proto module TensorFlow ships) and sums each
operation's **self time** (its duration minus that of the events nested in it on the same
thread), then groups it three ways:

* by operation type (``Conv2DBackpropFilter``, ``FusedBatchNormGradV3``, ``Relu`` ...);
* by resolution level of the U-Net (the layer name's ``enc1``/``dec1`` ... ``bottleneck``
  prefix; level 1 is full resolution), so it shows whether the full-resolution layers are
  where the step goes, as the throughput table suggests;
* by pass (forward, gradient, optimizer update);
* by layer (``enc1_conv2``, ``att1_theta``, ``dec1_norm1`` ...).

Shares are of the summed self time of all operations on all threads (the two cores run ops
in parallel, so the sum exceeds the wall time; the ratio between groups is what matters).

    .venv/bin/python benchmarks/train_profile.py                  # ~2 min on 2 cores
    .venv/bin/python benchmarks/train_profile.py --size 64 --steps 3 --top 10   # a quick look
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_throughput's model and compile

log = logging.getLogger("train_profile")

# Names of the Attention U-Net's layers start with their place in it (models/unet.py).
LEVEL = re.compile(r"(?:^|/)(enc|dec|att|gate|up)(\d)")
# Keras 3 suffixes the name scope of a layer called in a traced function (``enc1_conv1_1``).
LAYER = re.compile(r"(?:^|/)((?:enc|dec|att)\d_[a-z]+\d?|bottleneck(?:_[a-z]+\d?)*|logits)(?:_\d+)?(?:/|$)")


def _events(xspace) -> list[tuple[str, str, int]]:
    """``(tf_op, op_type, self_picoseconds)`` of every TensorFlow op event on the host.

    Events on one thread line nest (a kernel inside the op that launched it); a parent's
    self time is its duration minus its direct children's, so nothing is counted twice.
    """
    out = []
    for plane in xspace.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        stat_names = {k: v.name for k, v in plane.stat_metadata.items()}
        meta = plane.event_metadata
        for line in plane.lines:
            evs = sorted(line.events, key=lambda e: (e.offset_ps, -e.duration_ps))
            stack: list[list] = []  # [end_ps, index in rows]
            rows: list[list] = []
            for e in evs:
                while stack and stack[-1][0] <= e.offset_ps:
                    stack.pop()
                name = meta[e.metadata_id].name if e.metadata_id in meta else ""
                tf_op = ""
                for s in list(e.stats) + list(meta[e.metadata_id].stats if e.metadata_id in meta else []):
                    if stat_names.get(s.metadata_id) == "tf_op":
                        tf_op = s.str_value or (stat_names.get(s.ref_value, "") if s.ref_value else "")
                if not tf_op and ":" in name and "/" in name:
                    tf_op = name
                if stack:
                    rows[stack[-1][1]][2] -= e.duration_ps
                rows.append([tf_op, name, e.duration_ps])
                stack.append([e.offset_ps + e.duration_ps, len(rows) - 1])
            for tf_op, name, self_ps in rows:
                if tf_op:
                    # "scope/name:Type"; some events carry only the op's path
                    scope, _, kind = tf_op.rpartition(":") if ":" in tf_op else (tf_op, "", tf_op.rsplit("/", 1)[-1])
                    out.append((scope, kind or name, max(self_ps, 0)))
    return out


def _pass_of(scope: str, kind: str) -> str:
    s = scope.lower()
    if "gradient" in s or "grad" in kind.lower() or "backprop" in kind.lower():
        return "gradient"
    if "adam" in s or "optimizer" in s or kind.startswith(("ResourceApply", "AssignVariable", "AssignAdd", "AssignSub")):
        return "optimizer"
    return "forward"


def _level_of(scope: str) -> str:
    if "bottleneck" in scope or "bridge" in scope:
        return "bottleneck"
    m = LEVEL.search(scope)
    return f"level {m.group(2)}" if m else "other (loss, metric, head, optimizer)"


def _layer_of(scope: str) -> str:
    found = LAYER.findall(scope)
    return found[-1] if found else "-"


def profile(size: int, filters: int, batch: int, steps: int, logdir: Path) -> list[tuple[str, str, int]]:
    import tensorflow as tf

    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    from train_throughput import _arrays, _compile, _model

    model = _compile(_model(size, filters))
    x, y = _arrays(size)
    x = tf.constant(x[:batch], tf.float32) / 255.0
    y = tf.constant(y[:batch])
    for _ in range(3):  # trace and warm up, outside the profile
        model.train_on_batch(x, y)
    t0 = time.perf_counter()
    tf.profiler.experimental.start(str(logdir))
    for _ in range(steps):
        model.train_on_batch(x, y)
    tf.profiler.experimental.stop()
    log.info("%d profiled steps in %.1f s (profiler overhead included)", steps, time.perf_counter() - t0)
    planes = sorted(logdir.rglob("*.xplane.pb"))
    if not planes:
        raise RuntimeError(f"the profiler wrote no trace under {logdir}")
    xspace = xplane_pb2.XSpace()
    xspace.ParseFromString(planes[-1].read_bytes())
    return _events(xspace)


def _table(title: str, totals: collections.Counter, all_ps: int, top: int) -> None:
    print(f"\n{title:<44} {'ms/step':>9} {'share':>7}")
    for key, ps in totals.most_common(top):
        print(f"{key[:44]:<44} {ps / 1e9:>9.1f} {100 * ps / all_ps:>6.1f}%")


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--filters", type=int, default=12)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--json", type=Path, help="also append the grouped totals as one JSON line here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        events = profile(args.size, args.filters, args.batch, args.steps, Path(tmp))
    if not events:
        raise SystemExit("the trace held no TensorFlow op events")
    all_ps = sum(ps for *_, ps in events)
    by = {"operation type": collections.Counter(), "U-Net level (1 = full resolution)": collections.Counter(),
          "pass": collections.Counter(), "layer": collections.Counter()}
    for scope, kind, ps in events:
        per_step = ps / args.steps
        by["operation type"][kind] += per_step
        by["U-Net level (1 = full resolution)"][_level_of(scope)] += per_step
        by["pass"][_pass_of(scope, kind)] += per_step
        by["layer"][_layer_of(scope)] += per_step
    all_ps /= args.steps
    print(f"\n{args.size} px, {args.filters} filters, batch {args.batch}: {len(events)} op events over "
          f"{args.steps} steps, {all_ps / 1e9:.0f} ms of op self time a step (both cores summed)")
    for title, totals in by.items():
        _table(title, totals, all_ps, args.top)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        with args.json.open("a") as fh:
            fh.write(json.dumps({"size": args.size, "filters": args.filters, "batch": args.batch,
                                 "steps": args.steps, "ms_per_step": all_ps / 1e9,
                                 **{t: {k: v / 1e9 for k, v in c.items()} for t, c in by.items()},
                                 "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
