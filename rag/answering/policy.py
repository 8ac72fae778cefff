"""The answer policy: which evidence to use, when to refuse, and whether the model's answer is kept.

Every decision between retrieval and the final Answer is here, each threshold a Settings field:

- `choose`: the one or two evidence sentences the answer is built from;
- `signals` + `gate`: refuse before generating when the evidence cannot hold the answer;
- `judge`: the model's text -> kept (generated), replaced by a quote (extractive) or a refusal,
  through the model-refusal rule and `check` (grounded in what it cites, and answers the question).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel

from .citations import best_supporting, cited_numbers, drop_bad_markers, strip_markers
from ..config import Settings
from ..lexicon import REFUSAL_PHRASES, STOPWORDS
from .phrasing import answer_kind, names_someone, template, wants_number, wants_person
from .phrasing import check as check_phrasing
from .prompt import REFUSAL
from .reader import Reading, Span
from ..text import normalize, numbers, proper_names, stem, terms, words
from ..types import Evidence, Signals

# -- question classifiers -----------------------------------------------------------------


def is_refusal(text: str) -> bool:
    """Whether the model's own words say the passages lack the answer.

    >>> is_refusal("The articles do not say."), is_refusal("Meta paid $14.3 billion [1].")
    (True, False)
    """
    return bool(REFUSAL_PHRASES.search(normalize(text)))


def signals(question: str, evidence_texts: list[str], dense: float, coverage: float) -> Signals:
    """What the gate looks at; `evidence_texts` are the sentences the answer would come from."""
    q_numbers = numbers(question)
    q_words = set(words(question))
    return Signals(
        dense=round(dense, 4),
        coverage=round(coverage, 4),
        wants_number=wants_number(question),
        has_number=any(numbers(t) - q_numbers for t in evidence_texts),
        wants_person=wants_person(question),
        has_name=any(proper_names("x " + t) - q_words for t in evidence_texts),
    )


# -- results ------------------------------------------------------------------------------


class Grounding(BaseModel):
    """Whether an answer's checkable facts appear in the passages it relies on."""

    ok: bool
    missing: list[str] = []
    support: float = 0.0  # share of the answer's content words found in the passages


class Verdict(BaseModel):
    ok: bool
    why: str = ""


class Decision(BaseModel):
    """What becomes of the model's text."""

    route: Literal["generated", "extractive", "refused"]
    reason: str
    text: str = ""  # the checked answer with its [n] markers (route "generated", or a span's template)
    cited: list[int] = []  # 1-based numbers of the chosen sentences it cites (route "generated" only)


# -- the policy ---------------------------------------------------------------------------


class AnswerPolicy:
    """The thresholds come from Settings (each field says why); the question and evidence in the call."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def choose(self, query: str, evidence: list[Evidence]) -> list[Evidence]:
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
            if (q_terms - got) & set(terms(e.sentence.text)) and e.score >= evidence[0].score - self.settings.second_sentence_margin:
                chosen.append(e)
                break
        return chosen

    def gate(self, s: Signals) -> str | None:
        """The reason to refuse before generating, or None when the evidence may hold the answer."""
        c = self.settings
        if s.dense < c.min_dense and (s.coverage < c.full_coverage or s.dense < c.min_dense_always):
            # a short question can have a low cosine with the long sentence that answers it
            # ("What retention rate did Cohere have?" vs a list of six companies' rates), so a low
            # cosine alone refuses only when the question's key terms are not all there either
            return f"no passage is close to the question (best cosine {s.dense:.2f} < {c.min_dense})"
        if s.coverage < c.min_coverage and s.dense < c.strong_dense:
            return f"the passages miss the question's key terms (coverage {s.coverage:.2f} < {c.min_coverage})"
        if s.wants_number and not s.has_number:
            return "the question asks for a number and the best passages give none"
        if s.wants_person and not s.has_name:
            return "the question asks who, and the best passages name no one new"
        return None

    # -- with the span reader -----------------------------------------------------------
    def read_gate(self, reading: Reading) -> str | None:
        """The reason to refuse after reading, or None when the reader found an answer."""
        limit = self.settings.reader_no_answer
        if reading.best is None:
            return "the reader found no passage text to answer from"
        if reading.no_answer >= limit:
            return f"the reader found no answer in the passages (no-answer margin {reading.no_answer:.1f} >= {limit:g})"
        return None

    def pick_span(self, query: str, reading: Reading) -> Span | None:
        """The reader's best span that fits the question: for a who-question one that names
        someone (a role such as "the CEO of the lab" does not answer "who"), for a how-much
        question one that holds a number. None when no span fits."""
        if wants_person(query, by_role=True):
            return next((sp for sp in reading.spans if names_someone(sp.text)), None)
        if wants_number(query):
            return next((sp for sp in reading.spans if numbers(sp.text)), None)
        return reading.best

    def wants_span(self, query: str) -> bool:
        """Whether the answer should be the span in a short sentence: facts, numbers, names,
        dates. Why/how questions and questions asking for several things keep the sentence route."""
        return answer_kind(query) == "span"

    def phrase(self, query: str, span: Span, passage: str, generated: str | None, cited: int = 1) -> Decision:
        """The model's phrasing of the span if the check keeps it, else the span's template.
        `cited`: how many sentences hold the span (one, rarely two); all are cited."""
        marks = "".join(f"[{n}]" for n in range(1, cited + 1))
        if generated is not None:
            text = first_line(generated)
            verdict = check_phrasing(text, span.text, passage, query, self.settings.max_answer_words)
            if verdict.ok:
                body = strip_markers(text)
                return Decision(route="generated", reason="the model's phrasing of the reader's span", text=f"{body} {marks}", cited=list(range(1, cited + 1)))
            why = f"phrasing rejected ({verdict.why}); the span as found"
        else:
            why = "the span as found (LLM phrasing off)"
        return Decision(route="extractive", reason=why, text=f"{template(span.text)} {marks}", cited=list(range(1, cited + 1)))

    def judge(self, query: str, chosen: list[Evidence], generated: str, s: Signals) -> Decision:
        """Keep the model's answer only if it passes the checks; otherwise quote the evidence.

        The model's "not in the passages" is trusted when the question's key terms are not all
        covered; with full coverage it is the 135M model giving up on a real answer.
        """
        raw = first_line(generated)
        if is_refusal(raw):
            if s.coverage < self.settings.full_coverage:
                return Decision(route="refused", reason="the model found no answer in the passages")
            return Decision(route="extractive", reason="the model declined despite strong evidence")
        text = drop_bad_markers(raw, len(chosen))
        used = cited_numbers(text, len(chosen))
        how = "cited by the model"
        if not used:
            used = best_supporting(text, chosen)
            text = f"{text.rstrip()} " + "".join(f"[{n}]" for n in used)
            how = "no marker from the model; attached the passage(s) holding its words"
        if self.settings.grounding_check:
            verdict = self.check(text, [chosen[n - 1].sentence.text for n in used], query)
            if not verdict.ok:
                return Decision(route="extractive", reason=f"generated answer rejected: {verdict.why}")
        return Decision(route="generated", reason=how, text=text, cited=used)

    def grounding(self, answer: str, passages: list[str], question: str = "") -> Grounding:
        """Every number and proper name in the answer must appear in the passages (names may also
        come from the question), and at least `min_support` of its content words must too.

        This catches the 135M model's typical failures: a number from its memory, a person from
        another passage, or a fluent sentence about something else.

        >>> policy = AnswerPolicy(Settings())
        >>> policy.grounding("Cohere had 64 percent [1].", ["Cohere had (64 percent)"]).ok
        True
        >>> policy.grounding("Cohere had 80 percent.", ["Cohere (64 percent)"]).missing
        ['80']
        """
        body = strip_markers(answer)
        source = " ".join(passages)
        missing = sorted(numbers(body) - numbers(source))
        allowed_names = {w for w in words(source + " " + question)}
        missing += sorted(n for n in proper_names(body) if n not in allowed_names and n.rstrip("s") not in allowed_names)
        content = [stem(w) for w in words(body) if w not in STOPWORDS and not w[0].isdigit()]
        source_stems = {stem(w) for w in words(source + " " + question)}
        support = sum(1 for w in content if w in source_stems) / len(content) if content else 0.0
        ok = not missing and bool(content or numbers(body)) and support >= self.settings.min_support
        return Grounding(ok=ok, missing=missing, support=round(support, 3))

    def check(self, answer: str, cited: list[str], question: str) -> Verdict:
        """Accept a generated answer only if it is grounded in what it cites AND answers something.

        Grounded: see `grounding`. Answers: it adds a fact from the passages that the question
        did not already contain — a number for a how-much question, a name for a who question,
        otherwise at least one content word. A fluent restatement of the question fails.

        >>> policy = AnswerPolicy(Settings())
        >>> policy.check("Cohere had 64 percent [1].", ["Cohere had 64 percent, Meta 64 percent"], "What rate did Cohere have?").ok
        True
        >>> policy.check("Cohere had a retention rate [1].", ["Cohere (64 percent)"], "What retention rate did Cohere have?").why
        'it adds nothing the question did not already say'
        """
        grounding = self.grounding(answer, cited, question)
        if not grounding.ok:
            missing = f"missing {', '.join(grounding.missing)}" if grounding.missing else f"support {grounding.support}"
            return Verdict(ok=False, why=f"not grounded in the cited passage ({missing})")
        body = strip_markers(answer)
        limit = self.settings.max_answer_words
        if len(body.split()) > limit:
            return Verdict(ok=False, why=f"longer than {limit} words")
        q_stems = {stem(w) for w in words(question)}
        source = " ".join(cited)
        new_numbers = (numbers(body) & numbers(source)) - numbers(question)
        new_names = (proper_names("x " + body) & {w for w in words(source)}) - set(words(question))
        new_words = {stem(w) for w in words(body) if w not in STOPWORDS and not w[0].isdigit()} - q_stems
        if wants_number(question) and not new_numbers:
            return Verdict(ok=False, why="the question asks for a number and the answer gives none from the passage")
        if wants_number(question) and len(numbers(source) - numbers(question)) > 1:
            # several candidate numbers: the 135M model often pairs the wrong one with the subject
            # ("$100 million" for a "$10,000,000 a year" offer), so quote the passage instead
            return Verdict(ok=False, why="the passage holds several numbers; quoting it rather than trusting the pick")
        if wants_person(question) and not new_names:
            return Verdict(ok=False, why="the question asks who and the answer names no one from the passage")
        if not (new_numbers or new_names or new_words):
            return Verdict(ok=False, why="it adds nothing the question did not already say")
        return Verdict(ok=True)


def first_line(text: str) -> str:
    """The answer's first line, with a leading "[2] ..." list marker moved to its end.

    >>> first_line("[2] Meta paid it.\\nMore")
    'Meta paid it. [2]'
    """
    text = text.strip()
    if not text:
        return REFUSAL
    line = text.split("\n", 1)[0].strip()
    lead = re.match(r"^((?:\[\d+\]\s*)+)(.+)$", line)
    if lead:
        line = f"{lead.group(2).strip()} {lead.group(1).strip()}"
    return line
