"""The deterministic question parser, the vocabulary both readers use and the SQL answers (no model)."""

from __future__ import annotations

import re

import pytest
from llm_testdb import IMAGE_IDS, build_audit_db

from glassbox_audit.llm import Catalog, parse_question
from glassbox_audit.llm.answer import answer_question
from glassbox_audit.llm.intent import Intent
from glassbox_audit.llm.vocabulary import ALL_MODELS, UNSUPPORTED_PREFIX, Vocabulary, normalise
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


def test_every_candidate_phrase_names_one_of_the_runs_own_values(catalog):
    vocab = Vocabulary.from_catalog(catalog)
    assert set(vocab.models) == {*catalog.model_names, ALL_MODELS}
    stored = {k for k in vocab.metrics if not k.startswith(UNSUPPORTED_PREFIX)}
    assert set(catalog.metrics) <= stored
    for phrases in (*vocab.models.values(), *vocab.metrics.values()):
        assert phrases and all(p == normalise(p) for p in phrases)
    # A phrase never names two models: shared ones ("tversky loss" of two Tversky variants) are dropped.
    model_phrases = [p for name in catalog.model_names for p in vocab.models[name]]
    assert len(model_phrases) == len(set(model_phrases))


@pytest.mark.parametrize("phrase,model", [
    ("precision-optimised", "precision-optimized"), ("precision optimized", "precision-optimized"),
    ("model #2", "balanced"), ("the 2nd model", "balanced"), ("variant three", "recall-optimized"),
    ("penalises false positives", "precision-optimized"), ("penalizes false negatives", "recall-optimized"),
    ("the last model", "recall-optimized")])
def test_spellings_numbers_and_descriptions_of_each_variant_are_in_its_vocabulary(catalog, phrase, model):
    assert phrase in Vocabulary.from_catalog(catalog).models[model]


def test_descriptions_come_from_the_recorded_loss_settings_not_the_name(tmp_path):
    # Same names, swapped losses: the description follows the loss, so "penalises false
    # negatives" names the model whose loss weights false negatives, whatever it is called.
    db = build_audit_db(tmp_path / "a.sqlite")
    c = Catalog.load(db)
    c.models[0] = type(c.models[0])(c.models[0].name, 1, "", {"kind": "tversky", "alpha": 0.2, "beta": 0.8})
    c.models[2] = type(c.models[2])(c.models[2].name, 3, "", {"kind": "tversky", "alpha": 0.8, "beta": 0.2})
    vocab = Vocabulary.from_catalog(c)
    assert "penalises false negatives" in vocab.models["precision-optimized"]
    assert "penalises false positives" in vocab.models["recall-optimized"]


def test_a_question_about_nothing_in_the_audit_is_not_about_it(db, catalog):
    for q in ("Tell me a joke.", "What's the capital of France?", "write me a haiku about autumn"):
        ans = answer_question(q, db, None, catalog)
        assert ans.status == "not about this audit" and not ans.values, q
    for q in ("How well do the models do?", "Dice?", "What is the Hausdorff distance of model 1?"):
        assert answer_question(q, db, None, catalog).status != "not about this audit", q


def test_rankings_leave_undefined_values_out(tmp_path):
    # An image without lesion pixels has no recall (NULL); SQLite sorts NULL first, so the
    # "worst image by recall" must be a real value, not that image.
    db = build_audit_db(tmp_path / "a.sqlite")
    c = Catalog.load(db)
    ans = answer_question("Which image has the lowest recall for model 1?", db, None, c)
    with open_readonly(db) as conn:
        n_null = run_query(conn, "select count(*) from image_metrics i join evaluations e on e.id = i.evaluation_id "
                                 "where e.model_name = 'precision-optimized' and i.recall is null").rows[0][0]
        lowest = run_query(conn, "select min(i.recall) from image_metrics i join evaluations e on "
                                 "e.id = i.evaluation_id where e.model_name = 'precision-optimized'").rows[0][0]
    assert n_null >= 1  # the fixture's lesion-free image
    assert [v.value for v in ans.values] == [pytest.approx(lowest, abs=0)]


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
