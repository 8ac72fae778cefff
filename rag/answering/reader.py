"""The trained span reader: question + passages -> the answer's exact span, or "not there".

A MiniLM-L6 fine-tuned here on SQuAD with made negatives (rag/training/, record in
rag/models/reader/record.json). Like Haystack's ExtractiveReader, each passage is split into
overlapping windows, every window proposes its best span (start + end logit), and [CLS] gives
the window's "no answer here" score. Across all windows the best span wins; the no-answer
margin is the lowest [CLS] score minus that span's score (SQuAD v2's convention): the lower
the margin, the surer the reader is that the answer is there.
"""

from __future__ import annotations

import threading
from pathlib import Path

from pydantic import BaseModel, Field

from ..weights import MANIFEST, WEIGHTS, WeightsError, check, load, write_manifest as _write_manifest
from .spans import best_span

READER_DIR = Path(__file__).resolve().parents[1] / "models" / "reader"
MANIFEST_FORMAT = "rag-reader v1"


class ReaderError(WeightsError):
    """The shipped reader cannot be loaded; the message names the file and how to restore it."""


class Span(BaseModel):
    """One window's best answer span, in characters of its passage."""

    passage: int = Field(description="index into the passages given to read()")
    start: int
    end: int
    text: str
    score: float = Field(description="start + end logit of the span")
    null: float = Field(0.0, description="start + end logit of [CLS] in the span's window: that window's 'not here' score")
    runner_up: float = Field(-1e9, description="score of the window's best span sharing no token with this one (-1e9: none)")


class Reading(BaseModel):
    """What the reader found in a set of passages."""

    spans: list[Span] = Field([], description="best span per passage, best first")
    no_answer: float = Field(description="margin: lowest [CLS] score minus the best span's score; high = not there")

    @property
    def best(self) -> Span | None:
        return self.spans[0] if self.spans else None


def check_weights(folder: Path) -> dict:
    """The manifest of a reader folder, after checking the weights against it (rag.weights).

    Raises:
        ReaderError: the folder, manifest or weights file is missing, or the weights' sha256
            differs from the manifest; the message names the file and how to restore it.
    """
    try:
        return check(folder, MANIFEST_FORMAT, "reader")
    except WeightsError as err:
        raise ReaderError(str(err)) from err


class Reader:
    """Extractive reader over a handful of passages. Settings in the constructor, data in read().

    One model is shared by all threads; torch's forward pass is re-entrant, so it needs no
    lock. The fast tokenizer does: its padding and truncation are settings of the one shared
    object, which each call sets, so a concurrent call without them (the question clip) can
    leave another thread's batch unpadded ("Unable to create tensor", seen under 20 clients).
    Tokenising takes about a millisecond, so the lock costs nothing measurable.
    """

    def __init__(
        self,
        folder: Path | None = None,
        max_len: int = 192,
        stride: int = 64,
        max_answer_tokens: int = 30,
        max_question_tokens: int = 64,
        threads: int = 2,
        quantize: bool = True,
    ) -> None:
        """
        Args:
            folder: the reader's files (default: the weights shipped in rag/models/reader).
            max_len: tokens per window, question included (the length it was trained at).
            stride: tokens shared by consecutive windows of a long passage.
            max_answer_tokens: longest span considered.
            max_question_tokens: longer questions are cut to this many word pieces before reading.
            threads: CPU threads for the forward pass.
            quantize: int8 dynamic quantisation of the linear layers (faster on CPU; measured
                in benchmarks/reader_speed.py).
        """
        if stride >= max_len // 2:
            raise ValueError("stride must be less than half of max_len.")
        if max_question_tokens + stride >= max_len - 8:
            raise ValueError("max_question_tokens + stride must leave room for the passage in max_len.")
        self.folder = folder or READER_DIR
        self.max_len = max_len
        self.stride = stride
        self.max_answer_tokens = max_answer_tokens
        self.max_question_tokens = max_question_tokens
        self.threads = threads
        self.quantize = quantize
        self._model = None
        self._tokenizer = None
        self._lock = threading.Lock()
        self._tokenize = threading.Lock()
        self.manifest: dict = {}

    def warm_up(self) -> None:
        """Check the weights against their manifest and load them (~0.5 s)."""
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            self.manifest = check_weights(self.folder)
            self._tokenizer, self._model = load(self.folder, "AutoModelForQuestionAnswering", self.threads, self.quantize)

    def _clip_question(self, question: str) -> str:
        """The question cut to `max_question_tokens` word pieces, so a window keeps room for the
        passage (SQuAD questions are ~12 tokens; a 2,000-character question would fill it)."""
        with self._tokenize:
            enc = self._tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        if len(offsets) <= self.max_question_tokens:
            return question
        return question[: offsets[self.max_question_tokens - 1][1]]

    def read(self, question: str, passages: list[str]) -> Reading:
        """Find the answer to `question` in `passages`.

        Returns:
            Every passage's best span (best first) and the no-answer margin. With no
            passages, or none with text, no spans and an infinite margin.
        """
        if not passages or not any(p.strip() for p in passages):
            return Reading(spans=[], no_answer=float("inf"))
        self.warm_up()
        import torch

        question = self._clip_question(question)
        with self._tokenize:
            enc = self._tokenizer(
                [question] * len(passages),
                passages,
                truncation="only_second",
                max_length=self.max_len,
                stride=self.stride,
                return_overflowing_tokens=True,
                return_offsets_mapping=True,
                padding=True,
                return_tensors="pt",
            )
        owner = enc.pop("overflow_to_sample_mapping").tolist()
        offsets = enc.pop("offset_mapping").tolist()
        with torch.inference_mode():
            out = self._model(**enc)
        starts = out.start_logits.float().numpy()
        ends = out.end_logits.float().numpy()
        best: dict[int, Span] = {}
        null = float("inf")
        for w in range(len(owner)):
            seq = enc.sequence_ids(w)
            offs = [tuple(o) if seq[k] == 1 else None for k, o in enumerate(offsets[w])]
            pick = best_span(starts[w], ends[w], offs, self.max_answer_tokens)
            if pick is None:
                continue
            null = min(null, pick.null)
            p = owner[w]
            if p not in best or pick.score > best[p].score:
                best[p] = Span(passage=p, start=pick.start, end=pick.end, text=passages[p][pick.start : pick.end], score=pick.score, null=pick.null,
                                runner_up=max(pick.runner_up, -1e9))
        spans = sorted(best.values(), key=lambda s: -s.score)
        margin = null - spans[0].score if spans else float("inf")
        return Reading(spans=spans, no_answer=float(margin))


def write_manifest(folder: Path, record: dict) -> dict:
    """Write `folder`'s manifest: format, weights sha256 and size, and the training record."""
    return _write_manifest(folder, record, MANIFEST_FORMAT)
