"""The answer policy: its features, its calibrated model, and the pipeline deciding with it."""

from __future__ import annotations

import json

import pytest

from fakes import ScriptedReader
from rag.answering.confidence import FEATURES, Calibrator, PolicyError, features
from rag.answering.reader import Reading, Span
from rag.eval.golden import VARIANTS, answer_correct, load_golden
from tests.conftest import GOLDEN

PASSAGES = [
    "Meta paid $14.3 billion for 49 percent of Scale AI in June 2025. Alexandr Wang joined Meta.",
    "Scale AI labels training data. Its founder is Alexandr Wang.",
]
WEIGHTS = {"meta": 2.0, "paid": 1.5, "scale": 1.0, "2024": 3.0}


def reading(text: str = "$14.3 billion", passage: int = 0, margin: float = -8.0) -> Reading:
    at = PASSAGES[passage].index(text)
    span = Span(passage=passage, start=at, end=at + len(text), text=text, score=9.0, null=1.0)
    other = Span(passage=1 - passage, start=0, end=8, text="Scale AI", score=2.0, null=3.0)
    return Reading(spans=[span, other], no_answer=margin)


def feats(question: str, r: Reading | None = None, weights: dict | None = None) -> dict[str, float]:
    r = r or reading()
    return features(question, r, r.best, PASSAGES[r.best.passage].split(". ")[0], PASSAGES, weights or WEIGHTS, 0.6, 0.8)


def test_every_feature_is_computed_and_finite():
    f = feats("How much did Meta pay for Scale AI?")
    assert list(f) == list(FEATURES)
    assert all(isinstance(v, float) and abs(v) < 100 for v in f.values())
    assert f["margin"] == -8.0 and f["local_margin"] == 1.0 - 9.0 and f["gap"] == 7.0 and f["span_rank"] == 0.0


def test_a_number_the_question_names_but_the_sentence_lacks_is_seen():
    """'Same event, another year': the question's year is not in the sentence holding the span."""
    f = feats("How much did Meta pay for Scale AI in 2024?")
    assert f["numbers_missing"] == 1.0 and f["numbers_missing_read"] == 1.0 and f["rare_missing"] == 1.0
    assert feats("How much did Meta pay for Scale AI in 2025?")["numbers_missing"] == 0.0


def test_a_span_of_the_wrong_type_is_a_mismatch():
    assert feats("How much did Meta pay?", reading("Alexandr Wang"))["type_mismatch"] == 1.0
    assert feats("Who did Meta hire?", reading("Alexandr Wang"))["type_mismatch"] == 0.0
    assert feats("Who did Meta hire?", reading("$14.3 billion"))["type_mismatch"] == 1.0


def test_the_question_s_label_next_to_the_span_is_seen():
    """'Wrong item of a list': the company the question names must stand next to the number."""
    passage = "OpenAI kept 67 percent of its staff, the report says, and the figure was measured over two full years of hiring. Anthropic kept 80 percent."
    weights = {"openai": 3.0, "kept": 1.0, "staff": 1.0}

    def near(text: str) -> float:
        at = passage.index(text)
        span = Span(passage=0, start=at, end=at + len(text), text=text, score=9.0, null=1.0, runner_up=8.5)
        r = Reading(spans=[span], no_answer=-8.0)
        return features("What share of its staff did OpenAI keep?", r, span, passage, [passage], weights, 0.6, 0.8)["cov_near"]

    assert near("67 percent") > 0.6 > near("80 percent")


def test_two_spans_the_reader_cannot_tell_apart_have_a_small_lead():
    r = reading()
    close = r.best.model_copy(update={"runner_up": 8.7})
    apart = r.best.model_copy(update={"runner_up": 1.0})
    lead = [features("How much did Meta pay?", Reading(spans=[s], no_answer=-8.0), s, PASSAGES[0], PASSAGES, WEIGHTS, 0.6, 0.8)["alt_gap"] for s in (close, apart)]
    assert lead == [pytest.approx(0.3), pytest.approx(8.0)]


def test_terms_the_corpus_never_saw_are_counted_apart():
    """A clause's own words ("Quick question: ...") are unknown to the corpus: they raise
    unknown_share but leave the coverage of the known terms as it was."""
    plain = feats("How much did Meta pay for Scale AI?")
    r = reading()
    weights = {**WEIGHTS, "quick": 9.0}
    clause = features("Quick question: how much did Meta pay for Scale AI?", r, r.best, PASSAGES[0].split(". ")[0], PASSAGES, weights, 0.6, 0.8, unknown={"quick"})
    assert clause["unknown_share"] == pytest.approx(9.0 / sum(weights.values())) and plain["unknown_share"] == 0.0
    assert clause["cov_sentence_known"] == plain["cov_sentence_known"] and clause["cov_sentence"] < plain["cov_sentence"]


def test_no_span_is_the_worst_case_of_every_span_feature():
    empty = Reading(spans=[], no_answer=float("inf"))
    f = features("Who won?", empty, None, "", PASSAGES, WEIGHTS, 0.3, 0.2)
    assert f["margin"] == 20.0 and f["type_mismatch"] == 1.0 and f["span_score"] == -20.0


@pytest.mark.parametrize("kind", list(VARIANTS))
def test_rewording_leaves_the_span_features_alone(kind):
    """Case, a lead-in and a source clause change no feature but the question's length and the
    coverage of the clause's own words: the policy cannot refuse for the wording alone."""
    question = "How much did Meta pay for Scale AI?"
    a, b = feats(question), feats(VARIANTS[kind](question))
    same = {"margin", "local_margin", "span_score", "gap", "agree", "span_rank", "span_words", "type_mismatch", "wants_number",
            "wants_person", "wants_date", "explain", "several", "numbers_missing", "rare_missing", "alt_gap"}
    assert {k: a[k] for k in same} == {k: b[k] for k in same}


def test_calibrator_probability_round_trips_through_its_file(tmp_path):
    c = Calibrator(features=["margin", "gap"], mean=[0.0, 1.0], scale=[2.0, 1.0], coef=[-1.5, 0.5], intercept=0.2, platt=(0.9, -0.1))
    again = Calibrator.load(c.save(tmp_path).parent)
    x = {"margin": 1.0, "gap": 3.0}
    assert again == c and again.probability(x) == c.probability(x)
    assert c.probability({"margin": -10.0, "gap": 5.0}) > 0.99 > 0.01 > c.probability({"margin": 10.0, "gap": -5.0})


@pytest.mark.parametrize(
    "content, why",
    [(None, "missing"), ("{not json", "unreadable"), (json.dumps({"format": "other v9"}), "is not a"),
     (json.dumps({"format": "rag-policy v1", "features": ["shoe_size"], "mean": [0], "scale": [1], "coef": [1], "intercept": 0}), "does not fit")],
)
def test_a_broken_policy_file_is_a_clear_error(tmp_path, content, why):
    if content is not None:
        (tmp_path / "policy.json").write_text(content, encoding="utf-8")
    with pytest.raises(PolicyError, match=why) as err:
        Calibrator.load(tmp_path)
    assert "git checkout -- rag/models/policy" in str(err.value)


def test_the_shipped_policy_loads_and_its_record_says_how_it_was_made():
    c = Calibrator.load()
    assert set(c.features) <= set(FEATURES)
    test = c.record["metrics"]["test"]  # documents neither the regression nor its Platt scaling saw
    assert test["n"] > 300 and test["auc"] > 0.8
    # 0.036 for the first fit; 0.052 for the refit with the reranker in the loop (issue 20), which
    # refuses more of the report sets' unanswerable questions (benchmarks/retrieval.md)
    assert test["ece"] <= 0.06
    assert len(c.record["metrics"]["test_by_source"]) >= 3  # calibrated across kinds of text, not one
    documents = {t for titles in c.record["documents"].values() for t in titles}
    assert "Spectre_(2015_film)" not in documents  # the report set's articles stay out


def only_margin(weight: float = -1.0) -> Calibrator:
    """A calibrator that reads the reader's margin alone: p = sigmoid(-margin)."""
    return Calibrator(features=["margin"], mean=[0.0], scale=[1.0], coef=[weight], intercept=0.0)


def test_the_policy_answers_when_sure_and_says_how_sure(fake_pipeline):
    p = fake_pipeline("never used", reader=ScriptedReader("4,000 dollars", margin=-6.0), use_llm=False)
    p._calibrator = only_margin()
    a = p.answer("How much did the council pay for the paint?")
    assert not a.refused and a.span == "4,000 dollars"
    assert a.confidence == pytest.approx(1 / (1 + 2.718281828 ** -6.0), abs=1e-3) == a.signals.p_right


def test_below_the_threshold_it_refuses_and_shows_the_span_it_held_back(fake_pipeline):
    p = fake_pipeline("never used", reader=ScriptedReader("4,000 dollars", margin=1.0), use_llm=False, answer_threshold=0.5)
    p._calibrator = only_margin()
    a = p.answer("How much did the council pay for the paint?")
    assert a.refused and a.route == "refused" and a.reason.startswith("the answer policy is not sure enough")
    assert a.text.startswith("The articles don't state this") and a.citations == []
    related = a.closest[0]
    assert related.text[related.highlight[0] : related.highlight[1]] == "4,000 dollars"
    assert a.confidence == pytest.approx(1 - a.signals.p_right)


def test_nothing_close_is_a_plain_refusal_without_passages(fake_pipeline):
    p = fake_pipeline("never used", reader=ScriptedReader(None), use_llm=False)
    p._calibrator = only_margin()
    a = p.answer("What is the tallest mountain in Europe?")
    assert a.refused and a.text.startswith("The articles don't say") and a.closest == []


def test_without_the_policy_the_old_gates_decide_and_no_confidence_is_claimed(fake_pipeline):
    p = fake_pipeline("never used", reader=ScriptedReader("4,000 dollars", margin=5.0), use_llm=False, use_policy=False)
    a = p.answer("How much did the council pay for the paint?")
    assert a.refused and a.confidence is None and "no-answer margin" in a.reason


# -- with the real models ---------------------------------------------------------------------------


@pytest.mark.slow
def test_every_answer_carries_a_calibrated_confidence(pipeline):
    for question in ["What retention rate did Cohere have?", "What is the boiling point of mercury?",
                     "Why did Meta offer such large pay packages?", "How much did Apple pay its AI researchers in 2019?"]:
        a = pipeline.answer(question)
        assert a.confidence is not None and 0.0 <= a.confidence <= 1.0, question
        p = a.signals.p_right
        assert a.confidence == pytest.approx(1 - p if a.refused else p, abs=1e-4)
        assert a.refused == (p < pipeline.settings.answer_threshold)


@pytest.mark.slow
def test_a_reworded_question_mostly_gets_the_answer_of_the_plain_one(pipeline):
    """Consistency under rewording, on questions answered right in their plain form. The target is
    0.95; this floor is what the shipped policy holds (rag eval --paraphrase measures it in full)."""
    items = [i for i in load_golden(GOLDEN) if i.type in ("number", "who", "fact")][:6]
    held, kept, missed = 0, 0, []
    for item in items:
        plain = pipeline.answer(item.question)
        if plain.refused or not answer_correct(plain.text, item.answers):
            continue
        for kind, make in VARIANTS.items():
            again = pipeline.answer(make(item.question))
            held += 1
            if not again.refused and answer_correct(again.text, item.answers):
                kept += 1
            else:
                missed.append((kind, item.question, again.text, again.reason))
    print(f"consistency {kept}/{held}", missed)
    assert held >= 8 and kept / held >= 0.5, missed
