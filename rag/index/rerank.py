"""The reranker trained here: a cross-encoder that reads (question, passage) and gives a relevance.

The MiniLM reader fine-tuned with a one-number head on [CLS] (rag/training/train_reranker.py,
record in rag/models/reranker/record.json), run over the first `rerank_depth` fused candidates.
Reading the question together with each passage sees what neither embedding nor BM25 can: that
a passage of the same article, with the same names, does not say what was asked.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ..weights import WeightsError, check, load, write_manifest as _write_manifest

RERANKER_DIR = Path(__file__).resolve().parents[1] / "models" / "reranker"
MANIFEST_FORMAT = "rag-reranker v1"


class RerankerError(WeightsError):
    """The shipped reranker cannot be loaded; the message names the file and how to restore it."""


class Reranker:
    """Scores passages for a question, higher = more likely to hold the answer.

    One model for all threads (torch's forward pass is re-entrant); the fast tokenizer's
    padding and truncation are settings of the shared object, so tokenising takes a lock.
    """

    def __init__(self, folder: Path | None = None, max_len: int = 192, max_question_tokens: int = 48, threads: int = 2, quantize: bool = True) -> None:
        self.folder = folder or RERANKER_DIR
        self.max_len = max_len
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
            try:
                self.manifest = check(self.folder, MANIFEST_FORMAT, "reranker")
            except WeightsError as err:
                raise RerankerError(str(err)) from err
            self._tokenizer, self._model = load(self.folder, "AutoModelForSequenceClassification", self.threads, self.quantize)

    def scores(self, question: str, passages: list[str]) -> list[float]:
        """One relevance score per passage (a logit: compare within one question only)."""
        if not passages:
            return []
        self.warm_up()
        import torch

        with self._tokenize:
            ids = self._tokenizer(question, add_special_tokens=False)["input_ids"][: self.max_question_tokens]
            question = self._tokenizer.decode(ids) if len(ids) == self.max_question_tokens else question
            enc = self._tokenizer([question] * len(passages), passages, truncation="only_second", max_length=self.max_len, padding=True, return_tensors="pt")
        with torch.inference_mode():
            return self._model(**enc).logits[:, 0].float().tolist()


def write_manifest(folder: Path, record: dict) -> dict:
    """Write a reranker folder's manifest (format, weights sha256 and size, the record)."""
    return _write_manifest(folder, record, MANIFEST_FORMAT)
