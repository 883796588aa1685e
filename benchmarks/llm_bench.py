"""How well each local GGUF model reads audit questions: exact values against SQL, margins, latency.

Questions (at least 400), each with its truth computed here from SQL, independently of
``glassbox_audit.llm.answer``:

- generated: templates of this script (not the reader's example bank) crossed with ways of
  naming each model (name, spellings, number, ordinal, what its loss does), metric synonyms and
  abbreviations, batches, images, rankings, several models or metrics, things the run does not
  hold (model 7, batch 9999, Hausdorff distance), the change since the previous version (the
  stored comparison: deltas, the model that dropped most) and questions that are not about the audit;
- written by hand in free style: ``benchmarks/data/llm_questions_handwritten.tsv``.

A fixed split (a hash of the question text): ``dev`` (30%) is where ``llm.min_margin`` is
chosen, ``test`` (70%) is reported. For each model the script prints, per split: the share
exactly right and verified, the LLM's reading alone exactly right (parser off), the parser's
alone, verified but wrong (must be 0), not-found precision and recall, and the latency of a
reading (median, 95th percentile) warm in one process and as a cold ``glassbox-audit ask``.

    python benchmarks/llm_bench.py                        # tests/llm_testdb.py's database (v002, compared with v001), every known model
    python benchmarks/llm_bench.py --models smollm2-135m-instruct --cold 5 -v
    python benchmarks/llm_bench.py --db audits/default/v002/audit.sqlite --no-handwritten
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from glassbox_audit.config import LlmConfig  # noqa: E402
from glassbox_audit.errors import GlassBoxError  # noqa: E402
from glassbox_audit.llm import Catalog, answer_question, load_configured_model  # noqa: E402
from glassbox_audit.llm.runtime import KNOWN_MODELS  # noqa: E402
from glassbox_audit.query import open_readonly, run_query  # noqa: E402

TOL = 1e-12
HANDWRITTEN = ROOT / "benchmarks" / "data" / "llm_questions_handwritten.tsv"
_DATASET_ONLY = {"thresholded_jaccard", "lesion_detection_rate", "fp_share", "fn_share", "jaccard_failures"}


# --- questions ---------------------------------------------------------------------------
def split_of(question: str) -> str:
    return "dev" if int(hashlib.sha1(question.encode()).hexdigest(), 16) % 10 < 3 else "test"


def _model_refs(c: Catalog) -> dict[str, list[str]]:
    """Ways people name each model, written for this benchmark (not taken from the vocabulary)."""
    ords = ("first", "second", "third", "fourth", "fifth")
    refs: dict[str, list[str]] = {}
    for m in c.models:
        name = m.name
        r = [f"the {name} model", name, f"model {m.number}", f"the {ords[m.number - 1]} model",
             f"variant {m.number}", f"the {name.replace('-', ' ')} variant", f"model #{m.number}",
             f"the {name.replace('optimized', 'optimised')} network"]
        if "precision" in name:
            r += ["the model that penalises false positives", "the precision model"]
        elif "recall" in name:
            r += ["the model that penalizes false negatives", "the recall one"]
        elif name == "balanced":
            r += ["the Dice-loss model", "the balanced one"]
        refs[name] = r
    return refs


_METRIC_REFS = {
    "dice": ["Dice", "DSC", "Dice score", "F1", "Dice coefficient"],
    "iou": ["IoU", "Jaccard", "Jaccard index", "intersection over union"],
    "precision": ["precision", "PPV", "positive predictive value"],
    "recall": ["recall", "sensitivity", "TPR", "true positive rate"],
    "specificity": ["specificity", "TNR", "true negative rate"],
    "pixel_accuracy": ["pixel accuracy", "pixel-wise accuracy"],
    "thresholded_jaccard": ["ISIC thresholded Jaccard", "thresholded Jaccard", "ISIC score"],
    "lesion_detection_rate": ["lesion detection rate"],
    "jaccard_failures": ["Jaccard failures"],
}
_AGG_REFS = {"micro": ["pooled", "pixel-pooled", "micro"], "macro": ["image-mean", "macro"]}


_SINCE = ("since the previous version", "since the last version", "compared with the previous version",
          "since the last run", "since {v}", "compared to {v}", "than {v}", "vs {v}", "since last night's run")


def _change_question(rng: random.Random, c: Catalog, refs: dict, model: str, mref: str) -> tuple[str, tuple]:
    """A question about the change since the previous version (the stored comparison)."""
    compared = [m for m in c.compared if m in _METRIC_REFS] or ["dice"]
    metric = rng.choice(compared)
    mtxt = rng.choice(_METRIC_REFS[metric])
    v = c.against or "v001"
    since = rng.choice(_SINCE).format(v=rng.choice((v, f"v{int(v[1:])}", f"version {int(v[1:])}")))
    kind = rng.random()
    if kind < 0.45:
        t = rng.choice(("Did the {m} of {x} drop {s}?", "Has {x}'s {m} changed {s}?", "How did {x}'s {m} change {s}?",
                        "{m} change for {x} {s}", "Did {x} get worse on {m} {s}?", "Is {x} better on {m} {s}?"))
        return t.format(m=mtxt, x=mref, s=since), ("change", (model,), (metric,), "macro")
    if kind < 0.65:
        t = rng.choice(("Did {m} drop for any model {s}?", "How did the {m} of each model change {s}?",
                        "{m} changes {s} for all models"))
        return t.format(m=mtxt, s=since), ("change", tuple(c.model_names), (metric,), "macro")
    if kind < 0.85:
        d = rng.choice(("max", "min"))
        t = rng.choice(("Which model's {m} dropped the most {s}?", "Which model had the biggest drop in {m} {s}?")
                       if d == "min" else ("Which model improved most in {m} {s}?", "Which variant's {m} improved the most {s}?"))
        return t.format(m=mtxt, s=since), ("rank_change", metric, d)
    bad = rng.choice((f"v{int(v[1:]) + rng.randint(3, 9):03d}", f"version {int(v[1:]) + rng.randint(3, 9)}"))
    return f"Did the {mtxt} of {mref} drop since {bad}?", ("not_found",)


def generated(c: Catalog, n: int = 360, seed: int = 1) -> list[tuple[str, tuple]]:
    rng = random.Random(seed)
    refs = _model_refs(c)
    names = c.model_names
    image_metrics = [m for m in ("dice", "iou", "precision", "recall", "specificity", "pixel_accuracy")
                     if m in c.metrics]
    all_metrics = [m for m in _METRIC_REFS if m in c.metrics]
    out: list[tuple[str, tuple]] = []
    while len(out) < n:
        kind = rng.random()
        model = rng.choice(names)
        mref = rng.choice(refs[model])
        metric = rng.choice(all_metrics if kind < 0.3 else image_metrics)
        mtxt = rng.choice(_METRIC_REFS[metric])
        if kind < 0.30:
            t = rng.choice(("What is the {m} of {x}?", "{m} of {x}", "Could you give me {x}'s {m}?",
                            "how does {x} score on {m}", "Tell me the {m} for {x}."))
            out.append((t.format(m=mtxt, x=mref), ("value", (model,), (metric,), "dataset", None, None, "macro")))
        elif kind < 0.40:
            t = rng.choice(("What is the {m} of each model?", "{m} for all models", "Show the {m} of every variant"))
            out.append((t.format(m=mtxt), ("value", tuple(names), (metric,), "dataset", None, None, "macro")))
        elif kind < 0.50:
            d = rng.choice(("max", "min"))
            word = rng.choice(("highest", "best", "top") if d == "max" else ("lowest", "worst"))
            t = rng.choice(("Which model has the {w} {m}?", "Which variant is {w} on {m}?", "{w} {m} among the models?"))
            out.append((t.format(w=word, m=mtxt), ("rank_models", metric, None, d)))
        elif kind < 0.62 and c.batches:
            b = rng.choice(c.batches)
            t = rng.choice(("What is the {m} of {x} on batch {b}?", "batch {b}: {m} of {x}", "{m} of {x} in batch {b}"))
            out.append((t.format(m=mtxt, x=mref, b=b), ("value", (model,), (metric,), "batch", b, None, "macro")))
        elif kind < 0.70 and c.images:
            img = rng.choice(c.images)
            t = rng.choice(("{m} of {x} for image {i}", "What {m} did {x} get on image {i}?", "{i}: {m} of {x}"))
            out.append((t.format(m=mtxt, x=mref, i=img), ("value", (model,), (metric,), "image", None, img, "macro")))
        elif kind < 0.78:
            unit = rng.choice(("batch", "image"))
            d = rng.choice(("max", "min"))
            word = rng.choice(("highest", "best") if d == "max" else ("lowest", "worst"))
            t = rng.choice(("Which {u} has the {w} {m} for {x}?", "{w} {u} by {m} for {x}", "For {x}, which {u} has the {w} {m}?"))
            out.append((t.format(u=unit, w=word, m=mtxt, x=mref), ("rank_units", model, metric, unit, d)))
        elif kind < 0.84:
            agg = rng.choice(("micro", "macro"))
            a = rng.choice(_AGG_REFS[agg])
            t = rng.choice(("{a} {m} of {x}", "What is the {a} {m} of {x}?"))
            out.append((t.format(a=a, m=mtxt, x=mref), ("value", (model,), (metric,), "dataset", None, None, agg)))
        elif kind < 0.89 and len(names) > 1:
            a, b = rng.sample(names, 2)
            m2 = rng.choice([x for x in image_metrics if x != metric] or image_metrics)
            if rng.random() < 0.5:
                q = f"{mtxt} of {rng.choice(refs[a])} and {rng.choice(refs[b])}"
                out.append((q, ("value", (a, b), (metric,), "dataset", None, None, "macro")))
            else:
                q = f"{mtxt} and {rng.choice(_METRIC_REFS[m2])} of {mref}"
                out.append((q, ("value", (model,), (metric, m2), "dataset", None, None, "macro")))
        elif kind < 0.92:
            out.append(_change_question(rng, c, refs, model, mref))
        elif kind < 0.96:
            bad = rng.choice((f"model {len(names) + rng.randint(1, 5)}", "the speed-optimized model",
                              f"batch {max(c.batches or [0]) + rng.randint(50, 9000)}", "Hausdorff distance", "AUC",
                              "average precision", "HD95", "MCC", f"image IMG_{rng.randint(5000, 9999)}"))
            if bad.startswith(("model", "the ")):
                q = f"What is the {mtxt} of {bad}?"
            elif bad.startswith(("batch", "image")):
                q = f"{mtxt} of {mref} on {bad}"
            else:
                q = f"What is the {bad} of {mref}?"
            out.append((q, ("not_found",)))
        else:
            out.append((rng.choice(("Tell me a joke.", "What's the weather in Paris?", "Write a limerick about owls.",
                                    "Who painted the Mona Lisa?", "How many legs does a spider have?",
                                    "Recommend a good book.")) + rng.choice(("", " Please.", " Thanks!")),
                        ("off_topic",)))
    seen, unique = set(), []
    for q, spec in out:
        if q not in seen:
            seen.add(q)
            unique.append((q, spec))
    return unique


def handwritten(c: Catalog, path: Path = HANDWRITTEN) -> list[tuple[str, tuple]]:
    names = c.model_names
    out = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        q, spec = line.split("\t")
        w = spec.split()

        def models(tok: str) -> tuple[str, ...]:
            return tuple(names) if tok == "all" else tuple(names[int(x[1:]) - 1] for x in tok.split(","))

        def part(tok: str):
            if tok == "dataset":
                return "dataset", None, None
            kind, val = tok.split(":", 1)
            return (kind, int(val), None) if kind == "batch" else (kind, None, c.image(val) or val)

        if w[0] == "value":
            scope, b, i = part(w[3])
            out.append((q, ("value", models(w[1]), tuple(w[2].split(",")), scope, b, i, w[4])))
        elif w[0] == "rank_models":
            b = part(w[3])[1] if len(w) > 3 else None
            out.append((q, ("rank_models", w[1], b, w[2])))
        elif w[0] == "rank_units":
            out.append((q, ("rank_units", models(w[1])[0], w[2], w[3], w[4])))
        elif w[0] == "change":
            out.append((q, ("change", models(w[1]), tuple(w[2].split(",")), "macro")))
        elif w[0] == "rank_change":
            out.append((q, ("rank_change", w[1], w[2])))
        else:
            out.append((q, (w[0],)))
    return out


# --- ground truth, from SQL written here -----------------------------------------------
def _one(conn, sql: str, params: list) -> float:
    rows = run_query(conn, sql, params).rows
    assert len(rows) == 1, (sql, params, rows)
    return rows[0][0]


def truth_value(conn, c: Catalog, model: str, metric: str, scope: str, batch, image, avg: str) -> float:
    eid = _one(conn, "select id from evaluations where run_id = ? and model_name = ?", [c.run_id, model])
    if scope == "dataset":
        averaging = "dataset" if metric in _DATASET_ONLY else avg
        return _one(conn, "select value from evaluation_metrics where evaluation_id = ? and averaging = ? "
                          "and metric = ?", [eid, averaging, metric])
    if scope == "image":
        return _one(conn, f"select {metric} from image_metrics where evaluation_id = ? and image_id = ?", [eid, image])
    if avg == "micro":
        return _one(conn, f"select {metric} from batch_metrics where evaluation_id = ? and batch_index = ?", [eid, batch])
    if metric in ("dice", "iou"):
        return _one(conn, f"select mean_{metric} from batch_metrics where evaluation_id = ? and batch_index = ?",
                    [eid, batch])
    return _one(conn, f"select avg({metric}) from image_metrics where evaluation_id = ? and batch_index = ?", [eid, batch])


def truth(conn, c: Catalog, spec: tuple):
    kind = spec[0]
    if kind in ("not_found", "off_topic"):
        return (kind,)
    if kind == "value":
        _, models, metrics, scope, batch, image, avg = spec
        if avg == "micro" and scope == "image":
            avg = "macro"
        return ("value", {(m, k): truth_value(conn, c, m, k, scope, batch, image, avg) for m in models for k in metrics})
    if kind == "change":
        _, models, metrics, _ = spec
        return ("value", {(m, k): _one(conn, "select delta from comparisons where run_id = ? and model = ? and metric = ?",
                                       [c.run_id, m, k]) for m in models for k in metrics})
    if kind == "rank_change":
        _, metric, direction = spec
        vals = {m: _one(conn, "select delta from comparisons where run_id = ? and model = ? and metric = ?",
                        [c.run_id, m, metric]) for m in c.model_names}
        best = (max if direction == "max" else min)(vals.values())
        return ("rank_models", metric, frozenset(m for m, v in vals.items() if v == best), best)
    if kind == "rank_models":
        _, metric, batch, direction = spec
        vals = {m: truth_value(conn, c, m, metric, "batch" if batch is not None else "dataset", batch, None, "macro")
                for m in c.model_names}
        best = (max if direction == "max" else min)(vals.values())
        return ("rank_models", metric, frozenset(m for m, v in vals.items() if v == best), best)
    _, model, metric, unit, direction = spec
    eid = _one(conn, "select id from evaluations where run_id = ? and model_name = ?", [c.run_id, model])
    if unit == "batch":
        vals = {b: truth_value(conn, c, model, metric, "batch", b, None, "macro") for b in c.batches}
    else:
        vals = {k: v for k, v in run_query(conn, f"select image_id, {metric} from image_metrics where evaluation_id = ?",
                                           [eid]).rows if v is not None}
    best = (max if direction == "max" else min)(vals.values())
    return ("rank_units", model, metric, frozenset(u for u, v in vals.items() if v == best), best)


def exact(ans, want) -> bool:
    if want[0] == "not_found":
        return ans.status == "not found" and not ans.values
    if want[0] == "off_topic":
        return ans.status == "not about this audit" and not ans.values
    if ans.status in ("not found", "not about this audit"):
        return False
    if want[0] == "value":
        got = {(v.model, v.metric): v.value for v in ans.values}
        return got.keys() == want[1].keys() and all(abs(got[k] - want[1][k]) <= TOL for k in got) \
            and not ans.winners
    if want[0] == "rank_models":
        _, metric, winners, best = want
        got = ans.winners.get(metric)
        vals = [v.value for v in ans.values if v.metric == metric and v.model in (got or [])]
        return got is not None and frozenset(got) == winners and bool(vals) and abs(vals[0] - best) <= TOL \
            and set(ans.winners) == {metric}
    _, model, metric, units, best = want
    got = [v for v in ans.values if v.metric == metric and v.model == model]
    if len(got) != 1 or len(ans.values) != 1:
        return False
    unit = got[0].batch if got[0].batch is not None else got[0].image
    return unit in units and abs(got[0].value - best) <= TOL


class _Once:
    """The same model, each question read once (the combined and the LLM-alone answers share it)."""

    def __init__(self, llm):
        self.llm, self.spec, self.sha256, self._memo = llm, llm.spec, llm.sha256, {}

    def read(self, question, catalog):
        if question not in self._memo:
            self._memo[question] = self.llm.read(question, catalog)
        return self._memo[question]


def cold_ask(db: Path, key: str, runs: int, adapter: bool = True) -> list[float]:
    """Seconds of whole `glassbox-audit ask` processes (a fresh interpreter each time)."""
    exe = Path(sys.executable).with_name("glassbox-audit")
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        subprocess.run([str(exe), "ask", "--db", str(db), "--set", f"llm.model={key}",
                        "--set", f"llm.adapter={'true' if adapter else 'false'}",
                        f"What is the Dice of model {1 + i % 3}?"], check=True, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - t0)
    return times


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


def evaluate_model(db: Path, c: Catalog, qs: list, llm, verbose: bool) -> list[dict]:
    once = _Once(llm)
    answer_question("What is the Dice of model 1?", db, once, c)  # warm-up: the shared prefix
    rows = []
    for n, (q, want, split) in enumerate(qs, 1):
        ans = answer_question(q, db, once, c, min_margin=0.0)
        alone = answer_question(q, db, once, c, use_parser=False)
        parser = answer_question(q, db, None, c)
        reading = once.read(q, c)
        rows.append({"question": q, "split": split, "want": want[0], "status": ans.status,
                     "agree_and_complete": ans.status == "verified", "margin": reading.margin,
                     "exact": exact(ans, want), "llm_exact": exact(alone, want), "parser_exact": exact(parser, want),
                     "seconds": reading.seconds, "reading": reading.describe()})
        if verbose and not (rows[-1]["exact"] and rows[-1]["llm_exact"]):
            print(f"  {n}/{len(qs)} [{split}] {q!r}: status {ans.status}, exact {rows[-1]['exact']}, "
                  f"LLM alone {rows[-1]['llm_exact']}, parser {rows[-1]['parser_exact']}\n      {reading.describe()}",
                  file=sys.stderr, flush=True)
    return rows


def summarise(rows: list[dict], min_margin: float) -> dict:
    n = len(rows)
    verified = [r for r in rows if r["agree_and_complete"] and r["margin"] >= min_margin]
    nf_pred = [r for r in rows if r["status"] == "not found"]
    nf_true = [r for r in rows if r["want"] == "not_found"]
    off = [r for r in rows if r["want"] == "off_topic"]

    def share(k):
        return sum(r[k] for r in rows) / n if n else float("nan")

    right_verified = [r for r in rows if (r in verified and r["exact"]) or
                      (r["want"] in ("not_found", "off_topic") and r["exact"])]
    return {
        "questions": n,
        "right_and_verified": len(right_verified) / n if n else float("nan"),
        "verified": len(verified) / n if n else float("nan"),
        "verified_wrong": sum(not r["exact"] for r in verified),
        "llm_alone_exact": share("llm_exact"), "parser_alone_exact": share("parser_exact"),
        "not_found_precision": (sum(r["want"] == "not_found" for r in nf_pred) / len(nf_pred)) if nf_pred else float("nan"),
        "not_found_recall": (sum(r["status"] == "not found" for r in nf_true) / len(nf_true)) if nf_true else float("nan"),
        "off_topic_right": (sum(r["exact"] for r in off) / len(off)) if off else float("nan"),
        "median_s": statistics.median(r["seconds"] for r in rows) if rows else float("nan"),
        "p95_s": _pct([r["seconds"] for r in rows], 0.95),
    }


def choose_margin(dev: list[dict]) -> float:
    """The smallest margin at which no development answer is verified but wrong."""
    wrong = [r["margin"] for r in dev if r["agree_and_complete"] and not r["exact"]]
    return round(max(wrong) + 1e-3, 3) if wrong else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", type=Path, help="audit database (default: tests/llm_testdb.py's, built in a temp folder)")
    ap.add_argument("--models", nargs="*", default=list(KNOWN_MODELS), help="model keys (default: all known)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-ctx", type=int, default=LlmConfig().n_ctx)
    ap.add_argument("--gguf", nargs=2, action="append", default=[], metavar=("PATH", "SHA256"),
                    help="also benchmark this GGUF file (repeatable)")
    ap.add_argument("--no-handwritten", action="store_true", help="generated questions only (for another database)")
    ap.add_argument("--base", action="store_true",
                    help="also read with each model's base weights where it ships a task-tuned adapter")
    ap.add_argument("--cold", type=int, default=5, help="cold `glassbox-audit ask` processes to time per model")
    ap.add_argument("--json", type=Path, help="write every question's result here")
    ap.add_argument("--limit", type=int, default=0, help="about this many questions, evenly spread over the list, for a quick look (0: all)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every miss")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tmp = tempfile.TemporaryDirectory()
    db = args.db
    if db is None:
        from llm_testdb import build_compared_db

        db = build_compared_db(Path(tmp.name))
    c = Catalog.load(db)
    items = generated(c) + ([] if args.no_handwritten else handwritten(c))
    with open_readonly(db) as conn:
        qs = [(q, truth(conn, c, spec), split_of(q)) for q, spec in items]
    n_gen = len(items) - (0 if args.no_handwritten else len(handwritten(c)))
    kinds = ["generated"] * n_gen + ["handwritten"] * (len(qs) - n_gen)
    if args.limit:
        step = max(1, len(qs) // args.limit)
        qs, kinds = qs[::step], kinds[::step]
    before = db.read_bytes()
    n_gen = kinds.count("generated")
    print(f"database: {db}; {len(qs)} questions ({n_gen} generated, {len(qs) - n_gen} handwritten); "
          f"dev {sum(s == 'dev' for *_, s in qs)}, test {sum(s == 'test' for *_, s in qs)}; threads {args.threads}")
    configs = [(key, LlmConfig(model=key, threads=args.threads, n_ctx=args.n_ctx)) for key in args.models
               if KNOWN_MODELS[key].sha256 is not None]
    if args.base:
        configs += [(key, LlmConfig(model=key, adapter=False, threads=args.threads, n_ctx=args.n_ctx))
                    for key in args.models if KNOWN_MODELS[key].adapter]
    configs += [(Path(p).name, LlmConfig(gguf=p, sha256=s, threads=args.threads, n_ctx=args.n_ctx)) for p, s in args.gguf]
    report = []
    for key, cfg in configs:
        try:
            llm = load_configured_model(cfg, "models")
        except GlassBoxError as exc:
            print(f"{key}: not available ({exc})", file=sys.stderr)
            continue
        t0 = time.perf_counter()
        rows = evaluate_model(db, c, qs, llm, args.verbose)
        dev = [r for r in rows if r["split"] == "dev"]
        test = [r for r in rows if r["split"] == "test"]
        margin = choose_margin(dev)
        cold = cold_ask(db, key, args.cold, cfg.adapter) if args.cold and key in KNOWN_MODELS else []
        entry = {"model": key, "label": llm.spec.label, "sha256": llm.sha256, "seconds": time.perf_counter() - t0,
                 "chosen_margin": margin, "configured_margin": cfg.min_margin,
                 "dev": summarise(dev, margin), "test": summarise(test, margin),
                 "test_at_configured": summarise(test, cfg.min_margin),
                 "cold_median_s": statistics.median(cold) if cold else None, "cold_p95_s": _pct(cold, 0.95) if cold else None,
                 "rows": rows}
        report.append(entry)
    assert db.read_bytes() == before, "the benchmark changed the database"
    print("| model | split | n | right and verified | verified but wrong | LLM alone exact | parser alone exact | "
          "not-found P / R | off-topic right | median / p95 s warm | cold ask median / p95 s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for e in report:
        for split in ("dev", "test"):
            s = e[split]
            cold = f"{e['cold_median_s']:.2f} / {e['cold_p95_s']:.2f}" if e["cold_median_s"] else "-"
            print(f"| {e['label']} | {split} (margin {e['chosen_margin']}) | {s['questions']} | {s['right_and_verified']:.1%} | "
                  f"{s['verified_wrong']} | {s['llm_alone_exact']:.1%} | {s['parser_alone_exact']:.1%} | "
                  f"{s['not_found_precision']:.2f} / {s['not_found_recall']:.2f} | {s['off_topic_right']:.2f} | "
                  f"{s['median_s']:.2f} / {s['p95_s']:.2f} | {cold if split == 'test' else ''} |")
        t = e["test_at_configured"]
        print(f"| {e['label']} | test at llm.min_margin {e['configured_margin']} | {t['questions']} | "
              f"{t['right_and_verified']:.1%} | {t['verified_wrong']} | | | | | | |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
