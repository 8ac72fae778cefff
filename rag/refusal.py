"""Answerability: measured signals that decide when to say "the articles don't say"."""

from __future__ import annotations

from pydantic import BaseModel

from .lexicon import NUMERIC_QUESTION, PERSON_QUESTION, REFUSAL_PHRASES
from .text import normalize, numbers, proper_names, words

# Calibrated on tests/golden (see benchmarks/calibrate.py and the eval report's threshold curve).
MIN_DENSE = 0.42
MIN_COVERAGE = 0.35
STRONG_DENSE = 0.55
MIN_DENSE_ALWAYS = 0.2
FULL_COVERAGE = 0.75

class Signals(BaseModel):
    """What the decision looks at; kept on the Answer's reason and in eval rows."""

    dense: float  # best cosine of question and an evidence sentence
    coverage: float  # IDF-weighted share of the question's key terms in the evidence
    wants_number: bool
    has_number: bool  # a number in the chosen sentences that the question does not already give
    wants_person: bool = False
    has_name: bool = True  # a capitalised name in the chosen sentences not in the question


def wants_number(question: str) -> bool:
    return bool(NUMERIC_QUESTION.search(normalize(question)))


def signals(question: str, evidence_texts: list[str], dense: float, coverage: float) -> Signals:
    """`evidence_texts` are the sentences the answer would come from."""
    q_numbers = numbers(question)
    q_words = set(words(question))
    return Signals(
        dense=round(dense, 4),
        coverage=round(coverage, 4),
        wants_number=wants_number(question),
        has_number=any(numbers(t) - q_numbers for t in evidence_texts),
        wants_person=wants_person(question),
        has_name=any(proper_names("x " + t) - q_words for t in evidence_texts),
    )


def unanswerable(s: Signals, min_dense: float = MIN_DENSE, min_coverage: float = MIN_COVERAGE) -> str | None:
    """The reason to refuse before generating, or None when the evidence may hold the answer."""
    if s.dense < min_dense and (s.coverage < FULL_COVERAGE or s.dense < MIN_DENSE_ALWAYS):
        # a short question can have a low cosine with the long sentence that answers it
        # ("What retention rate did Cohere have?" vs a list of six companies' rates), so a low
        # cosine alone refuses only when the question's key terms are not all there either
        return f"no passage is close to the question (best cosine {s.dense:.2f} < {min_dense})"
    if s.coverage < min_coverage and s.dense < STRONG_DENSE:
        return f"the passages miss the question's key terms (coverage {s.coverage:.2f} < {min_coverage})"
    if s.wants_number and not s.has_number:
        return "the question asks for a number and the best passages give none"
    if s.wants_person and not s.has_name:
        return "the question asks who, and the best passages name no one new"
    return None


def wants_person(question: str) -> bool:
    return bool(PERSON_QUESTION.search(normalize(question)))


def is_refusal(text: str) -> bool:
    """Whether the model's own words say the passages lack the answer."""
    return bool(REFUSAL_PHRASES.search(normalize(text)))
