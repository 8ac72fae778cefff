"""From the reader's span to what a person reads: the kind of answer a question wants, the LLM's
phrasing of the span, the check that keeps that phrasing honest, and the plain template.

The check is not tuned to one model: a phrasing is kept when it contains the span (numbers
compared by value) and names nothing (no name, no number) that the cited passage and the
question lack. A bigger model may use other words; it is not thrown away for that.
"""

from __future__ import annotations

import re

from pydantic import BaseModel

from .citations import strip_markers
from ..lexicon import EXPLAIN_QUESTION, LIST_QUESTION, NUMERIC_QUESTION, PERSON_QUESTION, PERSON_ROLE_QUESTION, TWO_ASKS
from ..text import matches, normalize, numbers, proper_names, words



class Phrasing(BaseModel):
    """Whether a phrasing is kept, and why not."""

    ok: bool
    why: str = ""


def answer_kind(question: str) -> str:
    """"span" (a short fact), "explain" (why/how) or "list" (several things or several asks).

    >>> [answer_kind(q) for q in ["How many left?", "Why did he leave?", "Who left, and when?", "What are the two reasons?"]]
    ['span', 'explain', 'list', 'list']
    >>> answer_kind("Who scaled the models, and in which month did he leave?")
    'list'

    """
    q = normalize(question)
    if EXPLAIN_QUESTION.search(q):
        return "explain"
    if LIST_QUESTION.search(q) or TWO_ASKS.search(q):
        return "list"
    return "span"


def wants_number(question: str) -> bool:
    """Whether the question asks for a number.

    >>> wants_number("How many researchers left?"), wants_number("Who left?")
    (True, False)
    """
    return bool(NUMERIC_QUESTION.search(normalize(question)))


def wants_person(question: str, by_role: bool = False) -> bool:
    """Whether the question asks for a person; with `by_role`, also by role ("which executive").

    >>> wants_person("Whose lab is it?"), wants_person("What lab is it?")
    (True, False)
    >>> wants_person("Which executive left?"), wants_person("Which executive left?", by_role=True)
    (False, True)
    """
    q = normalize(question)
    return bool(PERSON_QUESTION.search(q) or (by_role and PERSON_ROLE_QUESTION.search(q)))


def names_someone(span: str) -> bool:
    """A span that can answer a who-question: it holds a capitalised name.

    >>> names_someone("Alexandr Wang"), names_someone("the CEO of the lab")
    (True, False)
    """
    return any(t[0].isupper() and not t.isupper() for t in re.findall(r"[^\W\d_]+", span) if len(t) > 1)


def template(span: str) -> str:
    """The plain answer when no phrasing is kept: the span as a sentence.

    >>> template("64 percent")
    '64 percent.'
    """
    text = span.strip().rstrip(".,;:")
    return text[:1].upper() + text[1:] + "."


def messages(question: str, span: str, passage: str) -> list[dict[str, str]]:
    """The prompt that asks the LLM to phrase the span as one short sentence.

    One worked example first: without it the 135M model answered "One sentence: 14"
    (benchmarks/phrasing.md).
    """
    return [
        {
            "role": "system",
            "content": "Answer the question in one short sentence that contains the given answer exactly. "
            "Use only facts from the passage.",
        },
        {"role": "user", "content": f"Passage: {EXAMPLE[0]}\nQuestion: {EXAMPLE[1]}\nAnswer: {EXAMPLE[2]}"},
        {"role": "assistant", "content": EXAMPLE[3]},
        {"role": "user", "content": f"Passage: {passage}\nQuestion: {question}\nAnswer: {span}"},
    ]


EXAMPLE = (
    "The Harbour Bridge was opened in 1932 by the mayor, Alice Brown.",
    "Who opened the bridge?",
    "Alice Brown",
    "The bridge was opened by Alice Brown.",
)


def check(text: str, span: str, passage: str, question: str, max_words: int) -> Phrasing:
    """Keep a phrasing only if it holds the span and adds no name or number of its own.

    >>> check("Cohere kept 64% of its staff.", "64 percent", "Cohere (64 percent)", "What did Cohere keep?", 30).ok
    True
    >>> check("Cohere kept 80% of its staff.", "64 percent", "Cohere (64 percent)", "What did Cohere keep?", 30).why
    'it does not contain the answer "64 percent"'
    >>> check("Google kept 64 percent.", "64 percent", "Cohere (64 percent)", "What did Cohere keep?", 30).why
    'it names what the passage lacks: google'
    """
    body = strip_markers(text)
    if not body:
        return Phrasing(ok=False, why="empty")
    if len(body.split()) > max_words:
        return Phrasing(ok=False, why=f"longer than {max_words} words")
    if not matches(body, span):
        return Phrasing(ok=False, why=f'it does not contain the answer "{span}"')
    allowed = passage + " " + question + " " + span
    extra_numbers = sorted(numbers(body) - numbers(allowed))
    known = set(words(allowed))
    # every name must be known, a sentence's first word too
    extra_names = sorted(n for n in proper_names(body, sentence_starts=True) if n not in known and n.rstrip("s") not in known)
    if extra_numbers or extra_names:
        return Phrasing(ok=False, why="it names what the passage lacks: " + ", ".join(extra_numbers + extra_names))
    return Phrasing(ok=True)

