"""The English words and phrases the rules look for, in one place (another language = another lexicon)."""

from __future__ import annotations

import re

from bm25s.stopwords import STOPWORDS_EN_PLUS

# Words that carry no content in a question: the question frame and very common verbs.
QUESTION_WORDS = frozenset(
    """what which who whom whose when where why how did does do was were is are has have had
    according article articles say said says tell told much many according named name called
    kind type one ones also about get got make made per the a an of""".split()
)
STOPWORDS = frozenset(STOPWORDS_EN_PLUS) | QUESTION_WORDS
"""Never a key term: BM25, evidence overlap, the grounding check and the UI's topics skip these."""

NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "twenty": 20,
    "fifty": 50, "hundred": 100,
}
"""Spelled-out numbers read as numbers, by the answer checks ("two" = "2") and by eval matching
("fourteen" = "14"). One list for both, the union of the two that had drifted apart."""

MAGNITUDES = {
    "thousand": 1e3, "k": 1e3, "million": 1e6, "m": 1e6, "mn": 1e6, "billion": 1e9, "bn": 1e9, "b": 1e9, "trillion": 1e12,
}
"""Multipliers after a number, so "$10 million" = "$10,000,000" when answers are scored."""

ABBREVIATIONS = (
    "Mr Mrs Ms Dr Prof Sr Jr St vs v etc Inc Ltd Co Corp No approx Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct Nov Dec"
).split()
"""Words whose trailing period does not end a sentence ("Dr. Smith")."""

# -- questions ------------------------------------------------------------------------------
NUMERIC_QUESTION = re.compile(
    r"\b(how (much|many|big|large|old|long)|what (percentage|percent|share|proportion|amount|sum|figure|number|year|date)|"
    r"when|which year)\b"
)
"""A question that asks for a number (matched on normalised, lower-case text)."""

CLAUSE_START = r"(?:^|[:;,!?—–]\s*)\s*"
"""Where a question's own words begin: the start, or after a lead-in ("Quick question: who ...", "In 2022, who ...")."""

PERSON_QUESTION = re.compile(CLAUSE_START + r"(who|whom|whose)\b")
"""A question that asks for a person."""

DATE_QUESTION = re.compile(r"\b(when|what (year|date|month|day|decade|century)|which (year|date|month|day|decade|century)|in what year)\b")
"""A question that asks for a date or a year."""

PERSON_ROLE_QUESTION = re.compile(r"\bwhich (person|people|executive|researcher|scientist|engineer|ceo|founder|manager)\b")
"""A question that asks for a person by role ("which executive ..."): the reader's span must name one."""

EXPLAIN_QUESTION = re.compile(CLAUSE_START + r"(why|how(?!\s+(many|much|long|old|big|large|far|often|tall|high)\b)|in what way|explain|describe)\b")
"""A why/how question: answered with a sentence, not a span."""

LIST_QUESTION = re.compile(r"\b(which|what) (two|three|four|five|\d+)\b|\blist\b|\bname (the|all|some)\b|\bwhat are (the|some)\b")
"""A question asking for several things."""

TWO_ASKS = re.compile(r",?\s+and\s+(?:(?:in|on|at|for|to|from|by|of|with)\s+)?(what|who|whom|which|how|when|where|why|whose)\b")
"""A question that joins two questions ("..., and how much ...?")."""

WH_WORDS = frozenset(
    "what which who whom whose when where why how did does do is are was were has have had can could will would should and but".split()
)
"""Words that open a question; never a name even when capitalised."""

REQUEST_VERBS = frozenset("tell list name give explain describe summarize summarise compare please".split())
"""Imperatives that open a request ("Tell me about Wang"); never a name."""

PERSONAL_PRONOUNS = {
    "he": "{}", "she": "{}", "him": "{}", "her": "{}", "they": "{}", "them": "{}",
    "his": "{}'s", "hers": "{}'s", "their": "{}'s", "theirs": "{}'s",
}
"""Pronouns a follow-up uses for the previous question's person, and how to put the name in."""

THING_WORDS = frozenset("it its that this those these there then".split())
"""Words that point back at the previous question's subject."""

LEAD_WORDS = frozenset("and but also".split())
"""Words that open an elliptical follow-up ("and Google?")."""

# -- model output ---------------------------------------------------------------------------
REFUSAL_PHRASES = re.compile(
    r"(do(es)? not (say|mention|contain|provide|specify|state|include)|don't (say|mention)|not (mentioned|stated|specified|provided|given)|"
    r"no (information|mention)|cannot (answer|be determined)|can't answer|unable to (answer|determine)|not in the (articles|passages))"
)
"""How the model says the passages lack the answer (matched on normalised, lower-case text)."""
