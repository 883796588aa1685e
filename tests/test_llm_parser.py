"""The deterministic question parser, the grammar's vocabulary and the SQL answers (no model)."""

from __future__ import annotations

import json
import re

import pytest
from llm_testdb import IMAGE_IDS, build_audit_db

from glassbox_audit.llm import Catalog, parse_question
from glassbox_audit.llm.answer import answer_question
from glassbox_audit.llm.grammar import in_language, intent_gbnf, intent_schema
from glassbox_audit.llm.intent import Intent, IntentError
from glassbox_audit.llm.prompt import build_messages, intent_json
from glassbox_audit.query import open_readonly, run_query

ALL = ("precision-optimized", "balanced", "recall-optimized")


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return build_audit_db(tmp_path_factory.mktemp("parser") / "audit.sqlite")


@pytest.fixture(scope="module")
def catalog(db):
    return Catalog.load(db)


def test_catalog_holds_the_runs_real_names(catalog):
    assert catalog.model_names == list(ALL)
    assert catalog.batches == [0, 1, 2, 3]
    assert catalog.images == IMAGE_IDS
    assert "dice" in catalog.metrics and "thresholded_jaccard" in catalog.metrics and "f1" not in catalog.metrics


@pytest.mark.parametrize("question, metrics", [
    ("What is the DSC of the balanced model?", ("dice",)),
    ("F1 score of the balanced model", ("dice",)),
    ("Jaccard index of the balanced model", ("iou",)),
    ("sensitivity of the balanced model", ("recall",)),
    ("TPR of the balanced model", ("recall",)),
    ("PPV of the balanced model", ("precision",)),
    ("TNR of the balanced model", ("specificity",)),
    ("accuracy of the balanced model", ("pixel_accuracy",)),
    ("ISIC thresholded Jaccard of the balanced model", ("thresholded_jaccard",)),
    ("precision and recall of the balanced model", ("precision", "recall")),
])
def test_synonyms_map_to_stored_metric_names(catalog, question, metrics):
    intent = parse_question(question, catalog)
    assert intent.metrics == metrics and intent.models == ("balanced",) and not intent.missing


@pytest.mark.parametrize("question, models", [
    ("Dice of model 1", ("precision-optimized",)),
    ("Dice of the second model", ("balanced",)),
    ("Dice of variant 3", ("recall-optimized",)),
    ("Dice of the recall-optimized one", ("recall-optimized",)),
    ("Dice of the recall optimised model", ("recall-optimized",)),
    ("Dice of the precision variant", ("precision-optimized",)),
    ("Dice of model 1 and model 3", ("precision-optimized", "recall-optimized")),
    ("Dice of every model", ALL),
    ("What is the Dice?", ALL),
])
def test_models_are_read_by_name_number_or_description(catalog, question, models):
    assert parse_question(question, catalog).models == models


def test_a_model_name_containing_a_metric_word_is_not_read_as_that_metric(catalog):
    intent = parse_question("What is the precision of the recall-optimized model?", catalog)
    assert intent.models == ("recall-optimized",) and intent.metrics == ("precision",)


@pytest.mark.parametrize("question, scope, batch, image, aggregate", [
    ("Dice of model 2 on batch 3", "batch", 3, None, "macro"),
    ("pixel-pooled Dice of model 2 in batch #1", "batch", 1, None, "micro"),
    ("Which batch has the lowest Dice for model 1?", "batch", None, None, "min"),
    ("IoU of model 3 for image img_0005", "image", None, "IMG_0005", "macro"),
    ("Which image has the worst IoU for model 3?", "image", None, None, "min"),
    ("Which model has the highest recall?", "dataset", None, None, "max"),
])
def test_scope_and_aggregate(catalog, question, scope, batch, image, aggregate):
    intent = parse_question(question, catalog)
    assert (intent.scope, intent.batch, intent.image, intent.aggregate) == (scope, batch, image, aggregate)


@pytest.mark.parametrize("question, missing", [
    ("Dice of model 2 on batch 9999", "batch 9999"),
    ("Dice of model 7", "model 7"),
    ("Dice of the speed-optimized model", "speed-optimized model"),
    ("IoU of image XYZ_0001", "image XYZ_0001"),
    ("thresholded Jaccard of model 1 on batch 2", "per batch"),
])
def test_things_the_database_lacks_are_reported_missing(catalog, question, missing):
    assert any(missing in m for m in parse_question(question, catalog).missing)


@pytest.mark.parametrize("question, metric", [
    ("Hausdorff distance of model 1", "Hausdorff distance"),
    ("What is the AUC of the balanced model?", "AUC"),
    ("average precision of each model", "average precision"),
    ("surface Dice of model 2", "surface distance"),
])
def test_a_metric_the_run_does_not_store_is_not_found_never_read_as_another(catalog, db, question, metric):
    intent = parse_question(question, catalog)
    assert any(metric in m for m in intent.missing)
    ans = answer_question(question, db)
    assert ans.status == "not found" and not ans.values


def test_canonical_form_makes_equal_meanings_equal(catalog):
    a = Intent(("recall-optimized", "balanced"), "image", 2, "IMG_0001", ("iou", "dice"), "micro")
    b = Intent(("balanced", "recall-optimized"), "image", None, "IMG_0001", ("dice", "iou"), "macro")
    assert a.canonical(catalog) == b.canonical(catalog)
    assert Intent(ALL, "dataset", metrics=("dice",), aggregate="max").canonical(catalog) != \
        Intent(ALL, "dataset", metrics=("dice",), aggregate="min").canonical(catalog)


def test_llm_json_outside_the_catalog_is_refused(catalog):
    good = intent_json(["dice"], "macro", ["all"], "batch", 2)
    assert Intent.from_llm_json(good, catalog).models == ALL
    for bad in ('{"metrics": ["dice"]', intent_json(["dice"], "macro", ["model-x"], "dataset"),
                intent_json(["dice"], "macro", ["all"], "batch", 9999), intent_json(["f2"], "macro", ["all"], "dataset")):
        with pytest.raises(IntentError):
            Intent.from_llm_json(bad, catalog)


def test_grammar_enumerates_exactly_the_catalog(catalog):
    gbnf = intent_gbnf(catalog)
    for name in catalog.model_names + catalog.metrics:
        assert f'"\\"{name}\\""' in gbnf
    assert '"3"' in gbnf and '"4"' not in gbnf.split("batch ::=")[1].splitlines()[0]
    schema = intent_schema(catalog)
    assert schema["properties"]["batch"]["enum"] == [None, 0, 1, 2, 3]
    assert "\\." not in json.dumps(schema)  # llama.cpp's schema converter crashes on an escaped dot


def _gbnf_regex(gbnf: str) -> re.Pattern:
    """The grammar's language as a regular expression: an oracle written apart from
    ``in_language``. Covers the GBNF this project writes (literals, rule names, ``|``,
    groups, ``{m,n}``, character classes); every rule is inlined, none is recursive."""
    rules = dict(line.split(" ::= ", 1) for line in gbnf.strip().splitlines())
    token = re.compile(r'"(?:\\.|[^"\\])*"|\[[^\]]*\]|\{\d+,\d+\}|[()|]|[a-z_]+|\s+')

    def expand(body: str) -> str:
        out = []
        for t in token.findall(body):
            if t.isspace():
                continue
            if t.startswith('"'):
                out.append(re.escape(json.loads(t)))
            elif t.startswith(("[", "{")) or t in "()|":
                out.append("(?:" if t == "(" else t)
            else:
                out.append("(?:" + expand(rules[t]) + ")")
        return "".join(out)

    return re.compile(expand(rules["root"]))


def test_in_language_accepts_exactly_the_grammars_sentences(catalog):
    # The fast path keeps a free greedy output only when in_language says the grammar would have
    # produced it too: it must never accept a text outside the grammar's language.
    oracle = _gbnf_regex(intent_gbnf(catalog))
    rng = __import__("random").Random(7)
    texts = []
    for _ in range(300):
        metrics = rng.sample(catalog.metrics, rng.randint(1, 4))
        models = ["all"] if rng.random() < 0.3 else rng.sample(catalog.model_names, rng.randint(1, len(catalog.model_names)))
        scope = rng.choice(["dataset", "batch", "image"])
        batch = rng.choice([None, *catalog.batches])
        image = rng.choice([None, *catalog.images])
        good = intent_json(metrics, rng.choice(["macro", "micro", "max", "min"]), models, scope, batch, image)
        texts += [good, good + " ", good.replace(", ", ",", 1), good.replace('"dice"', '"f2"'), good + "}",
                  good.replace("null", "9999", 1), good.replace('"models"', '"modelz"'), good[:-1],
                  good.replace("[", "[ ", 1), good.replace('"all"', '"all", "all"')]
    texts += [intent_json(["dice"] * 5, "macro", ["all"], "dataset"), intent_json(["dice"], "macro", [], "dataset"),
              '{"aggregate": "macro", "metrics": ["dice"], "models": ["all"], "scope": "dataset", "batch": null, "image": null}',
              intent_json(["dice"], "macro", ["all"], "batch", True), ""]
    accepted = 0
    for text in texts:
        assert in_language(text, catalog) == bool(oracle.fullmatch(text)), text
        accepted += in_language(text, catalog)
    assert 300 <= accepted < len(texts)  # both answers were exercised


def test_prompt_carries_no_metric_values(catalog, db):
    with open_readonly(db) as conn:
        value = run_query(conn, "select value from evaluation_metrics where metric = 'dice' limit 1").rows[0][0]
    text = json.dumps(build_messages("Dice of model 1?", catalog))
    assert f"{value:.4f}" not in text and f"{value:.3f}" not in text


def test_answers_come_from_sql_and_unknown_batch_is_not_found(db, catalog):
    ans = answer_question("Dice of model 2 on batch 1", db, None, catalog)
    with open_readonly(db) as conn:
        expected = run_query(conn, "select avg(i.dice) from image_metrics i join evaluations e on e.id = i.evaluation_id "
                                   "where e.model_name = 'balanced' and i.batch_index = 1").rows[0][0]
    assert [v.value for v in ans.values] == [pytest.approx(expected, abs=0)]
    assert ans.status == "needs review"  # no LLM: the parser alone never verifies
    missing = answer_question("Dice of model 2 on batch 9999", db, None, catalog)
    assert missing.status == "not found" and not missing.values
    assert "batch 9999" in missing.sentence and not re.search(r"\d\.\d{4}", missing.sentence)
