"""answer(): question -> retrieval -> evidence -> refusal gate -> generation -> checked citations."""

from __future__ import annotations

import logging
import re
import threading
import queue
import time
import unicodedata
from collections.abc import Iterator

from .citations import best_supporting, check_answer, cited_numbers, drop_bad_markers, to_citation
from .config import Settings
from .corpus import Corpus, load_corpus
from .embedding import Embedder, Encoder
from .env import apply_env_defaults
from .llm import Generation, Generator, OnToken, make_generator
from .index import Index, ensure_index
from .prompt import REFUSAL, build_messages
from .refusal import FULL_COVERAGE, Signals, is_refusal, signals, unanswerable
from .retrieval import Retriever
from .text import terms
from .types import Answer, Citation, Evidence

log = logging.getLogger(__name__)

REFUSAL_TEXT = "The articles don't say. I couldn't find this in the indexed articles."
SECOND_SENTENCE_MARGIN = 0.25
_INVISIBLE = re.compile(r"[\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")


def clean_question(question: str, max_chars: int) -> str:
    """Validate and normalise a user question.

    Invisible format characters (zero-width spaces and joiners, soft hyphens, bidi marks and
    isolates, tag characters) are removed, since they sit inside words ("Alt\u00adman" is
    "Altman" to a reader); other control characters become spaces. The length limit is checked
    before any other work, so an over-long question is never tokenised.

    >>> clean_question("  Who is Alt\u00adman\u2069?\x07 ", 100)
    'Who is Altman?'

    Raises:
        ValueError: the question is not a string, is empty, or is longer than `max_chars`.
    """
    if not isinstance(question, str):
        raise ValueError(f"The question must be text, not {type(question).__name__}.")
    if len(question) > max_chars:
        raise ValueError(f"The question is {len(question)} characters long; the limit is {max_chars}.")
    question = _INVISIBLE.sub("", question)
    out = []
    for ch in question:
        kind = unicodedata.category(ch)
        if kind == "Cf":
            continue  # format characters are invisible and join or split nothing a reader sees
        out.append(" " if kind[0] == "C" else ch)  # controls, lone surrogates, private use
    question = unicodedata.normalize("NFC", " ".join("".join(out).split()))
    if not question:
        raise ValueError("The question is empty: type a question about the articles.")
    return question


class Pipeline:
    """Everything answer() needs, loaded once and shared by all threads.

    Settings come in the constructor; heavy parts (models, index) load on first use or in
    warm_up(), so importing rag or building a Pipeline is instant.
    """

    def __init__(
        self, settings: Settings | None = None, generator: Generator | None = None, embedder: Encoder | None = None
    ) -> None:
        """`generator` and `embedder` may be shared between pipelines (tests, several corpora)."""
        apply_env_defaults()  # before anything below can import torch
        self.settings = settings or Settings()
        self._generator = generator
        self._lock = threading.RLock()
        self._corpus: Corpus | None = None
        self._embedder: Encoder | None = embedder
        self._index: Index | None = None
        self._retriever: Retriever | None = None

    # -- lazy parts ----------------------------------------------------------------------
    @property
    def corpus(self) -> Corpus:
        with self._lock:
            if self._corpus is None:
                self._corpus = load_corpus(self.settings.corpus_dir, self.settings.max_file_bytes)  # type: ignore[arg-type]
            return self._corpus

    @property
    def embedder(self) -> Encoder:
        with self._lock:
            if self._embedder is None:
                self._embedder = Embedder.from_settings(self.settings)
            return self._embedder

    @property
    def index(self) -> Index:
        with self._lock:
            if self._index is None:
                self._index = ensure_index(self.corpus, self.embedder, self.settings)
            return self._index

    @property
    def retriever(self) -> Retriever:
        with self._lock:
            if self._retriever is None:
                self._retriever = Retriever(self.index, self.embedder, self.settings)
            return self._retriever

    @property
    def generator(self) -> Generator:
        with self._lock:
            if self._generator is None:
                self._generator = make_generator(self.settings.model)
            return self._generator

    def warm_up(self) -> None:
        """Load everything and run one tiny generation so the first user pays nothing.

        The corpus and index come first: an empty corpus fails before any model loads.
        """
        self.retriever.warm_up()
        self.embedder.warm_up()
        self.embedder.encode_query("warm up")
        if self.settings.use_llm:
            self.generator.warm_up()
            self.generator.generate([{"role": "user", "content": "Hi"}], max_new_tokens=1)

    def title(self, doc_id: str) -> str:
        return self.index.documents[doc_id].title

    # -- answering -----------------------------------------------------------------------
    def answer(self, question: str, top_k: int | None = None, searched: str | None = None, on_token: OnToken | None = None) -> Answer:
        """Answer a question from the articles, with citations.

        Args:
            question: the user's question.
            top_k: chunks retrieved (default `settings.top_k`).
            searched: the standalone form of a follow-up question, used for retrieval.
            on_token: called with each piece of the model's text as it is generated. The final
                Answer may differ from the streamed text: when the checks reject it, it is
                replaced by an extractive answer, and invalid markers are removed.

        Raises:
            ValueError: the question is empty or over the length limit, or top_k is out of range.
        """
        s = self.settings
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        question = clean_question(question, s.max_question_chars)
        if top_k is not None and not 1 <= top_k <= 20:
            raise ValueError(f"top_k must be between 1 and 20, not {top_k}.")
        query = clean_question(searched, s.max_question_chars) if searched else question

        t = time.perf_counter()
        hits = self.retriever.candidates(query, top_k or s.top_k)
        evidence = self.retriever.evidence(query, hits, s.evidence_k)
        timings["retrieve"] = time.perf_counter() - t

        chosen = choose_sentences(query, evidence)
        sig = signals(
            query,
            [e.sentence.text for e in chosen],
            max((e.dense for e in evidence), default=0.0),
            self.retriever.coverage(query, evidence),
        )
        base = dict(question=question, searched=query, signals=sig.model_dump())
        why = unanswerable(sig)
        if why:
            timings["total"] = time.perf_counter() - t0
            return self._refused(base, why, evidence, timings)

        if not s.use_llm:
            timings["total"] = time.perf_counter() - t0
            return self._extractive(base, chosen, "LLM disabled in settings", timings)

        t = time.perf_counter()
        messages = build_messages(query, chosen)
        generation = self.generator.generate(messages, s.max_new_tokens, on_token=on_token)
        timings["generate"] = time.perf_counter() - t
        timings["first_token"] = generation.first_token_s
        answer = self._finish(base, query, chosen, evidence, generation, sig, timings)
        answer.timings["total"] = round(time.perf_counter() - t0, 4)
        return answer

    def stream(self, question: str, top_k: int | None = None, searched: str | None = None) -> "AnswerStream":
        """Iterate over the returned stream for the model's text pieces; its `answer` is the checked Answer.

        Raises:
            ValueError: as answer(), before the first piece.
        """
        clean_question(question, self.settings.max_question_chars)  # a bad question fails here, not mid-stream
        return AnswerStream(lambda on_token: self.answer(question, top_k=top_k, searched=searched, on_token=on_token))

    # -- the three ways an answer ends ---------------------------------------------------
    def _finish(
        self, base: dict, query: str, chosen: list[Evidence], evidence: list[Evidence], gen: Generation, sig: Signals, timings: dict
    ) -> Answer:
        """Keep the model's answer only if it passes the checks; otherwise quote the evidence."""
        raw = _first_line(gen.text)
        if is_refusal(raw):
            # The model's "not in the passages" is trusted when the question's key terms are
            # not all covered; with full coverage it is the 135M model giving up on a real answer.
            if sig.coverage < FULL_COVERAGE:
                return self._refused(base, "the model found no answer in the passages", evidence, timings, gen.prompt_tokens)
            return self._extractive(base, chosen, "the model declined despite strong evidence", timings, gen.prompt_tokens)
        text = drop_bad_markers(raw, len(chosen))
        used = cited_numbers(text, len(chosen))
        how = "cited by the model"
        if not used:
            used = best_supporting(text, chosen)
            text = f"{text.rstrip()} " + "".join(f"[{n}]" for n in used)
            how = "no marker from the model; attached the passage(s) holding its words"
        if self.settings.grounding_check:
            verdict = check_answer(text, [chosen[n - 1].sentence.text for n in used], query)
            if not verdict.ok:
                return self._extractive(base, chosen, f"generated answer rejected: {verdict.why}", timings, gen.prompt_tokens)
        return Answer(
            **base,
            text=text,
            citations=[self._cite(n, chosen[n - 1]) for n in used],
            route="generated",
            reason=how,
            timings=_rounded(timings),
            prompt_tokens=gen.prompt_tokens,
        )

    def _extractive(self, base: dict, chosen: list[Evidence], reason: str, timings: dict, prompt_tokens: int = 0) -> Answer:
        """Quote the chosen sentence(s) verbatim, cited: always grounded, never invented."""
        text = " ".join(f"{_one_line(e.sentence.text)} [{n}]" for n, e in enumerate(chosen, start=1))
        return Answer(
            **base,
            text=text,
            citations=[self._cite(n, e) for n, e in enumerate(chosen, start=1)],
            route="extractive",
            reason=reason,
            timings=_rounded(timings),
            prompt_tokens=prompt_tokens,
        )

    def _refused(self, base: dict, why: str, evidence: list[Evidence], timings: dict, prompt_tokens: int = 0) -> Answer:
        return Answer(
            **base,
            text=REFUSAL_TEXT,
            citations=[],
            closest=[self._cite(n, e) for n, e in enumerate(evidence[:2], start=1)],
            refused=True,
            route="refused",
            reason=why,
            timings=_rounded(timings),
            prompt_tokens=prompt_tokens,
        )

    def _cite(self, n: int, e: Evidence) -> Citation:
        return to_citation(n, e, self.index.documents[e.sentence.doc_id])


class AnswerStream:
    """The model's text pieces as an iterator, for callers that loop (the chat UI, the CLI).

    The answer runs on a worker thread that hands each piece over; once the loop ends, `answer`
    holds the checked Answer, and an error of the worker is raised in the loop.
    """

    def __init__(self, run) -> None:
        self.answer: Answer | None = None
        self._run = run

    def __iter__(self) -> Iterator[str]:
        pieces: queue.Queue = queue.Queue()
        end = object()
        failure: list[BaseException] = []

        def work() -> None:
            try:
                self.answer = self._run(pieces.put)
            except BaseException as err:  # handed to the caller's thread below
                failure.append(err)
            finally:
                pieces.put(end)

        worker = threading.Thread(target=work, name="rag-answer", daemon=True)
        worker.start()
        while (piece := pieces.get()) is not end:
            yield piece
        worker.join()
        if failure:
            raise failure[0]


def choose_sentences(query: str, evidence: list[Evidence]) -> list[Evidence]:
    """The sentence(s) an answer is built from: the best one, plus the next best if it holds
    key terms of the question that the first lacks and scores close to it (a two-part
    question often needs two sentences). The LLM reads only these, so it cannot drift to
    another passage, and the prompt stays short."""
    if not evidence:
        return []
    chosen = [evidence[0]]
    q_terms = set(terms(query))
    got = set(terms(evidence[0].sentence.text))
    for e in evidence[1:]:
        if (q_terms - got) & set(terms(e.sentence.text)) and e.score >= evidence[0].score - SECOND_SENTENCE_MARGIN:
            chosen.append(e)
            break
    return chosen


def _first_line(text: str) -> str:
    """The answer's first line, with a leading "[2] ..." list marker moved to its end."""
    text = text.strip()
    if not text:
        return REFUSAL
    line = text.split("\n", 1)[0].strip()
    lead = re.match(r"^((?:\[\d+\]\s*)+)(.+)$", line)
    if lead:
        line = f"{lead.group(2).strip()} {lead.group(1).strip()}"
    return line


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _rounded(timings: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in timings.items()}


_default: Pipeline | None = None
_default_lock = threading.Lock()


def default_pipeline() -> Pipeline:
    """The process-wide pipeline behind rag.answer(), created on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Pipeline()
        return _default


def answer(question: str, top_k: int | None = None) -> Answer:
    """Answer a question from the articles in corpus/, with citations.

    Raises:
        ValueError: the question is empty or over the length limit.
    """
    return default_pipeline().answer(question, top_k=top_k)
