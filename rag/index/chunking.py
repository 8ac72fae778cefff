"""Pure functions: a document's text -> sentence spans -> token-bounded chunks with offsets."""

from __future__ import annotations

import re
from collections.abc import Callable

from ..lexicon import ABBREVIATIONS
from ..types import Chunk, Sentence

# A sentence ends at . ! ? (plus closing quotes/brackets) followed by space and a likely
# sentence start, or at a line break. Abbreviations like "Mr." or "U.S." are protected below.
_BOUNDARY = re.compile(r"""(?<=[.!?])["'”’)\]]*\s+(?=["“‘(\[]?[A-Z0-9$£€])|\n+""")
_ABBREV = re.compile(r"(?:\b(?:" + "|".join(ABBREVIATIONS) + r")\.|\b(?:[A-Z]\.){2,})$")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans as (start, end) offsets, whitespace trimmed.

    >>> t = "Meta paid $14.3 billion. Wang joined.\\nNext"
    >>> [t[s:e] for s, e in split_sentences(t)]
    ['Meta paid $14.3 billion.', 'Wang joined.', 'Next']
    """
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        end = match.start()
        piece = text[start:end]
        if "\n" not in match.group(0) and _ABBREV.search(piece.rstrip("\"'”’)]")):
            continue  # "Dr. Smith" is one sentence
        _append_trimmed(text, start, match.end() if match.group(0).strip() else end, spans)
        start = match.end()
    _append_trimmed(text, start, len(text), spans)
    return spans


def _append_trimmed(text: str, start: int, end: int, spans: list[tuple[int, int]]) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if end > start:
        spans.append((start, end))


def _split_long(text: str, span: tuple[int, int], size: int, count: Callable[[str], int]) -> list[tuple[int, int]]:
    """Split an over-long sentence at word boundaries into pieces of at most `size` tokens."""
    start, end = span
    pieces: list[tuple[int, int]] = []
    words = [(m.start() + start, m.end() + start) for m in re.finditer(r"\S+", text[start:end])]
    piece_start = None
    last_end = start
    for w_start, w_end in words:
        if piece_start is None:
            piece_start = w_start
        elif count(text[piece_start:w_end]) > size:
            pieces.append((piece_start, last_end))
            piece_start = w_start
        last_end = w_end
    if piece_start is not None:
        pieces.append((piece_start, last_end))
    return pieces


def chunk_text(
    text: str, size: int, overlap: int, count: Callable[[str], int]
) -> list[tuple[int, int]]:
    """Greedy sentence packing: each chunk holds whole sentences up to `size` tokens and
    starts with the trailing sentences of the previous chunk worth up to `overlap` tokens.

    A sentence longer than `size` is split at word boundaries. Returns (start, end) spans.

    >>> t = "One two. Three four. Five six."
    >>> [t[s:e] for s, e in chunk_text(t, 4, 2, lambda s: len(s.split()))]
    ['One two. Three four.', 'Three four. Five six.']
    """
    if overlap >= size:
        raise ValueError("overlap must be less than size.")
    units: list[tuple[int, int, int]] = []
    for span in split_sentences(text):
        n = count(text[span[0] : span[1]])
        if n > size:
            units.extend((s, e, count(text[s:e])) for s, e in _split_long(text, span, size, count))
        else:
            units.append((span[0], span[1], n))
    chunks: list[tuple[int, int]] = []
    i = 0
    while i < len(units):
        j, total = i, 0
        while j < len(units) and (j == i or total + units[j][2] <= size):
            total += units[j][2]
            j += 1
        chunks.append((units[i][0], units[j - 1][1]))
        if j >= len(units):
            break
        # step back over trailing sentences that fit in the overlap, but always move forward
        k, carried = j, 0
        while k - 1 > i and carried + units[k - 1][2] <= overlap:
            carried += units[k - 1][2]
            k -= 1
        i = k
    return chunks


def chunk_document(
    doc_id: str, text: str, size: int, overlap: int, count: Callable[[str], int], first_id: int = 0
) -> tuple[list[Chunk], list[Sentence]]:
    """Chunks and sentences of one document; ids are global when `first_id` continues a corpus."""
    spans = chunk_text(text, size, overlap, count)
    chunks = [
        Chunk(doc_id=doc_id, chunk_id=first_id + n, text=text[s:e], start=s, end=e) for n, (s, e) in enumerate(spans)
    ]
    sentences: list[Sentence] = []
    for s, e in split_sentences(text):
        owner = next((c.chunk_id for c in chunks if c.start <= s and e <= c.end), None)
        if owner is None:  # an over-long sentence split across chunks: cite its first piece's chunk
            owner = next(c.chunk_id for c in chunks if c.start <= s < c.end)
        sentences.append(Sentence(doc_id=doc_id, sentence_id=0, chunk_id=owner, text=text[s:e], start=s, end=e))
    return chunks, sentences
