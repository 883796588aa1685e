"""Hostile text is escaped, hostile names never reach a path, the query command cannot write."""

import pytest

from .battery import (NAME_CASES, QUERY_CASES, case_llm_answer, case_review_text, hostile_name,
                      query_attack)


@pytest.mark.parametrize("case", NAME_CASES)
def test_hostile_or_traversing_names_are_refused(sandbox, case):
    o = hostile_name(sandbox, case)
    assert o.held, o.problems


def test_reviewer_text_is_escaped_in_the_html_and_shown_literally_in_the_pdf(sandbox):
    o = case_review_text(sandbox, pdf=True)
    assert o.held, o.problems


@pytest.mark.parametrize("case", QUERY_CASES)
def test_query_refuses_every_way_to_write(sandbox, case):
    o = query_attack(sandbox, case)
    assert o.held, o.problems
    assert "refused" in o.message


def test_llm_questions_and_answers_are_escaped_in_the_appendix(sandbox):
    o = case_llm_answer(sandbox)
    assert o.held, o.problems
