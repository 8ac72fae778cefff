"""Fakes for pure-logic tests (the fast tier): no model is loaded, every output is deterministic.

`HashEmbedder` stands in for the sentence-transformers model (Haystack ships the same idea):
a text's vector is its bag of stemmed content terms, each hashed to one dimension, so texts
sharing words are close and unrelated ones are orthogonal. `ScriptedGenerator` stands in for
the LLM: it replies what the test scripted, streamed word by word through `on_token`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np

from rag.index.embedding import EmbeddingModel
from rag.llm import Generation, Message, OnToken
from rag.text import terms


class HashEmbedder:
    """Implements rag.index.embedding.Encoder; counts its calls so tests can check what was embedded."""

    def __init__(self, dim: int = 256, name: str = "hash-v1") -> None:
        self._dim = dim
        self.name = name
        self.encoded = 0  # texts embedded
        self.queries = 0  # encode_query calls

    def identity(self) -> EmbeddingModel:
        return EmbeddingModel(package="tests.fakes", version=self.name, weights="hash", sha256=hashlib.sha256(self.name.encode()).hexdigest())

    @property
    def dim(self) -> int:
        return self._dim

    def warm_up(self) -> None:
        pass

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def _vector(self, text: str) -> np.ndarray:
        v = np.zeros(self._dim, dtype=np.float32)
        for term in terms(text):
            v[int.from_bytes(hashlib.sha256(term.encode()).digest()[:4], "little") % self._dim] += 1.0
        norm = np.linalg.norm(v)
        return v / norm if norm else v

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        self.encoded += len(texts)
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        return np.stack([self._vector(t) for t in texts])

    def encode_query(self, text: str) -> np.ndarray:
        self.queries += 1
        return self.encode([text])[0]


class ScriptedGenerator:
    """Implements rag.llm.Generator. `reply` is a fixed text or a function of the messages."""

    def __init__(self, reply: str | Callable[[list[Message]], str]) -> None:
        self.reply = reply
        self.calls: list[list[Message]] = []
        self.warmed = False

    def warm_up(self) -> None:
        self.warmed = True

    def count_tokens(self, messages: list[Message]) -> int:
        return sum(len(m["content"].split()) for m in messages)

    def generate(
        self, messages: list[Message], max_new_tokens: int, stop: Sequence[str] = ("\n",), on_token: OnToken | None = None
    ) -> Generation:
        self.calls.append(messages)
        text = self.reply(messages) if callable(self.reply) else self.reply
        pieces = [w + " " for w in text.split(" ")][:max_new_tokens]
        pieces[-1] = pieces[-1].rstrip(" ")
        out = []
        for piece in pieces:
            out.append(piece)
            if on_token is not None:
                on_token(piece)
            if any(s in piece for s in stop):
                break
        return Generation(
            text="".join(out),
            prompt_tokens=self.count_tokens(messages),
            new_tokens=len(out),
            first_token_s=0.001,
            total_s=0.002,
            finish_reason="stop" if len(out) < max_new_tokens else "length",
        )


class ScriptedReader:
    """Implements the reader's read(): finds the scripted span text verbatim in the passages.

    `span` is the answer text to find (None: no span anywhere); `margin` is the no-answer
    margin to report (low = sure the answer is there).
    """

    def __init__(self, span: str | None, margin: float = -10.0) -> None:
        self.span = span
        self.margin = margin
        self.calls = 0

    def warm_up(self) -> None:
        pass

    def read(self, question: str, passages: list[str]):
        from rag.answering.reader import Reading, Span

        self.calls += 1
        spans = []
        for i, p in enumerate(passages):
            at = p.find(self.span) if self.span else -1
            if at >= 0:
                spans.append(Span(passage=i, start=at, end=at + len(self.span), text=self.span, score=10.0 - i))
        return Reading(spans=spans, no_answer=self.margin if spans else float("inf"))
