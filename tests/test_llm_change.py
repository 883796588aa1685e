"""Questions about the change since the previous version, answered from the stored comparison
(compare.diff_databases, AuditStore.record_comparison): parser, vocabulary and SQL, no model."""

from __future__ import annotations

import pytest
from llm_testdb import build_audit_db, build_compared_db

from glassbox_audit.llm import Catalog, parse_question
from glassbox_audit.llm.answer import Change, answer_question
from glassbox_audit.llm.reader import tuned_system
from glassbox_audit.metrics import COMPARED_METRICS
from glassbox_audit.query import open_readonly, run_query

ALL = ("precision-optimized", "balanced", "recall-optimized")


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return build_compared_db(tmp_path_factory.mktemp("change"))


@pytest.fixture(scope="module")
def catalog(db):
    return Catalog.load(db)


def _stored(db, model, metric):
    with open_readonly(db) as conn:
        return run_query(conn, "select a, b, delta, regression from comparisons where model = ? and metric = ?",
                         [model, metric]).dicts()[0]


def test_the_catalog_knows_the_version_its_comparison_is_against(catalog, tmp_path):
    assert catalog.version == 2 and catalog.against == "v001"
    assert catalog.compared == [m for m in COMPARED_METRICS if m in catalog.compared] and "dice" in catalog.compared
    assert "previous version: v001" in tuned_system(catalog)
    first = Catalog.load(build_audit_db(tmp_path / "first.sqlite"))
    assert first.against is None and first.compared == []
    assert "previous version: none" in tuned_system(first)


@pytest.mark.parametrize("question, models, metrics, aggregate", [
    ("Did the balanced model's Dice drop since the previous version?", ("balanced",), ("dice",), "macro"),
    ("has recall of the recall-optimised net gone down since v001", ("recall-optimized",), ("recall",), "macro"),
    ("How much did model 1 improve in precision compared with last night's run?", ("precision-optimized",),
     ("precision",), "macro"),
    ("any regression in DSC since v1 for the precision model?", ("precision-optimized",), ("dice",), "macro"),
    ("how did Dice move between versions for each model?", ALL, ("dice",), "macro"),
    ("which model lost the most Dice since version 1?", ALL, ("dice",), "min"),
    ("biggest drop in IoU since the last run: which variant?", ALL, ("iou",), "min"),
    ("which network improved most on precision since the previous version?", ALL, ("precision",), "max"),
    ("Is the balanced model better on specificity than v001?", ("balanced",), ("specificity",), "macro"),
])
def test_change_questions_are_read_as_the_change_since_the_previous_version(catalog, question, models, metrics,
                                                                             aggregate):
    intent = parse_question(question, catalog)
    assert (intent.scope, intent.models, intent.metrics, intent.aggregate, intent.missing) == \
        ("change", models, metrics, aggregate, ())


def test_a_change_is_answered_with_both_values_the_delta_and_the_runs_verdict(db, catalog):
    ans = answer_question("Did the balanced model's Dice drop since the previous version?", db, None, catalog)
    stored = _stored(db, "balanced", "dice")
    assert ans.status == "needs review"  # no LLM: the parser alone never verifies
    (value,) = ans.values
    assert isinstance(value, Change) and value.against == "v001"
    assert (value.before, value.after, value.value) == (stored["a"], stored["b"], stored["delta"])
    assert value.regression == bool(stored["regression"])
    assert f"{stored['a']:.4f} -> {stored['b']:.4f}" in ans.sentence and "since v001" in ans.sentence
    assert "image mean" in ans.sentence and "95% CI" in ans.sentence
    assert ("flagged as a regression" in ans.sentence) == value.regression


def test_the_model_that_dropped_most_is_the_one_with_the_lowest_stored_delta(db, catalog):
    ans = answer_question("Which model's Dice dropped the most since v001?", db, None, catalog)
    deltas = {m: _stored(db, m, "dice")["delta"] for m in ALL}
    assert ans.winners == {"dice": [min(deltas, key=deltas.get)]}
    word = "Largest drop" if min(deltas.values()) < 0 else "Smallest rise"
    assert f"{word} in Dice (image mean, this version less v001): {min(deltas, key=deltas.get)}" in ans.sentence


@pytest.mark.parametrize("question, missing", [
    ("Did the Dice of model 2 fall since v005?", "version v005"),
    ("has pooled Dice dropped since the previous version for model 1?", "pooled-pixel change"),
    ("Did pixel accuracy of model 1 change since the last version?", "a change in pixel accuracy"),
    ("did the Dice of model 2 on batch 3 drop since the previous version?", "a change per batch"),
    ("Did the dice of model 9 drop since the last version?", "model 9"),
])
def test_a_change_the_store_does_not_hold_is_not_found(db, catalog, question, missing):
    ans = answer_question(question, db, None, catalog)
    assert ans.status == "not found" and not ans.values
    assert missing in ans.sentence


def test_on_a_first_version_a_change_question_is_not_found_not_a_value(tmp_path):
    db = build_audit_db(tmp_path / "first.sqlite")
    ans = answer_question("did dice drop since the previous version?", db, None, Catalog.load(db))
    assert ans.status == "not found" and not ans.values
    assert "no stored comparison" in ans.sentence


def test_questions_without_a_change_word_keep_their_scope(catalog):
    assert parse_question("What is the Dice of model 2 on batch 3?", catalog).scope == "batch"
    assert parse_question("which image has the worst recall for model 1?", catalog).scope == "image"
    assert parse_question("What is the Dice of each model?", catalog).scope == "dataset"


# -- with the packaged GGUF model (real llama.cpp, no mocks) ----------------------------------
@pytest.fixture(scope="module")
def llm():
    from glassbox_audit.config import LlmConfig
    from glassbox_audit.llm import load_configured_model

    return load_configured_model(LlmConfig(threads=2))


@pytest.mark.parametrize("question, models, metrics, aggregate", [
    ("Did the balanced model's Dice drop since the previous version?", ("balanced",), ("dice",), "macro"),
    ("has the recall of model 3 changed since v001?", ("recall-optimized",), ("recall",), "macro"),
    ("Which model's IoU dropped the most since the last version?", ALL, ("iou",), "min"),
    ("how did the precision of each model change since the previous run?", ALL, ("precision",), "macro"),
])
def test_the_llm_reader_alone_reads_change_questions(llm, db, catalog, question, models, metrics, aggregate):
    from glassbox_audit.llm.intent import Intent

    ans = answer_question(question, db, llm, catalog, use_parser=False)
    want = Intent(models, "change", None, None, metrics, aggregate).canonical(catalog)
    assert ans.llm_intent.canonical(catalog) == want, ans.raw_output
    assert ans.status == "needs review"  # one reading alone is never verified


def test_a_change_question_both_readers_agree_on_is_verified_with_the_stored_deltas(llm, db, catalog):
    ans = answer_question("How did the Dice of each model change since the previous version?", db, llm, catalog)
    assert ans.status == "verified", ans.sentence
    assert {v.model: v.value for v in ans.values} == {m: _stored(db, m, "dice")["delta"] for m in ALL}


def test_the_llm_reader_alone_finds_a_version_the_run_is_not_compared_with(llm, db, catalog):
    ans = answer_question("Did the Dice of model 2 drop since v007?", db, llm, catalog, use_parser=False)
    assert ans.status == "not found" and not ans.values and "v007" in ans.sentence


def test_a_version_with_a_comparison_also_answers_the_change_questions(llm, db, tmp_path):
    import shutil

    from glassbox_audit.config import load_config
    from glassbox_audit.llm import answer_standard_questions

    copy = shutil.copy(db, tmp_path / "audit.sqlite")
    cfg = load_config(overrides=["llm.threads=2", 'llm.standard_questions=["What is the Dice of each model?"]'])
    answers = answer_standard_questions(copy, cfg)
    assert [a.question for a in answers] == cfg.llm.standard_questions + cfg.llm.change_questions
    assert all(a.intent.scope == "change" for a in answers[1:])
    first = build_audit_db(tmp_path / "first.sqlite")
    assert [a.question for a in answer_standard_questions(first, cfg)] == cfg.llm.standard_questions


def test_every_default_appendix_question_of_a_compared_version_comes_back_verified(llm, db, tmp_path):
    """The default audit's six standard questions and two change questions, as a nightly
    version (compared with the one before) answers them in its appendix."""
    import shutil

    from glassbox_audit.config import load_config
    from glassbox_audit.llm import answer_standard_questions

    copy = shutil.copy(db, tmp_path / "audit.sqlite")
    cfg = load_config(overrides=["llm.threads=2"])
    answers = answer_standard_questions(copy, cfg)
    assert len(answers) == len(cfg.llm.standard_questions) + len(cfg.llm.change_questions) == 8
    assert [a.status for a in answers] == ["verified"] * 8, [(a.question, a.sentence) for a in answers]
