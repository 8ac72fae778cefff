"""[n] markers <-> passages: parse, clean and attach the numbers an answer cites."""

from __future__ import annotations

import bisect
import re

from ..lexicon import STOPWORDS
from ..text import numbers, proper_names, stem, words
from ..types import Citation, Document, Evidence

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
    """Passage `n` of an answer: the evidence sentence, with its document's title and page, and
    whether OCR read that page.

    >>> from rag.types import Sentence
    >>> doc = Document(doc_id="d", title="T", text="Page one. Page two.", path="", sha256="", pages=[0, 10])
    >>> s = Sentence(doc_id="d", sentence_id=1, chunk_id=0, text="Page two.", start=10, end=19)
    >>> c = to_citation(1, Evidence(sentence=s, score=1.0, dense=0.5, overlap=0.5), doc.model_copy(update={"ocr_pages": [2]}))
    >>> c.page, c.ocr
    (2, True)
    """
    s = e.sentence
    page = bisect.bisect_right(document.pages, s.start) if document.pages else None
    return Citation(
        n=n, doc_id=s.doc_id, title=document.title, chunk_id=s.chunk_id, text=s.text, start=s.start, end=s.end,
        score=round(e.score, 4), page=page, ocr=page is not None and page in document.ocr_pages,
    )
