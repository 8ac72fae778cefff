"""Typed objects passed between the stages: documents, spans, hits, citations, answers."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


DEFAULT_COLLECTION = "default"  # files directly in corpus/


class Document(BaseModel):
    """One corpus file, as its converter extracted it (rag/ingest/).

    `text` is stored in the index and is the only source of every offset: chunks, citations
    and the viewer read it, never the file again.
    """

    doc_id: str
    title: str
    text: str
    path: str
    sha256: str = Field(description="of the file's bytes, to notice a changed file")
    pages: list[int] = Field([], description="character offset in `text` where each page starts; empty if unpaged")
    ocr_pages: list[int] = Field([], description="1-based pages whose text OCR read (every page of an image); empty if none")
    added_at: float = Field(0.0, description="when it entered the index (Unix time); 0 if unknown")
    collection: str = Field(DEFAULT_COLLECTION, description="who may read it: a subfolder of corpus/, or `rag add --collection`")


class Chunk(BaseModel):
    """A sentence-aligned span of a document: `document.text[start:end] == text`."""

    doc_id: str
    chunk_id: int
    text: str
    start: int
    end: int


class Sentence(BaseModel):
    """One sentence of a document, the unit of evidence the LLM reads and a citation quotes."""

    doc_id: str
    sentence_id: int
    chunk_id: int = Field(description="first chunk that contains this sentence")
    text: str
    start: int
    end: int


class Hit(BaseModel):
    """A retrieved chunk with the scores that ranked it."""

    chunk: Chunk
    score: float = Field(description="fused reciprocal-rank score")
    dense: float = Field(description="cosine similarity of question and chunk")
    bm25: float = 0.0
    rerank: float | None = Field(None, description="the reranker's score, when one ordered the candidates")


class Evidence(BaseModel):
    """A sentence chosen to show the LLM, with its support score for the question."""

    sentence: Sentence
    score: float
    dense: float
    overlap: float = Field(description="share of the question's key terms present in the sentence")


class Citation(BaseModel):
    """A numbered source of an answer: a verbatim passage of a document's stored text."""

    n: int
    doc_id: str
    title: str
    chunk_id: int
    text: str
    start: int = Field(description="offset into the document's text: text == document.text[start:end]")
    end: int
    score: float
    page: int | None = Field(None, description="1-based page the passage starts on; None for an unpaged document")
    ocr: bool = Field(False, description="the passage's page was read by OCR (a scan or an image): its text may hold misread characters")
    highlight: tuple[int, int] | None = Field(
        None, description="for a refusal's related passage: the reader's best span in `text` (start, end), which the policy would not state"
    )


class Signals(BaseModel):
    """What the answer policy measured about the evidence (rag/answering/policy.py); kept on the Answer."""

    dense: float = Field(description="best cosine of the question and an evidence sentence")
    coverage: float = Field(description="IDF-weighted share of the question's key terms in the evidence")
    wants_number: bool = Field(description="the question asks how much, how many, when ...")
    has_number: bool = Field(description="a number in the chosen sentences that the question does not already give")
    wants_person: bool = Field(False, description="the question asks who")
    has_name: bool = Field(True, description="a capitalised name in the chosen sentences not in the question")
    no_answer: float | None = Field(None, description="the reader's no-answer margin ([CLS] minus best span); None when it did not read")
    p_right: float | None = Field(None, description="the answer policy's calibrated probability that the answer it would state is right")
    features: dict[str, float] = Field({}, description="what the answer policy read (rag/answering/confidence.py FEATURES)")


class Answer(BaseModel):
    """What `rag.answer()` returns: text with [n] markers and the passages they point at."""

    question: str
    text: str
    span: str = Field("", description="the short answer itself, as the reader found it verbatim ('64 percent'); empty when refused")
    citations: list[Citation] = []
    closest: list[Citation] = Field([], description="for a refusal with close passages: the nearest ones, shown as 'may be related'")
    refused: bool = False
    confidence: float | None = Field(
        None,
        description="calibrated probability that what was done is right: for an answer, that it is right; for a refusal, that "
        "the answer the reader would have given is wrong (or that there is none). None when the learned policy was not used",
    )
    route: Literal["generated", "extractive", "refused"] = Field("generated", description="which way the answer was made")
    reason: str = Field("", description="why this path was taken (grounding or refusal signal)")
    searched: str = Field("", description="the standalone question used for retrieval")
    signals: Signals | None = Field(None, description="what the answer policy measured; None when nothing was retrieved")
    timings: dict[str, float] = {}
    prompt_tokens: int = 0
