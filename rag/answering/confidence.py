"""How sure to be of an answer: the features the answer policy reads, and its calibrated model.

Selective question answering (Kamath, Jia and Liang, ACL 2020): a small calibrator reads the QA
model's own signals plus evidence the model lacks, and says how likely the stated answer is to
be right. Here the calibrator is a logistic regression over `FEATURES`, Platt-scaled on held-out
articles (rag/training/train_policy.py), shipped as JSON in rag/models/policy/ and applied with
NumPy alone. Every feature is case-insensitive and ignores where in the question a word stands,
so "according to the articles, ...", a lower-case question without "?" and a lead-in read alike.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from ..lexicon import DATE_QUESTION
from ..text import normalize, numbers, stem, words
from .phrasing import answer_kind, names_someone, wants_number, wants_person
from .reader import Reading, Span

POLICY_DIR = Path(__file__).resolve().parents[1] / "models" / "policy"
POLICY_FILE = "policy.json"
POLICY_FORMAT = "rag-policy v1"

FEATURES = (
    "margin",  # the reader's no-answer margin over all windows ([CLS] minus best span): high = not there
    "local_margin",  # the same in the stated span's own window
    "span_score",  # start + end logit of the stated span
    "gap",  # how far the stated span is ahead of the next passage's best span
    "agree",  # share of the other passages whose best span says the same thing
    "span_rank",  # retrieval rank of the passage holding the span (0 = first)
    "span_words",  # log(1 + words in the span)
    "span_in_question",  # share of the span's words already in the question (restating it is no answer)
    "cov_sentence",  # IDF-weighted share of the question's terms in the sentence holding the span
    "cov_chunk",  # ... in the span's passage
    "cov_titled",  # ... in the span's sentence or its document's title (a question may name its source or subject)
    "cov_read",  # ... anywhere in the passages read
    "near_gap",  # cov_read - cov_sentence: terms the passages have, but not where the span is
    "rare_missing",  # the question's rarest term is not in the span's sentence
    "numbers_missing",  # share of the question's numbers and years not in the span's sentence
    "numbers_missing_read",  # ... not in any passage read
    "type_mismatch",  # asks how much / who / when and the span holds no number / name / date
    "wants_number",
    "wants_person",
    "wants_date",
    "explain",  # a why/how question (answered with a sentence)
    "several",  # a question asking for several things
    "dense",  # best cosine of the question and an evidence sentence
    "coverage",  # IDF-weighted share of the question's terms in the chosen evidence
    "question_words",  # log(1 + words in the question)
    # v2: evidence next to the span, list ambiguity, and terms the corpus has never seen
    "alt_gap",  # the span's lead over the best other span of its window (another list item, another name)
    "cov_near",  # share of the question's known terms within NEAR words of the span (a list item's own label)
    "cov_sentence_known",  # cov_sentence over the terms the corpus knows (a clause's words leave it unchanged)
    "rare_known_missing",  # the question's rarest known term is not in the span's sentence
    "unknown_share",  # IDF-weighted share of the question's terms found nowhere in the corpus
)

NEAR = 8
"""Words either side of a span that count as next to it (a list item and its label sit within a few words)."""


def confidence_label(confidence: float | None) -> tuple[str, str]:
    """(css level, words) for a calibrated confidence, read at a glance.

    >>> confidence_label(0.87), confidence_label(0.55)
    (('high', 'high (87%)'), ('low', 'low (55%)'))
    """
    if confidence is None:
        return "", ""
    level = "high" if confidence >= 0.8 else "medium" if confidence >= 0.65 else "low"
    return level, f"{level} ({confidence:.0%})"


class PolicyError(RuntimeError):
    """The shipped answer policy cannot be loaded; the message names the file and how to restore it."""


def _clip(x: float, lo: float = -20.0, hi: float = 20.0) -> float:
    return float(min(hi, max(lo, x))) if math.isfinite(x) else (hi if x > 0 else lo)


def _f1(a: str, b: str) -> float:
    """Token F1 of two short spans (SQuAD's, on rag's word tokens).

    >>> _f1("64 percent", "Cohere (64 percent)")
    0.8
    """
    x, y = words(a), words(b)
    common = sum(min(x.count(w), y.count(w)) for w in set(x))
    if not common:
        return 0.0
    p, r = common / len(x), common / len(y)
    return 2 * p * r / (p + r)


def _share(weights: dict[str, float], present: set[str]) -> float:
    total = sum(weights.values())
    return sum(w for t, w in weights.items() if t in present) / total if total else 1.0


def _stems(text: str) -> set[str]:
    return {stem(w) for w in words(text)}


def features(
    question: str,
    reading: Reading,
    span: Span | None,
    sentence: str,
    passages: list[str],
    weights: dict[str, float],
    dense: float,
    coverage: float,
    title: str = "",
    unknown: set[str] | frozenset[str] = frozenset(),
) -> dict[str, float]:
    """The policy's inputs for one question, as named floats (see FEATURES).

    Args:
        question: the (standalone) question.
        reading: what the reader found in `passages`.
        span: the span the answer would state (None: the reader found none that fits).
        sentence: the sentence(s) holding that span ("" without a span).
        passages: the texts the reader read, in retrieval order.
        weights: the question's key terms with their IDF (unknown terms weigh the most).
        dense, coverage: the retrieval signals of the chosen evidence.
        title: the title of the document holding the span.
        unknown: the question's terms that occur nowhere in the corpus.
    """
    kind = answer_kind(question)
    q_numbers = numbers(question)
    best = reading.best
    f = dict.fromkeys(FEATURES, 0.0)
    f["margin"] = _clip(reading.no_answer)
    f["wants_number"] = float(wants_number(question))
    f["wants_person"] = float(wants_person(question, by_role=True))
    f["wants_date"] = float(bool(DATE_QUESTION.search(normalize(question))))
    f["explain"] = float(kind == "explain")
    f["several"] = float(kind == "list")
    f["dense"] = float(dense)
    f["coverage"] = float(coverage)
    f["question_words"] = math.log1p(len(words(question)))
    read_stems = set().union(*(_stems(p) for p in passages)) if passages else set()
    f["cov_read"] = _share(weights, read_stems)
    f["numbers_missing_read"] = len(q_numbers - set().union(*(numbers(p) for p in passages))) / len(q_numbers) if q_numbers and passages else 0.0
    known = {t: w for t, w in weights.items() if t not in unknown}
    f["unknown_share"] = 1.0 - sum(known.values()) / sum(weights.values()) if weights else 0.0
    if span is None or best is None:  # nothing to state: the worst case of every span feature
        f.update(local_margin=20.0, span_score=-20.0, gap=-20.0, span_rank=len(passages), type_mismatch=1.0, rare_missing=1.0)
        f.update(alt_gap=-20.0, rare_known_missing=1.0)
        f["numbers_missing"] = 1.0 if q_numbers else 0.0
        f["near_gap"] = f["cov_read"]
        return f
    f["local_margin"] = _clip(span.null - span.score)
    f["span_score"] = _clip(span.score)
    others = [s for s in reading.spans if s.passage != span.passage]
    f["gap"] = _clip(span.score - others[0].score) if others else 20.0
    f["agree"] = sum(_f1(s.text, span.text) >= 0.5 for s in others) / len(others) if others else 0.0
    f["span_rank"] = float(span.passage)
    span_words = words(span.text)
    f["span_words"] = math.log1p(len(span_words))
    q_words = set(words(question))
    f["span_in_question"] = sum(w in q_words for w in span_words) / len(span_words) if span_words else 1.0
    sentence_stems = _stems(sentence)
    f["cov_sentence"] = _share(weights, sentence_stems)
    f["cov_chunk"] = _share(weights, _stems(passages[span.passage])) if span.passage < len(passages) else 0.0
    f["cov_titled"] = _share(weights, sentence_stems | _stems(title))
    f["near_gap"] = f["cov_read"] - f["cov_sentence"]
    # the rarest term; among equally rare ones the first in sorted order, so the feature does not
    # depend on set order (string hashing differs per process: it flipped answers between runs)
    rare = max(sorted(weights), key=weights.get) if weights else None
    f["rare_missing"] = float(rare is not None and rare not in sentence_stems)
    f["alt_gap"] = _clip(span.score - span.runner_up)
    if weights and not known:  # nothing the question names is in the corpus: no evidence next to any span
        f.update(cov_sentence_known=0.0, rare_known_missing=1.0, cov_near=0.0)
    else:
        f["cov_sentence_known"] = _share(known, sentence_stems)
        rare_known = max(sorted(known), key=known.get) if known else None
        f["rare_known_missing"] = float(rare_known is not None and rare_known not in sentence_stems)
        if span.passage < len(passages):
            text = passages[span.passage]
            near = words(text[: span.start])[-NEAR:] + words(text[span.end :])[:NEAR]
            f["cov_near"] = _share(known, {stem(w) for w in near})
    f["numbers_missing"] = len(q_numbers - numbers(sentence)) / len(q_numbers) if q_numbers else 0.0
    has_number = bool(numbers(span.text) - q_numbers)
    mismatch = (f["wants_number"] and not has_number) or (f["wants_person"] and not names_someone(span.text))
    f["type_mismatch"] = float(bool(mismatch))
    return f


class Calibrator(BaseModel):
    """P(the stated answer is right | features): standardise, logistic regression, Platt scaling."""

    format: str = POLICY_FORMAT
    features: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    platt: tuple[float, float] = (1.0, 0.0)
    record: dict = {}

    def probability(self, values: dict[str, float]) -> float:
        """The calibrated probability that the answer these features describe is right.

        >>> c = Calibrator(features=["margin"], mean=[0.0], scale=[1.0], coef=[-1.0], intercept=0.0)
        >>> round(c.probability({"margin": 0.0}), 2), c.probability({"margin": 5.0}) < 0.01
        (0.5, True)
        """
        x = np.array([values.get(name, 0.0) for name in self.features], dtype=float)
        z = (x - np.array(self.mean)) / np.array(self.scale)
        logit = float(z @ np.array(self.coef) + self.intercept)
        a, b = self.platt
        return float(1.0 / (1.0 + math.exp(-_clip(a * logit + b, -40, 40))))

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / POLICY_FILE
        path.write_text(self.model_dump_json(indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: Path | None = None) -> "Calibrator":
        """The calibrator in `folder` (default: the one shipped in rag/models/policy).

        Raises:
            PolicyError: the file is missing, unreadable, of another format, or names features
                this version of rag does not compute.
        """
        path = (folder or POLICY_DIR) / POLICY_FILE
        restore = "restore it with `git checkout -- rag/models/policy` or retrain it (python -m rag.training.train_policy)"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise PolicyError(f"The answer policy {path} is missing or unreadable ({err}); {restore}.") from err
        if data.get("format") != POLICY_FORMAT:
            raise PolicyError(f"{path} is not a {POLICY_FORMAT!r} file; {restore}.")
        calibrator = cls.model_validate(data)
        unknown = set(calibrator.features) - set(FEATURES)
        if unknown or not (len(calibrator.features) == len(calibrator.mean) == len(calibrator.scale) == len(calibrator.coef)):
            raise PolicyError(f"{path} does not fit this rag (unknown features {sorted(unknown)} or ragged arrays); {restore}.")
        return calibrator
