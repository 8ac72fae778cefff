"""answer(): wires the parts (index, retriever, answer policy, LLM) into question -> cited Answer.

Each part is injectable (`Pipeline(settings, index=..., retriever=..., generator=..., embedder=...)`)
and loads on first use or in its `warm_up()`.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from pydantic import BaseModel, Field

from .answering.policy import AnswerPolicy, Decision, signals
from .answering.citations import to_citation
from .answering.confidence import Calibrator, features
from .config import Settings
from .env import apply_env_defaults
from .index.corpus import load_corpus
from .index.embedding import Embedder, Encoder
from .index.manifest import CURRENT, Index, StaleIndex, UpdateReport, ensure_index, indexed_files
from .llm import Generator, LLMError, OnToken, make_generator
from .answering.phrasing import messages as phrasing_messages
from .answering.prompt import build_messages
from .answering.reader import Reader, Span
from .index.rerank import Reranker
from .index.retrieval import Retriever
from .types import DEFAULT_COLLECTION, Answer, Citation, Document, Evidence, Signals

log = logging.getLogger(__name__)

REFUSAL_TEXT = "The articles don't say. I couldn't find this in the indexed articles."
RELATED_TEXT = "The articles don't state this. The passages below may be related."
LLM_FAILED = "the LLM failed"  # how Answer.reason starts when the LLM could not answer and the answer was made without it
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


class Draft(BaseModel):
    """An answer on its way: what was asked, the evidence found and what the policy measured."""

    question: str
    searched: str = Field(description="the standalone question used for retrieval")
    evidence: list[Evidence] = Field(description="the best sentences of the retrieved chunks, best first")
    chosen: list[Evidence] = Field(description="the one or two of them an answer is built from")
    signals: Signals
    timings: dict[str, float] = {}
    prompt_tokens: int = 0
    llm_failed: str = Field("", description="why the LLM gave no text (LLM_FAILED: its one-line error); empty when it answered")
    held_back: Span | None = Field(None, description="the span the policy weighed (shown highlighted if it refuses)")
    held_back_evidence: list[Evidence] = Field([], description="the sentence(s) holding that span")


class Pipeline:
    """Everything answer() needs, loaded once and shared by all threads.

    Settings come in the constructor; heavy parts (models, index) load on first use or in
    warm_up(), so importing rag or building a Pipeline is instant. Any part may be passed in
    (shared between pipelines, or a fake in tests); the rest are built from `settings`.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        index: Index | None = None,
        retriever: Retriever | None = None,
        generator: Generator | None = None,
        embedder: Encoder | None = None,
        reader: Reader | None = None,
        calibrator: Calibrator | None = None,
        reranker: Reranker | None = None,
    ) -> None:
        apply_env_defaults()  # before anything below can import torch
        self.settings = settings or Settings()
        self.policy = AnswerPolicy(self.settings)
        self._lock = threading.RLock()
        self._follow_lock = threading.Lock()
        self._compactor: threading.Thread | None = None
        self._embedder = embedder or (retriever.embedder if retriever else None)
        self._index = index or (retriever.index if retriever else None)
        self._retriever = retriever
        self._generator = generator
        self._reader = reader
        self._calibrator = calibrator
        self._reranker = reranker

    # -- parts, built on first use ----------------------------------------------------------
    @property
    def embedder(self) -> Encoder:
        with self._lock:
            if self._embedder is None:
                self._embedder = Embedder.from_settings(self.settings)
            return self._embedder

    @property
    def index(self) -> Index:
        """The index of `settings.corpus_dir`, loaded or (re)built to match it."""
        with self._lock:
            if self._index is None:
                indexed = indexed_files(self.settings.index_dir)  # files that did not change are not converted again
                corpus = load_corpus(self.settings.corpus_dir, self.settings.max_file_bytes, indexed, settings=self.settings)  # type: ignore[arg-type]
                self._index = ensure_index(corpus, self.embedder, self.settings)
            return self._index

    @property
    def retriever(self) -> Retriever:
        self._follow_index()
        with self._lock:
            if self._retriever is None:
                self._retriever = Retriever(self.index, self.embedder, self.settings, rerank=self._rerank_with())
            return self._retriever

    @property
    def generator(self) -> Generator:
        with self._lock:
            if self._generator is None:
                self._generator = make_generator(self.settings.model)
            return self._generator

    @property
    def reader(self) -> Reader:
        with self._lock:
            if self._reader is None:
                self._reader = Reader(threads=self.settings.llm_threads, quantize=self.settings.reader_quantize)
            return self._reader

    @property
    def reranker(self) -> Reranker:
        with self._lock:
            if self._reranker is None:
                self._reranker = Reranker(threads=self.settings.llm_threads, quantize=self.settings.rerank_quantize)
            return self._reranker

    def _rerank_with(self):
        """What orders the retriever's first candidates (settings.reranker), or None."""
        kind = self.settings.reranker
        if kind == "trained":
            return lambda question, passages: self.reranker.scores(question, passages)
        if kind == "reader":
            return self._reader_scores
        return None

    def _reader_scores(self, question: str, passages: list[str]) -> list[float]:
        """The reader as a reranker: each passage's best span score minus its window's
        no-answer score (a passage without a span last)."""
        reading = self.reader.read(question, passages)
        by_passage = {span.passage: span.score - span.null for span in reading.spans}
        return [by_passage.get(n, -1e9) for n in range(len(passages))]

    @property
    def calibrator(self) -> Calibrator:
        """The answer policy's calibrator (a small JSON file; rag/models/policy unless injected)."""
        with self._lock:
            if self._calibrator is None:
                self._calibrator = Calibrator.load()
            return self._calibrator

    def warm_up(self) -> None:
        """Load everything and run one tiny generation so the first user pays nothing.

        The corpus and index come first: an empty corpus fails before any model loads.
        """
        self.retriever.warm_up()
        self.embedder.warm_up()
        self.embedder.encode_query("warm up")
        if self.settings.reranker == "trained":
            self.reranker.warm_up()
            self.reranker.scores("warm up", ["Warm up."])
        if self.settings.use_reader:
            self.reader.warm_up()
            self.reader.read("warm up", ["Warm up."])
            if self.settings.use_policy:
                self.calibrator  # a missing or damaged policy file fails at start, not at the first question
        if self.settings.use_llm:
            try:
                self.generator.warm_up()
                self.generator.generate([{"role": "user", "content": "Hi"}], max_new_tokens=1)
            except LLMError as err:  # not fatal: answers are made without it, each saying why
                log.error("%s: %s; answers quote the passages until it is back", LLM_FAILED, err)
        self.compact_later()  # merges an earlier `rag add` left, if any

    # -- updating the index while serving ----------------------------------------------------
    def use_index(self, index: Index) -> None:
        """Answer from `index` from now on. Its lookup tables and BM25 lexicon are made before
        the swap, so no question waits for them; a question already running finishes on the
        index it started with."""
        retriever = Retriever(index, self.embedder, self.settings, rerank=self._rerank_with())
        retriever.warm_up()
        with self._lock:
            self._index, self._retriever = index, retriever

    def compact_later(self) -> threading.Thread | None:
        """Start the merges updates left (`compact_index`) in a background thread, if any are
        due and none is running; questions keep being answered meanwhile, and the merged index
        is swapped in when it is done. Returns the thread (for tests), or None."""
        from .index.manifest import compact_index

        with self._lock:
            index = self._index
            if index is None or not index.merge_due() or (self._compactor is not None and self._compactor.is_alive()):
                return None

            def run() -> None:
                try:
                    merged, report = compact_index(self.settings, base=self._index)
                    if report.merged:
                        self.use_index(merged)
                except Exception:  # a failed merge leaves the index as it was; the next update retries
                    log.exception("index: background merge failed")

            self._compactor = threading.Thread(target=run, name="rag-compact", daemon=True)
            self._compactor.start()
            return self._compactor

    def _follow_index(self) -> None:
        """Switch to the index version on disk when another process changed it (a `rag add`
        beside the app): one readlink per question; the switch reads only the new segments.
        A version this pipeline cannot use (another embedding model, say) is logged and skipped."""
        index, index_dir = self._index, self.settings.index_dir
        if index is None or index.build is None or index_dir is None:
            return
        try:
            live = os.path.basename(os.readlink(index_dir / CURRENT))
        except OSError:
            return
        if live == index.build or not self._follow_lock.acquire(blocking=False):
            return  # unchanged, or another question is switching already
        try:
            newer = Index.load(index_dir, reuse=index)
            newer.check_settings(self.embedder, self.settings)
            if newer.build != index.build:
                log.info("index: switching to %s, changed by another process", newer.build)
                self.use_index(newer)
        except (StaleIndex, OSError) as err:
            log.warning("index: the version on disk cannot be used (%s); answering from %s", err, index.build)
            index.build = live  # do not try this version again
        finally:
            self._follow_lock.release()

    def add_files(self, paths: list[Path], progress: bool = False, collection: str | None = None) -> UpdateReport:
        """Convert, embed and index these files (only new or changed ones) into `collection`
        (a file of the corpus folder: its folder's), then answer from the updated index. A
        rejected file is in the report's problems with its reason."""
        from .index.corpus import read_into
        from .index.manifest import update_index

        base = self.index  # an index to add to: loaded, or built from the corpus folder
        documents, problems = [], []
        for path in paths:
            doc, found = read_into(path, self.settings.max_file_bytes, collection, self.settings.corpus_dir, settings=self.settings)
            problems += found
            if doc is not None:
                documents.append(doc)
        index, report = update_index(self.settings, self.embedder, add=documents, progress=progress, base=base)
        report.problems[:0] = problems
        self.use_index(index)
        self.compact_later()
        return report

    def add_uploads(self, uploads: list[tuple[Path, str]], on_file=None, collection: str = DEFAULT_COLLECTION) -> UpdateReport:
        """Index uploaded files: (temporary path, the name the user's browser gave).

        The name is sanitized (no folders, no leading dots, so "../../x" cannot leave the corpus
        folder); each file is converted from where it was uploaded, and only an accepted one is
        copied into the corpus folder, so a rejected file leaves nothing behind. A file with the
        name of an indexed one replaces it. `on_file(n, name)` is called before each file.
        The files go into `collection` (its subfolder of the corpus folder).
        """
        import shutil

        from .index.corpus import CorpusProblem, check_collection, corpus_name, in_collection, read_document, safe_file_name
        from .index.manifest import update_index

        base = self.index
        corpus_dir = self.settings.corpus_dir
        assert corpus_dir is not None
        if check_collection(collection) != DEFAULT_COLLECTION:
            corpus_dir = corpus_dir / collection
        corpus_dir.mkdir(parents=True, exist_ok=True)
        documents, problems, names = [], [], set()
        for n, (temp, raw_name) in enumerate(uploads):
            name = safe_file_name(raw_name)
            if on_file:
                on_file(n, name)
            if name in names:
                problems.append(CorpusProblem(name=name, action="skipped", reason="uploaded twice in one batch"))
                continue
            names.add(name)
            target = corpus_dir / name
            staged = Path(temp).with_name(name) if Path(temp).name != name else Path(temp)
            if staged != Path(temp):
                shutil.copyfile(temp, staged)
            doc, found = read_document(staged, self.settings.max_file_bytes, settings=self.settings)
            problems += found
            if doc is None:
                continue
            shutil.copyfile(staged, target)
            documents.append(in_collection(doc.model_copy(update={"path": str(target)}), collection))
        index, report = update_index(self.settings, self.embedder, add=documents, base=base)
        for doc in documents:  # a duplicate was not indexed: do not keep its copy either
            if any(p.name == corpus_name(doc.path, doc.collection) and "duplicate" in p.reason for p in report.problems):
                Path(doc.path).unlink(missing_ok=True)
        report.problems[:0] = problems
        self.use_index(index)
        self.compact_later()
        return report

    def remove_documents(self, doc_ids: list[str]) -> UpdateReport:
        """Remove documents by id and answer from the updated index."""
        from .index.manifest import update_index

        base = self.index
        index, report = update_index(self.settings, self.embedder, remove=doc_ids, base=base)
        self.use_index(index)
        self.compact_later()
        return report

    def title(self, doc_id: str) -> str:
        return self.index.documents[doc_id].title

    def documents(self, collections: Iterable[str] | None = None) -> dict[str, Document]:
        """The indexed documents, of `collections` only unless None."""
        index = self.index
        return index.documents if collections is None else index.within(collections).documents

    # -- answering -----------------------------------------------------------------------
    def answer(
        self,
        question: str,
        top_k: int | None = None,
        searched: str | None = None,
        on_token: OnToken | None = None,
        quick: str | Callable[[], str] = "",
        collections: Iterable[str] | None = None,
    ) -> Answer:
        """Answer a question from the articles, with citations.

        Args:
            question: the user's question.
            top_k: chunks retrieved (default `settings.top_k`).
            searched: the standalone form of a follow-up question, used for retrieval.
            on_token: called with each piece of the model's text as it is generated. The final
                Answer may differ from the streamed text: when the checks reject it, it is
                replaced by an extractive answer, and invalid markers are removed. If it
                raises (the client went away), the generation stops and the error propagates.
            quick: why to skip the LLM (a crowded server): a fact answer is the reader's span as
                found, any other the chosen sentences quoted, both cited, with this in
                `reason`. Empty: the LLM phrases or writes the answer. A callable is asked
                just before the LLM would run, so a server decides on the load of that moment.
            collections: answer from the documents of these collections only (a team's server
                passes the asker's); nothing outside them is searched, counted or cited. None:
                every document.

        Raises:
            ValueError: the question is empty or over the length limit, or top_k is out of range.
        """
        s = self.settings
        t0 = time.perf_counter()
        question = clean_question(question, s.max_question_chars)
        if top_k is not None and not 1 <= top_k <= 20:
            raise ValueError(f"top_k must be between 1 and 20, not {top_k}.")
        query = clean_question(searched, s.max_question_chars) if searched else question

        t = time.perf_counter()
        retriever = self.retriever  # one index version for the whole question, even if an update lands meanwhile
        if collections is not None:
            retriever = retriever.within(collections)
        hits = retriever.candidates(query, top_k or s.top_k)
        evidence = retriever.evidence(query, hits, s.evidence_k)
        timings = {"retrieve": time.perf_counter() - t}
        chosen = self.policy.choose(query, evidence)
        sig = signals(
            query,
            [e.sentence.text for e in chosen],
            max((e.dense for e in evidence), default=0.0),
            retriever.coverage(query, evidence),
        )
        draft = Draft(question=question, searched=query, evidence=evidence, chosen=chosen, signals=sig, timings=timings)

        policy_on = s.use_policy and s.use_reader
        gate_on = s.use_gate if s.use_gate is not None else not policy_on
        why = self.policy.gate(sig) if gate_on else None
        span: Span | None = None
        if s.use_reader and (not why or policy_on):  # under the policy a gate refusal still gets its confidence
            t = time.perf_counter()
            read = hits[: s.reader_passages]
            passages = [h.chunk.text for h in read]
            reading = self.reader.read(query, passages)
            draft.timings["read"] = time.perf_counter() - t
            draft.signals.no_answer = round(min(reading.no_answer, 1e6), 3)
            wants_span = self.policy.wants_span(query)
            fitting = self.policy.pick_span(query, reading)
            if policy_on:
                # the span the answer would state (a fact question), else the reader's best guess
                stated = fitting if wants_span else reading.best
                found = self._span_evidence(retriever, query, read, stated) if stated is not None else []
                sentence = " ".join(e.sentence.text for e in (found if wants_span else chosen))
                title = retriever.index.documents[read[stated.passage].chunk.doc_id].title if stated is not None else ""
                weights = retriever.term_weights(query)
                values = features(
                    query, reading, stated, sentence, passages, weights, sig.dense, sig.coverage, title,
                    unknown=retriever.unknown_terms(weights),
                )
                p_right = self.calibrator.probability(values)
                draft.signals.features = {k: round(v, 4) for k, v in values.items()}
                draft.signals.p_right = round(p_right, 4)
                draft.held_back, draft.held_back_evidence = stated, found
                if p_right < s.answer_threshold and not why:
                    why = f"the answer policy is not sure enough (p = {p_right:.2f} < {s.answer_threshold:g})"
            elif wants_span:
                why = self.policy.read_gate(reading)
            # a why/how or several-part question has no single span: [CLS] wins there even when
            # the passages answer it, so only the policy (or the gate before reading) may refuse it
            span = None if why else fitting
            if span is not None:
                same = policy_on and span is draft.held_back and draft.held_back_evidence
                span_evidence = draft.held_back_evidence if same else self._span_evidence(retriever, query, read, span)
        quick = quick() if callable(quick) else quick  # the load of this moment, not of the question's arrival
        if why:
            decision = Decision(route="refused", reason=why)
        elif span is not None and self.policy.wants_span(query):
            draft.chosen = span_evidence
            passage = " ".join(e.sentence.text for e in span_evidence)
            generated = None
            if s.use_llm and not quick:
                generated = self._generate(phrasing_messages(query, span.text, passage), min(s.phrase_new_tokens, s.max_new_tokens), on_token, draft)
            decision = self.policy.phrase(query, span, passage, generated, cited=len(span_evidence))
            if draft.llm_failed:  # the span as found, saying why it was not phrased
                decision.reason = draft.llm_failed
            elif quick and s.use_llm:
                decision.reason = f"the span as found, not phrased: {quick}"
        elif not s.use_llm:
            decision = Decision(route="extractive", reason="LLM disabled in settings")
        elif quick:  # the chosen sentences quoted and cited, as when the LLM is off
            decision = Decision(route="extractive", reason=f"the passages as found, not phrased: {quick}")
        else:
            generated = self._generate(build_messages(query, chosen), s.max_new_tokens, on_token, draft)
            if generated is None:  # quote the chosen sentence(s) instead
                decision = Decision(route="extractive", reason=draft.llm_failed)
            else:
                decision = self.policy.judge(query, chosen, generated, sig)
        draft.timings["total"] = time.perf_counter() - t0
        answer = self._compose(draft, decision, retriever.index)
        if decision.route != "refused" and span is not None:
            answer.span = span.text
        return answer

    @staticmethod
    def _span_evidence(retriever: Retriever, query: str, read: list, span: Span) -> list[Evidence]:
        """The sentence(s) holding `span`, in document order, scored for the question."""
        sentences = retriever.sentences_at(read[span.passage], span.start, span.end)
        ranked = retriever.score_sentences(query, {sid: span.passage for sid in sentences})
        return sorted(ranked, key=lambda e: e.sentence.sentence_id)

    def _generate(self, messages: list[dict[str, str]], max_new_tokens: int, on_token: OnToken | None, draft: Draft) -> str | None:
        """The model's text, timed into `draft`; None when the LLM failed (server down, refused,
        timed out), with the reason in `draft.llm_failed`: the answer is then made without it."""
        t = time.perf_counter()
        try:
            generation = self.generator.generate(messages, max_new_tokens, on_token=on_token)
        except LLMError as err:
            draft.timings["generate"] = time.perf_counter() - t
            draft.llm_failed = f"{LLM_FAILED}: {err}"
            return None
        draft.timings.update(generate=time.perf_counter() - t, first_token=generation.first_token_s)
        draft.prompt_tokens = generation.prompt_tokens
        return generation.text

    def stream(
        self, question: str, top_k: int | None = None, searched: str | None = None, quick: str | Callable[[], str] = "",
        collections: Iterable[str] | None = None,
    ) -> "AnswerStream":
        """Iterate over the returned stream for the model's text pieces; its `answer` is the checked Answer.

        Leaving the loop early (a client that went away) stops the generation at its next token.

        Raises:
            ValueError: as answer(), before the first piece.
        """
        clean_question(question, self.settings.max_question_chars)  # a bad question fails here, not mid-stream
        return AnswerStream(
            lambda on_token: self.answer(question, top_k=top_k, searched=searched, on_token=on_token, quick=quick, collections=collections)
        )

    # -- the three ways an answer ends ---------------------------------------------------
    def _compose(self, draft: Draft, decision: Decision, index: Index) -> Answer:
        """The Answer for the policy's decision: the model's checked text, a quote, or a refusal."""
        citations: list[Citation] = []
        closest: list[Citation] = []
        if decision.route == "generated":
            text = decision.text
            citations = [self._cite(n, draft.chosen[n - 1], index) for n in decision.cited]
        elif decision.route == "extractive" and decision.text:  # the reader's span as found, cited
            text = decision.text
            citations = [self._cite(n, draft.chosen[n - 1], index) for n in decision.cited]
        elif decision.route == "extractive":  # quote the chosen sentence(s) verbatim, cited: always grounded
            text = " ".join(f"{_one_line(e.sentence.text)} [{n}]" for n, e in enumerate(draft.chosen, start=1))
            citations = [self._cite(n, e, index) for n, e in enumerate(draft.chosen, start=1)]
        else:
            s = self.settings
            sig = draft.signals
            close = not (sig.dense < s.min_dense and (sig.coverage < s.full_coverage or sig.dense < s.min_dense_always))
            text = RELATED_TEXT if close else REFUSAL_TEXT
            if close:
                closest = self._related(draft, index)
        confidence = None
        if draft.signals.p_right is not None:
            confidence = draft.signals.p_right if decision.route != "refused" else 1.0 - draft.signals.p_right
        return Answer(
            question=draft.question,
            searched=draft.searched,
            signals=draft.signals,
            text=text,
            citations=citations,
            closest=closest,
            refused=decision.route == "refused",
            route=decision.route,
            reason=decision.reason,
            confidence=None if confidence is None else round(confidence, 4),
            timings={k: round(v, 4) for k, v in draft.timings.items()},
            prompt_tokens=draft.prompt_tokens,
        )

    def _related(self, draft: Draft, index: Index) -> list[Citation]:
        """A refusal's 'may be related' passages: the sentence holding the reader's best span
        (the span highlighted), then the best evidence, two at most."""
        related: list[Citation] = []
        limit = min(2, max(1, len(draft.evidence)))  # never more passages than the retrieval settings allow
        span = draft.held_back
        for e in draft.held_back_evidence[:1]:
            c = self._cite(1, e, index)
            if span is not None:
                at = c.text.find(span.text)
                if at >= 0:
                    c.highlight = (at, at + len(span.text))
            related.append(c)
        for e in draft.evidence:
            if len(related) >= limit:
                break
            if all((e.sentence.doc_id, e.sentence.start) != (r.doc_id, r.start) for r in related):
                related.append(self._cite(len(related) + 1, e, index))
        return related

    def _cite(self, n: int, e: Evidence, index: Index) -> Citation:
        return to_citation(n, e, index.documents[e.sentence.doc_id])


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
        gone = threading.Event()

        def hand_over(piece: str) -> None:
            if gone.is_set():
                raise Cancelled("the reader of this stream went away")
            pieces.put(piece)

        def work() -> None:
            try:
                self.answer = self._run(hand_over)
            except BaseException as err:  # handed to the caller's thread below
                failure.append(err)
            finally:
                pieces.put(end)

        worker = threading.Thread(target=work, name="rag-answer", daemon=True)
        worker.start()
        try:
            while (piece := pieces.get()) is not end:
                yield piece
        finally:
            gone.set()  # left early (closed, or an error): the generation stops at its next piece
        worker.join()
        if failure:
            raise failure[0]


class Cancelled(Exception):
    """The one who asked went away; raised from `on_token` to stop a generation."""


def _one_line(text: str) -> str:
    return " ".join(text.split())


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
