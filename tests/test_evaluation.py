"""Eval metrics on small hand-made cases with known scores, and a real-pipeline slice."""

from __future__ import annotations

import json

import pytest

from rag.eval.golden import GoldenItem, evaluate, load_golden, matches, score_row, summarize
from rag.types import Answer, Citation
from tests.conftest import CORPUS, GOLDEN

GOLD_DOC = "003_31d34f5f0b0bcab0"
OTHER_DOC = "000_d7fd0594dac93127"


def cite(doc_id: str, text: str = "Cohere (64 percent)") -> Citation:
    return Citation(n=1, doc_id=doc_id, title="t", chunk_id=0, text=text, start=0, end=len(text), score=1.0)


ITEM = GoldenItem(id="a", type="number", question="What retention rate did Cohere have?", answers=[["64%", "64 percent"]], doc_ids=[GOLD_DOC])
UNANSWERABLE = GoldenItem(id="u", type="unanswerable", subtype="off-topic", question="Tallest mountain?")


def test_perfect_answer_scores_one():
    row = score_row(ITEM, Answer(question="q", text="Cohere had 64 percent [1].", citations=[cite(GOLD_DOC)]), [GOLD_DOC, OTHER_DOC], 0.5)
    assert row.correct and row.citation_hit and row.citation_precision == 1.0 and row.grounded
    assert row.retrieval_rank == 1


def test_wrong_answer_scores_zero():
    row = score_row(ITEM, Answer(question="q", text="Cohere had 80 percent [1].", citations=[cite(GOLD_DOC)]), [OTHER_DOC, GOLD_DOC], 0.5)
    assert not row.correct
    assert row.grounded is False  # 80 is not in the cited passage
    assert row.retrieval_rank == 2


def test_refusal_is_right_only_when_unanswerable():
    refusal = Answer(question="q", text="The articles don't say.", refused=True, route="refused")
    assert score_row(UNANSWERABLE, refusal, [], 0.1).correct
    wrong = score_row(ITEM, refusal, [GOLD_DOC], 0.1)
    assert not wrong.correct and wrong.refused


def test_answer_citing_the_wrong_article():
    row = score_row(
        ITEM,
        Answer(question="q", text="64 percent [1][2]", citations=[cite(OTHER_DOC), cite(GOLD_DOC).model_copy(update={"n": 2})]),
        [GOLD_DOC],
        0.2,
    )
    assert row.correct and row.citation_hit and row.citation_precision == 0.5
    only_wrong = score_row(ITEM, Answer(question="q", text="64 percent [1]", citations=[cite(OTHER_DOC)]), [GOLD_DOC], 0.2)
    assert only_wrong.citation_hit is False and only_wrong.citation_precision == 0.0


def test_summary_of_known_rows():
    rows = [
        score_row(ITEM, Answer(question="q", text="64% [1]", citations=[cite(GOLD_DOC)]), [GOLD_DOC], 1.0),
        score_row(ITEM, Answer(question="q", text="no", refused=True, route="refused"), [OTHER_DOC], 3.0),
        score_row(UNANSWERABLE, Answer(question="q", text="no", refused=True, route="refused"), [], 2.0),
    ]
    s = summarize(rows)
    assert s["answer_accuracy"] == 0.5
    assert s["false_refusal_rate"] == 0.5
    assert s["refusal_accuracy"] == 1.0
    assert s["hit@1"] == 0.5 and s["mrr"] == 0.5
    assert s["citation_hit"] == 1.0
    assert s["latency_p50_s"] == 2.0 and s["errors"] == 0


@pytest.mark.parametrize(
    "answer,alternative,expected",
    [
        ("They offered $10,000,000 a year.", "$10 million", True),
        ("Meta paid 14.3 billion dollars", "$14.3 billion", True),
        ("It lost 4.3 percent", "4.3%", True),
        ("It lost 43 percent", "4.3%", False),
        ("Jack Rae leads it.", "Jack Rae", True),
        ("Jackson Raeburn leads it.", "Jack Rae", False),
        ("open-source AI", "open source", True),
    ],
)
def test_matching_units_and_magnitudes(answer, alternative, expected):
    assert matches(answer, alternative) is expected


def test_golden_set_is_well_formed():
    items = load_golden(GOLDEN)
    assert len(items) >= 60
    types = {i.type for i in items}
    assert types >= {"fact", "number", "who", "paraphrase", "multi-part", "unanswerable"}
    un = [i for i in items if i.type == "unanswerable"]
    assert len(un) >= 12 and {i.subtype for i in un} >= {"on-topic", "off-topic", "injection"}
    texts = {p.stem: p.read_text(encoding="utf-8") for p in CORPUS.iterdir()}
    for item in items:
        for ev in item.evidence:
            assert any(ev in texts[d] for d in item.doc_ids), (item.id, ev)


@pytest.mark.slow
def test_eval_slice_with_real_pipeline(pipeline, tmp_path):
    """An 8-item slice (each answerable type, each unanswerable subtype) stays above the floor
    measured on it with the default settings."""
    items = load_golden(GOLDEN)
    slice_ = []
    for kind in ["fact", "number", "who", "paraphrase", "multi-part", "off-topic", "injection", "on-topic"]:
        of_kind = [i for i in items if kind in (i.type, i.subtype)]
        slice_ += of_kind[1:2] if kind in ("on-topic", "injection", "off-topic") else of_kind[2:3]
    report = evaluate(slice_, pipeline, progress=False)
    print(json.dumps(report.scores, indent=1))
    assert report.scores["errors"] == 0
    assert report.scores["answer_accuracy"] >= 0.6  # measured 0.8
    assert report.scores["refusal_accuracy"] >= 0.66  # measured 2 of 3: off-topic and injection
    assert report.scores["citation_hit"] >= 0.6  # measured 0.8 (4 of 5)


# -- trust: stated wrong, calibration, risk against coverage, paraphrase consistency ----------------


def answered(text: str, p: float) -> Answer:
    from rag.types import Signals

    signals = Signals(dense=0.6, coverage=1.0, wants_number=False, has_number=True, p_right=p)
    return Answer(question="q", text=text, citations=[cite(GOLD_DOC)], signals=signals, confidence=p)


def refused(p: float, held: str = "") -> Answer:
    from rag.types import Signals

    signals = Signals(dense=0.6, coverage=1.0, wants_number=False, has_number=True, p_right=p)
    closest = [cite(GOLD_DOC, f"Cohere ({held})").model_copy(update={"highlight": (8, 8 + len(held))})] if held else []
    return Answer(question="q", text="no", refused=True, route="refused", signals=signals, closest=closest, confidence=1 - p)


def test_stated_wrong_counts_wrong_answers_and_answered_unanswerables():
    from rag.eval.golden import trust_scores

    rows = [
        score_row(ITEM, answered("64 percent [1]", 0.9), [GOLD_DOC], 0.1),  # right
        score_row(ITEM, answered("80 percent [1]", 0.6), [GOLD_DOC], 0.1),  # stated wrong
        score_row(UNANSWERABLE, answered("Everest [1]", 0.55), [GOLD_DOC], 0.1),  # stated wrong
        score_row(UNANSWERABLE, refused(0.2), [], 0.1),  # right refusal
    ]
    scores = trust_scores(rows)
    assert scores["stated_wrong_rate"] == 0.5 and scores["coverage"] == 0.75
    # most confident first: right (0.9), wrong (0.6), wrong (0.55), wrong (0.2) -> risks 0, 1/2, 2/3, 3/4
    assert scores["aurc"] == round((0 + 0.5 + 0.6667 + 0.75) / 4, 4)
    assert scores["coverage_at_5pct_risk"] == 0.25


def test_a_refusal_is_graded_by_the_span_it_held_back():
    held_right = score_row(ITEM, refused(0.3, held="64 percent"), [GOLD_DOC], 0.1)
    held_wrong = score_row(ITEM, refused(0.3, held="80 percent"), [GOLD_DOC], 0.1)
    assert held_right.would_be_right is True and held_wrong.would_be_right is False
    assert not held_right.correct  # refusing an answerable question is still not a right answer


def test_calibration_error_of_known_pairs():
    from rag.eval.golden import expected_calibration_error

    assert expected_calibration_error([(0.75, True)] * 3 + [(0.75, False)]) == 0.0
    assert expected_calibration_error([(0.95, False)] * 2) == 0.95


def test_paraphrase_consistency_counts_variants_of_originals_answered_right():
    from rag.eval.golden import paraphrase_scores, with_variants

    items = with_variants([ITEM, UNANSWERABLE])
    assert len(items) == 2 + 4 and all(i.variant_of == "a" for i in items[2:])
    rows = [score_row(items[0], answered("64 percent [1]", 0.9), [GOLD_DOC], 0.1), score_row(items[1], refused(0.1), [], 0.1)]
    rows += [score_row(v, answered("64 percent [1]", 0.9), [GOLD_DOC], 0.1) for v in items[2:5]]
    rows.append(score_row(items[5], refused(0.2), [], 0.1))
    scores = paraphrase_scores(rows)
    assert scores["paraphrase_consistency"] == 0.75 and scores["variants"] == 4
    assert scores["consistency_lead"] == 0.0 and scores["consistency_source"] == 1.0
