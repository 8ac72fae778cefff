"""answer() end to end with the real models and a real index built in a tmp dir (slow tier)."""

from __future__ import annotations

import pytest

from rag.index.retrieval import Retriever

from rag.eval.golden import matches

# Questions written from the articles (not the golden set): question, article, accepted answer.
RETRIEVAL = [
    ("What retention rate did Cohere have?", "003_31d34f5f0b0bcab0"),
    ("Which podcast did Altman appear on?", "000_d7fd0594dac93127"),
    ("How many Meta researchers left for xAI since January?", "001_fa6206c159068cb7"),
    ("Who will lead pre-training in Meta's new lab?", "002_e588fc54930c5723"),
    ("What did Musk say about compensation of the people who joined xAI?", "001_fa6206c159068cb7"),
    ("How did Google keep Koray Kavukcuoglu?", "002_e588fc54930c5723"),
    ("What is the revenue forecast in the Kadrey v. Meta filing?", "003_31d34f5f0b0bcab0"),
    ("Why is Scale AI described as infrastructure?", "000_d7fd0594dac93127"),
    ("What did Meta's engineers adopt for internal coding tools?", "002_e588fc54930c5723"),
    ("Which company had the highest talent retention?", "003_31d34f5f0b0bcab0"),
]

ANSWERS = [
    ("What retention rate did Cohere have?", "64 percent"),
    ("How many Meta researchers and engineers have left for xAI since January?", "14"),
    ("Who will lead pre-training efforts in Meta's new lab?", "Jack Rae"),
    ("How much money has Reality Labs lost since 2020?", "$64 billion"),
    ("Which AI model do Meta's engineers use in their internal coding tools?", "Claude"),
    ("How much profit did Meta earn last year?", "$62 billion"),
]


@pytest.mark.parametrize("question,doc_id", RETRIEVAL)
def test_retrieval_puts_right_article_in_top_3(pipeline, question, doc_id):
    hits = pipeline.retriever.search(question, 10)
    top_docs = list(dict.fromkeys(h.chunk.doc_id for h in hits))[:3]
    assert doc_id in top_docs


def held_back(a) -> str:
    """The best guess a refusal shows highlighted in its first 'may be related' passage ("" if none)."""
    c = next((c for c in a.closest if c.highlight), None)
    return c.text[c.highlight[0] : c.highlight[1]] if c else ""


@pytest.mark.slow
@pytest.mark.parametrize("question,fact", ANSWERS)
def test_answer_states_fact_with_verbatim_citation(pipeline, question, fact):
    """Stated with a verbatim citation that holds the fact; or, where the policy is not sure
    enough, refused honestly with the right passage shown as related and the fact highlighted."""
    a = pipeline.answer(question)
    print(f"\n{question}\n  -> {a.text}  ({a.route}, confidence {a.confidence})")
    if a.refused:
        assert a.reason.startswith("the answer policy is not sure enough") and a.citations == []
        assert matches(held_back(a), fact), (held_back(a), a.closest)
        for c in a.closest:
            assert pipeline.index.documents[c.doc_id].text[c.start : c.end] == c.text
        return
    assert matches(a.text, fact), a.text
    assert a.citations, "an answer must cite its passage"
    for c in a.citations:
        assert pipeline.index.documents[c.doc_id].text[c.start : c.end] == c.text
        assert f"[{c.n}]" in a.text
    assert any(matches(c.text, fact) for c in a.citations), "the cited passage must hold the fact"
    assert set(a.timings) >= {"retrieve", "total"}


@pytest.mark.slow
def test_most_plain_fact_questions_are_answered(pipeline):
    """The policy refuses where it is not sure; on these plain questions about the articles it
    states at least five of six (the shipped policy: five; the one held back is at p 0.58)."""
    answered = [q for q, _ in ANSWERS if not pipeline.answer(q).refused]
    assert len(answered) >= 5, answered


@pytest.mark.parametrize(
    "question",
    ["What is the tallest mountain in Europe?", "Give me a recipe for banana bread.", "Who won the 2018 World Cup?"],
)
def test_off_topic_question_is_refused(pipeline, question):
    a = pipeline.answer(question)
    assert a.refused and a.route == "refused"
    assert a.citations == []
    assert "articles don't say" in a.text


def test_public_surface():
    import rag

    assert {"answer", "Answer", "Citation", "Settings"} <= set(rag.__all__)
    assert set(rag.Answer.model_fields) >= {"text", "citations", "refused", "timings"}
    assert set(rag.Citation.model_fields) >= {"doc_id", "title", "chunk_id", "text", "start", "end", "score", "page"}


@pytest.mark.parametrize("top_k", [0, 21])
def test_top_k_out_of_range_is_a_clear_error(pipeline, top_k):
    with pytest.raises(ValueError, match="top_k must be between 1 and 20"):
        pipeline.answer("What retention rate did Cohere have?", top_k=top_k)


def test_a_chunk_only_bm25_ranks_first_still_reaches_the_evidence(pipeline):
    """RRF alone drops a chunk that BM25 ranks first but dense ranks low (the only mention of a
    rare word); the extra candidates keep it, so its sentence can be the evidence. The reranker
    (which reads the question with each chunk) now ranks it into the top k by itself."""
    question = "Which podcast did Altman appear on?"
    fused = Retriever(pipeline.index, pipeline.embedder, pipeline.settings)  # no reranker: the fused order
    assert not any("Uncapped podcast" in h.chunk.text for h in fused.search(question, pipeline.settings.top_k))
    assert any("Uncapped podcast" in h.chunk.text for h in pipeline.retriever.search(question, pipeline.settings.top_k))
    hits = fused.candidates(question, pipeline.settings.top_k)
    assert any("Uncapped podcast" in h.chunk.text for h in hits)
    evidence = pipeline.retriever.evidence(question, hits, pipeline.settings.evidence_k)
    assert "Uncapped podcast" in evidence[0].sentence.text


@pytest.mark.slow
@pytest.mark.parametrize("question,fact", ANSWERS)
def test_fact_answers_are_short_and_their_span_is_in_the_cited_sentence(pipeline, question, fact):
    a = pipeline.answer(question)
    if a.refused:  # held back by the policy: its best guess is the fact, shown, not stated
        assert matches(held_back(a), fact), a.closest
        return
    assert a.span, f"the reader found no span: {a.reason}"
    assert matches(a.span, fact), a.span
    assert any(a.span in c.text for c in a.citations), "the cited sentence holds the span verbatim"
    assert len(a.text.split()) <= 30, a.text
    assert a.signals.no_answer < pipeline.settings.reader_no_answer


def test_a_quick_answer_skips_the_llm_and_keeps_its_span_and_citations(pipeline):
    """`quick` (a crowded server): no generation at all; a fact answer is the reader's span with
    the same cited sentences as the phrased answer, anything else the passages quoted; the
    reason says why."""
    from fakes import ScriptedGenerator
    from rag.pipeline import Pipeline

    llm = ScriptedGenerator("Meta offered researchers $100 million [1].")
    p = Pipeline(pipeline.settings, index=pipeline.index, embedder=pipeline.embedder, reader=pipeline.reader, generator=llm)
    fact = "How much money is Meta offering AI researchers?"
    phrased = p.answer(fact)
    assert llm.calls and phrased.span and not phrased.refused
    llm.calls.clear()
    quick = p.answer(fact, quick="20 questions in flight")
    assert not llm.calls
    assert (quick.route, quick.span, quick.refused) == ("extractive", phrased.span, False)
    assert quick.reason.endswith("not phrased: 20 questions in flight") and phrased.span in quick.text
    assert [(c.doc_id, c.start, c.end) for c in quick.citations] == [(c.doc_id, c.start, c.end) for c in phrased.citations]
    how = p.answer("How is Mark Zuckerberg recruiting AI talent?", quick="busy")
    assert not llm.calls and how.route in ("extractive", "refused")
    if not how.refused:
        assert how.reason.endswith("not phrased: busy") and how.citations and all(c.text in how.text for c in how.citations)
