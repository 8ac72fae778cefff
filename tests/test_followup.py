"""Follow-up rewriting: known rewrites, questions left alone, and odd input."""

from __future__ import annotations

import pytest

from rag.answering.followup import entities, is_followup, rewrite

FRAME = "How much did Meta offer AI researchers?"


@pytest.mark.parametrize(
    "question, expected",
    [
        ("and what about Google?", "How much did Google offer AI researchers?"),
        ("What about OpenAI", "How much did OpenAI offer AI researchers?"),
        ("How about xAI?", "How much did xAI offer AI researchers?"),
        ("And Elon Musk?", "How much did Elon Musk offer AI researchers?"),
        ("And what did they offer?", "What did Meta offer?"),
        ("Why?", "How much did Meta offer AI researchers? Why?"),
        ("and when?", "How much did Meta offer AI researchers? When?"),
        ("what about the salaries?", "How much did Meta offer AI researchers? What about the salaries?"),
    ],
)
def test_known_rewrites(question, expected):
    assert rewrite(question, [FRAME]) == expected


def test_pronoun_takes_the_name_and_possessive():
    assert rewrite("Who did he hire?", ["What did Elon Musk say about Meta?"]) == "Who did Elon Musk hire?"
    assert rewrite("What did his company offer?", ["Who is Sam Altman?"]) == "What did Sam Altman's company offer?"


@pytest.mark.parametrize(
    "question",
    [
        "Who is Alexandr Wang?",
        "What did Zuckerberg email to researchers?",
        "How much did Meta offer researchers to join their lab?",
        "Did Altman say that Meta offered $100 million signing bonuses?",
    ],
)
def test_standalone_questions_are_unchanged(question):
    assert not is_followup(question)
    assert rewrite(question, [FRAME]) == question


def test_only_the_last_question_is_the_frame():
    history = ["Who is Alexandr Wang?", FRAME]
    assert rewrite("and Google?", history) == "How much did Google offer AI researchers?"


def test_no_history_or_empty_input():
    assert rewrite("and what about Google?", []) == "and what about Google?"
    assert rewrite("   ", [FRAME]) == ""
    assert rewrite("  Who   is Wang? ", []) == "Who is Wang?"


def test_frame_without_a_name_is_merged():
    assert rewrite("and what about Google?", ["how big were the offers?"]) == "how big were the offers, regarding Google?"


def test_entities_skip_question_words_and_short_acronyms():
    assert entities("What did Sam Altman say about AI at OpenAI?") == ["Sam Altman", "OpenAI"]
    assert entities("Meta’s offer to Wang") == ["Meta", "Wang"]
    assert entities("Tell me about Wang") == ["Wang"]
    assert entities("") == []


def test_emoji_and_non_latin_input_do_not_break():
    assert rewrite("and 🤖?", [FRAME]).startswith(FRAME)
    assert rewrite("Что это?", [FRAME]) == f"{FRAME} Что это?"  # two words: a follow-up
