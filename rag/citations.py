"""[n] markers <-> passages, and the check that an answer's facts are in what it cites."""

from __future__ import annotations

import bisect
import re

from pydantic import BaseModel

from .lexicon import STOPWORDS
from .text import numbers, proper_names, stem, words
from .types import Citation, Document, Evidence

MARKER = re.compile(r"\[(\d+)\]")
_MARKER_RUN = re.compile(r"\s*(?:\[\d+\](?:\s*,\s*)?)+")


def cited_numbers(text: str, k: int) -> list[int]:
    """Markers that point at one of the k passages, in order of first use.

    >>> cited_numbers("Yes [2], and [7] no [2][1].", 3)
    [2, 1]
    """
    seen: list[int] = []
    for m in MARKER.finditer(text):
        n = int(m.group(1))
        if 1 <= n <= k and n not in seen:
            seen.append(n)
    return seen


def drop_bad_markers(text: str, k: int) -> str:
    """Remove markers that point at no passage; the valid ones keep their original numbers.

    >>> drop_bad_markers("A [1] B [9].", 2)
    'A [1] B.'
    """
    out = MARKER.sub(lambda m: m.group(0) if 1 <= int(m.group(1)) <= k else "", text)
    return re.sub(r"\s+([.,;:!?])", r"\1", re.sub(r"[ \t]{2,}", " ", out)).strip()


def strip_markers(text: str) -> str:
    return _MARKER_RUN.sub("", text).strip()


# Share of an answer's content words that must appear in its passages (or the question).
# Measured on the golden set: looser answers from the 135M model were wrong twice as often
# as quoting the passage (benchmarks/RESULTS.md).
MIN_SUPPORT = 0.95


class Grounding(BaseModel):
    """Whether an answer's checkable facts appear in the passages it relies on."""

    ok: bool
    missing: list[str] = []
    support: float = 0.0  # share of the answer's content words found in the passages


def check_grounding(answer: str, passages: list[str], question: str = "") -> Grounding:
    """Every number and proper name in the answer must appear in the passages (names may also
    come from the question), and most of its content words must too.

    This catches the 135M model's typical failures: a number from its memory, a person from
    another passage, or a fluent sentence about something else.

    >>> check_grounding("Cohere had 64 percent [1].", ["Cohere had (64 percent)"]).ok
    True
    >>> check_grounding("Cohere had 80 percent.", ["Cohere (64 percent)"]).missing
    ['80']
    """
    body = strip_markers(answer)
    source = " ".join(passages)
    missing = sorted(numbers(body) - numbers(source))
    allowed_names = {w for w in words(source + " " + question)}
    missing += sorted(n for n in proper_names(body) if n not in allowed_names and n.rstrip("s") not in allowed_names)
    content = [stem(w) for w in words(body) if w not in STOPWORDS and not w[0].isdigit()]
    source_stems = {stem(w) for w in words(source + " " + question)}
    support = sum(1 for w in content if w in source_stems) / len(content) if content else 0.0
    ok = not missing and bool(content or numbers(body)) and support >= MIN_SUPPORT
    return Grounding(ok=ok, missing=missing, support=round(support, 3))


def best_supporting(answer: str, evidence: list[Evidence]) -> list[int]:
    """Passage numbers to attach when the model gave no marker.

    Decided by overlap: the passage(s) containing the answer's numbers and names first, then the
    passage sharing the most content words with the answer. Returns 1-based numbers.
    """
    if not evidence:
        return []
    body = strip_markers(answer)
    keys = numbers(body) | proper_names(body)
    content = {stem(w) for w in words(body) if w not in STOPWORDS}
    scored = []
    for n, e in enumerate(evidence, start=1):
        text = e.sentence.text
        key_hits = len(keys & (numbers(text) | {w for w in words(text)}))
        word_hits = len(content & {stem(w) for w in words(text)})
        scored.append((key_hits, word_hits, -n, n))
    scored.sort(reverse=True)
    top = scored[0]
    chosen = [top[3]]
    # a second passage only if it brings a key fact the first lacks (multi-part answers)
    first_text = evidence[top[3] - 1].sentence.text
    lacking = keys - (numbers(first_text) | set(words(first_text)))
    for key_hits, _, _, n in scored[1:]:
        text = evidence[n - 1].sentence.text
        if lacking & (numbers(text) | set(words(text))):
            chosen.append(n)
            break
    return chosen


def to_citation(n: int, e: Evidence, document: Document) -> Citation:
    """Passage `n` of an answer: the evidence sentence, with its document's title and page.

    >>> from rag.types import Sentence
    >>> doc = Document(doc_id="d", title="T", text="Page one. Page two.", path="", sha256="", pages=[0, 10])
    >>> s = Sentence(doc_id="d", sentence_id=1, chunk_id=0, text="Page two.", start=10, end=19)
    >>> to_citation(1, Evidence(sentence=s, score=1.0, dense=0.5, overlap=0.5), doc).page
    2
    """
    s = e.sentence
    page = bisect.bisect_right(document.pages, s.start) if document.pages else None
    return Citation(
        n=n, doc_id=s.doc_id, title=document.title, chunk_id=s.chunk_id, text=s.text, start=s.start, end=s.end,
        score=round(e.score, 4), page=page,
    )


class Verdict(BaseModel):
    ok: bool
    why: str = ""


def check_answer(answer: str, cited: list[str], question: str) -> Verdict:
    """Accept a generated answer only if it is grounded in what it cites AND answers something.

    Grounded: every number and name in the answer is in the cited passages and most of its
    words are (see check_grounding). Answers: it adds a fact from the passages that the question
    did not already contain — a number for a how-much question, a name for a who question,
    otherwise at least one content word. A fluent restatement of the question fails.

    >>> check_answer("Cohere had 64 percent [1].", ["Cohere had 64 percent, Meta 64 percent"], "What rate did Cohere have?").ok
    True
    >>> check_answer("Cohere had a retention rate [1].", ["Cohere (64 percent)"], "What retention rate did Cohere have?").why
    'it adds nothing the question did not already say'
    """
    from .refusal import wants_number, wants_person

    grounding = check_grounding(answer, cited, question)
    if not grounding.ok:
        missing = f"missing {', '.join(grounding.missing)}" if grounding.missing else f"support {grounding.support}"
        return Verdict(ok=False, why=f"not grounded in the cited passage ({missing})")
    body = strip_markers(answer)
    if len(body.split()) > MAX_ANSWER_WORDS:
        return Verdict(ok=False, why=f"longer than {MAX_ANSWER_WORDS} words")
    q_stems = {stem(w) for w in words(question)}
    source = " ".join(cited)
    new_numbers = (numbers(body) & numbers(source)) - numbers(question)
    new_names = (proper_names("x " + body) & {w for w in words(source)}) - set(words(question))
    new_words = {stem(w) for w in words(body) if w not in STOPWORDS and not w[0].isdigit()} - q_stems
    if wants_number(question) and not new_numbers:
        return Verdict(ok=False, why="the question asks for a number and the answer gives none from the passage")
    if wants_number(question) and len(numbers(source) - numbers(question)) > 1:
        # several candidate numbers: the 135M model often pairs the wrong one with the subject
        # ("$100 million" for a "$10,000,000 a year" offer), so quote the passage instead
        return Verdict(ok=False, why="the passage holds several numbers; quoting it rather than trusting the pick")
    if wants_person(question) and not new_names:
        return Verdict(ok=False, why="the question asks who and the answer names no one from the passage")
    if not (new_numbers or new_names or new_words):
        return Verdict(ok=False, why="it adds nothing the question did not already say")
    return Verdict(ok=True)


MAX_ANSWER_WORDS = 25
