"""SQuAD-format data for the reader: splits by whole article, and made negatives kept apart.

Pure Python (no torch, no rag.config), so it runs on a bare GPU machine too.

Kinds of example, recorded in every row so that scores can be reported per kind:
- ``answer``: an answerable SQuAD question with its own paragraph.
- ``para_neg``: the question with another paragraph of the same article that lacks the answer
  (our "on-topic but absent" case).
- ``rule_neg``: the question rewritten so that its own paragraph no longer answers it, the way
  SQuAD 2.0's writers did (an entity, number or year swapped for another of the article, an
  antonym, a negation).
- ``real_neg``: a real SQuAD 2.0 unanswerable question (validation and evaluation only).
"""

from __future__ import annotations

import gzip
import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path

KINDS = ("answer", "para_neg", "rule_neg", "real_neg")


@dataclass
class Example:
    qid: str
    title: str
    question: str
    context: str
    answers: list[str]
    starts: list[int]
    kind: str

    @property
    def answerable(self) -> bool:
        return self.kind == "answer"

    def to_json(self) -> dict:
        return asdict(self)


def load_squad(path: Path) -> list[dict]:
    """The `data` list of a SQuAD v1/v2 JSON file (gzipped or not)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return json.load(f)["data"]


def examples_of(articles: list[dict], keep_unanswerable: bool = True) -> list[Example]:
    """Every question of `articles` with its own paragraph (real unanswerables as ``real_neg``)."""
    out: list[Example] = []
    for art in articles:
        for para in art["paragraphs"]:
            for qa in para["qas"]:
                impossible = qa.get("is_impossible", False) or not qa["answers"]
                if impossible and not keep_unanswerable:
                    continue
                out.append(
                    Example(
                        qid=qa["id"],
                        title=art["title"],
                        question=qa["question"].strip(),
                        context=para["context"],
                        answers=[] if impossible else [a["text"] for a in qa["answers"]],
                        starts=[] if impossible else [a["answer_start"] for a in qa["answers"]],
                        kind="real_neg" if impossible else "answer",
                    )
                )
    return out


def split_titles(titles: list[str], every: int, exclude: set[str]) -> tuple[list[str], list[str]]:
    """(train, held-out) titles: every `every`-th title in sorted order is held out.

    >>> split_titles(["d", "a", "c", "b"], 2, {"c"})
    (['a', 'd'], ['b'])
    """
    kept = sorted(t for t in titles if t not in exclude)
    held = kept[1::every] if every > 1 else []
    held_set = set(held)
    return [t for t in kept if t not in held_set], held


# -- made negatives -------------------------------------------------------------------------------

_CAPS = re.compile(r"\b[A-Z][\w'\-]*(?:\s+(?:of|the|de|von|van|and|for)?\s*[A-Z][\w'\-]*)*")
_NUMBER = re.compile(r"\b\d[\d,]*(?:\.\d+)?\b")
_YEAR = re.compile(r"^(1[5-9]\d\d|20\d\d)$")
_QWORDS = {"What", "Who", "Whom", "Whose", "Which", "When", "Where", "Why", "How", "In", "On", "At", "The", "A", "An",
           "To", "For", "From", "By", "During", "After", "Before", "Of", "Is", "Was", "Are", "Were", "Did", "Does", "Do"}
ANTONYMS = {
    "first": "last", "last": "first", "largest": "smallest", "smallest": "largest", "biggest": "smallest",
    "most": "least", "least": "most", "highest": "lowest", "lowest": "highest", "earliest": "latest",
    "latest": "earliest", "before": "after", "after": "before", "increase": "decrease", "decrease": "increase",
    "increased": "decreased", "decreased": "increased", "longest": "shortest", "shortest": "longest",
    "oldest": "newest", "newest": "oldest", "best": "worst", "worst": "best", "north": "south", "south": "north",
    "east": "west", "west": "east", "won": "lost", "lost": "won", "major": "minor", "minor": "major",
    "maximum": "minimum", "minimum": "maximum", "older": "younger", "younger": "older", "more": "fewer",
    "higher": "lower", "lower": "higher", "early": "late", "late": "early", "start": "end", "began": "ended",
}
_NEGATABLE = re.compile(r"^((?:What|Who|Which|When|Where|How \w+|Why)\s+(?:\w+\s+)?)(is|was|are|were|did|does|do|can|could|has|had|have|will|would)\b(?!\s+not)")


def _entities(text: str) -> list[str]:
    found = []
    for m in _CAPS.finditer(text):
        span = m.group(0).strip()
        words = span.split()
        while words and words[0] in _QWORDS:
            words = words[1:]
        if words:
            found.append(" ".join(words))
    return found


class ArticleTerms:
    """The capitalised names and numbers of one article, found once for all its questions."""

    def __init__(self, article_text: str) -> None:
        self.entities = sorted(set(_entities(article_text)))
        self.numbers = sorted(set(_NUMBER.findall(article_text)))


def rule_negative(ex: Example, article: ArticleTerms, rng: random.Random) -> tuple[str, str] | None:
    """A rewrite of `ex.question` that its paragraph no longer answers, and the rule's name.

    Tries the rules in a random order and returns the first that applies, or None.
    """
    q, ctx = ex.question, ex.context
    low_ctx = ctx.lower()

    def entity_swap() -> str | None:
        mine = [e for e in _entities(q) if e.lower() in low_ctx]
        others = [e for e in article.entities if e.lower() not in low_ctx and e.lower() not in q.lower()]
        if not mine or not others:
            return None
        old = rng.choice(mine)
        same_len = [e for e in others if len(e.split()) == len(old.split())] or others
        return q.replace(old, rng.choice(same_len), 1)

    def number_swap() -> str | None:
        mine = [n for n in _NUMBER.findall(q) if n in ctx]
        if not mine:
            return None
        old = rng.choice(mine)
        want_year = bool(_YEAR.match(old))
        others = [n for n in article.numbers if n not in ctx and bool(_YEAR.match(n)) == want_year]
        if not others:
            return None
        return re.sub(rf"\b{re.escape(old)}\b", rng.choice(others), q, count=1)

    def antonym() -> str | None:
        words = q.split()
        spots = [i for i, w in enumerate(words) if w.lower().strip("?,.") in ANTONYMS]
        if not spots:
            return None
        i = rng.choice(spots)
        core = words[i].lower().strip("?,.")
        swapped = ANTONYMS[core]
        if swapped in low_ctx.split():
            return None  # the paragraph may answer the flipped question too
        tail = words[i][len(words[i].rstrip("?,.")):]
        words[i] = (swapped.capitalize() if words[i][0].isupper() else swapped) + tail
        return " ".join(words)

    def negation() -> str | None:
        m = _NEGATABLE.match(q)
        if not m or " not " in q or "n't" in q:
            return None
        return q[: m.end()] + " not" + q[m.end():]

    rules = {"entity": entity_swap, "number": number_swap, "antonym": antonym, "negation": negation}
    names = list(rules)
    rng.shuffle(names)
    # negation is the crudest rule: try it last
    names.sort(key=lambda n: n == "negation")
    for name in names:
        new = rules[name]()
        if new and new != q:
            return new, name
    return None


# Training-time rewordings. `rag eval --paraphrase` asks others (rag/eval/golden.py VARIANTS), so
# the consistency it reports is on wordings neither the reader nor the policy trained on.
CLAUSES = ("as described in the text", "based on the documents", "per the source", "in the material provided")
LEADS = ("I was wondering:", "Can you tell me:", "One thing I need to know:")


def reworded(question: str, rng: random.Random, title: str = "the subject") -> tuple[str, str]:
    """One training rewording of `question` and its kind; "title" names the source document.

    >>> reworded("Who won?", random.Random(0))[1] in {"clause", "lead", "lower", "title"}
    True
    """
    kind = rng.choice(["clause", "lead", "lower", "title"])
    q = question.strip()
    if kind == "title":
        return f"{q.rstrip('?').rstrip()}, according to the piece on {title}?", kind
    if kind == "clause":
        return f"{q.rstrip('?').rstrip()}, {rng.choice(CLAUSES)}?", kind
    if kind == "lead":
        return f"{rng.choice(LEADS)} {q[0].lower() + q[1:]}", kind
    return q.lower().rstrip("?").rstrip(), kind


def with_rewordings(examples: list[Example], rate: float, seed: int) -> tuple[list[Example], int]:
    """`examples` plus, for a `rate` share of them, a copy asked another way (a source clause, a
    lead-in, lower case: `reworded`) with the same label, answerable or not. The reader then learns
    that where a question says its facts come from is no evidence for or against an answer.

    >>> ex = Example("1", "T", "Who won?", "X won.", ["X"], [0], "answer")
    >>> out, n = with_rewordings([ex], 1.0, 0)
    >>> n, out[1].qid, out[1].answers
    (1, '1-reworded', ['X'])
    """
    rng = random.Random(seed)
    extra = []
    for ex in examples:
        if rng.random() < rate:
            q, _ = reworded(ex.question, rng, ex.title.replace("_", " "))
            extra.append(Example(ex.qid + "-reworded", ex.title, q, ex.context, ex.answers, ex.starts, ex.kind))
    return examples + extra, len(extra)


def with_negatives(
    articles: list[dict], para_rate: float, rule_rate: float, seed: int
) -> tuple[list[Example], dict[str, int]]:
    """Answerable examples of `articles` plus made paragraph and rule negatives.

    Returns the examples and counts per kind (and per rule).
    """
    rng = random.Random(seed)
    out: list[Example] = []
    counts: dict[str, int] = {}
    for art in articles:
        paras = [p["context"] for p in art["paragraphs"]]
        terms = ArticleTerms("\n".join(paras))
        for ex in examples_of([art], keep_unanswerable=False):
            out.append(ex)
            if rng.random() < para_rate and len(paras) > 1:
                answer = ex.answers[0].lower()
                options = [p for p in paras if p != ex.context and answer not in p.lower()]
                if options:
                    out.append(Example(ex.qid + "-para", ex.title, ex.question, rng.choice(options), [], [], "para_neg"))
            if rng.random() < rule_rate:
                made = rule_negative(ex, terms, rng)
                if made:
                    question, rule = made
                    out.append(Example(ex.qid + f"-{rule}", ex.title, question, ex.context, [], [], "rule_neg"))
                    counts[f"rule_neg:{rule}"] = counts.get(f"rule_neg:{rule}", 0) + 1
    for ex in out:
        counts[ex.kind] = counts.get(ex.kind, 0) + 1
    return out, counts
