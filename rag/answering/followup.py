"""Follow-up questions -> standalone questions, by rule (the 135M LLM is unreliable at rewriting)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..lexicon import LEAD_WORDS, PERSONAL_PRONOUNS, REQUEST_VERBS, STOPWORDS, THING_WORDS, WH_WORDS

# "and what about Google?", "How about xAI?", "And for OpenAI?", "what of Musk?"
_ELLIPSIS = re.compile(
    r"^\s*(?:and|but|also|so|ok(?:ay)?|then)?[\s,]*(?:what|how)\s+(?:about|of)\s+(?P<x>.+?)\s*[?.!]*\s*$"
    r"|^\s*(?:and|but|also)[\s,]+(?:for\s+|with\s+|at\s+)?(?P<y>[^?]+?)\s*[?.!]*\s*$",
    re.IGNORECASE,
)
_LEAD = re.compile(r"^\s*(?:and|but|also|so|ok(?:ay)?|then)\b[\s,]*", re.IGNORECASE)
# Capitalised only because they start the question: not names.
_NOT_NAMES = WH_WORDS | STOPWORDS | REQUEST_VERBS
# A capitalised span that is not the sentence's first word: "Elon Musk", "Meta", "OpenAI", "xAI".
_ENTITY = re.compile(r"(?<![\w’'])(?:[A-Z][\w.&-]*|[a-z]+[A-Z][\w-]*)(?:\s+(?:[A-Z][\w.&-]*|[a-z]+[A-Z][\w-]*))*")
_WORD = re.compile(r"[\w’']+")
SHORT_WORDS = 6


def entities(question: str) -> list[str]:
    """Named entities of a question: capitalised spans, skipping its first word and acronyms like AI.

    >>> entities("How much did Meta offer Sam Altman's team?")
    ['Meta', 'Sam Altman']
    """
    found = []
    for m in _ENTITY.finditer(question):
        span = m.group(0)
        if m.start() == len(question) - len(question.lstrip()):  # sentence-initial word
            words = span.split()
            if words[0].lower() in _NOT_NAMES:
                span = " ".join(words[1:])
            if not span:
                continue
        span = re.sub(r"['’]s$", "", span)
        if span and not (span.isupper() and len(span) <= 3):
            found.append(span)
    return found


def is_followup(question: str) -> bool:
    """True when the question leans on an earlier one: an elliptical "and what about X?",
    or a short question with a pronoun and no name of its own.

    >>> is_followup("And what about Google?"), is_followup("What did he say?")
    (True, True)
    >>> is_followup("What did Musk say about Meta's offers?")
    False
    """
    if _ELLIPSIS.match(question):
        return True
    words = [w.lower() for w in _WORD.findall(question)]
    if not words or entities(question):
        return False
    if any(w in PERSONAL_PRONOUNS for w in words):
        return True
    return len(words) <= SHORT_WORDS and (any(w in THING_WORDS for w in words) or words[0] in LEAD_WORDS or len(words) <= 2)


def rewrite(question: str, previous: Sequence[str]) -> str:
    """The standalone form of `question`, given the earlier standalone questions (oldest first).

    Only the last earlier question is used as the frame; a question that is not a follow-up,
    or one with no earlier question, is returned unchanged (stripped).

    Worked example, with the previous question "How much did Meta offer AI researchers?":

    - "and what about Google?" is elliptical: its subject replaces the previous question's
      first named entity (Meta), giving "How much did Google offer AI researchers?";
    - "Who did he hire?" after "What did Elon Musk say?" puts the name in: "Who did Elon Musk hire?";
    - "and when?" has nothing to substitute, so it is merged with the frame:
      "How much did Meta offer AI researchers? When?".

    >>> rewrite("and what about Google?", ["How much did Meta offer AI researchers?"])
    'How much did Google offer AI researchers?'
    >>> rewrite("Who did he hire?", ["What did Elon Musk say about Meta?"])
    'Who did Elon Musk hire?'
    >>> rewrite("and when?", ["How much did Meta offer AI researchers?"])
    'How much did Meta offer AI researchers? When?'
    >>> rewrite("Who is Alexandr Wang?", ["How much did Meta offer?"])
    'Who is Alexandr Wang?'
    """
    question = " ".join(question.split())
    if not previous or not is_followup(question):
        return question
    frame = " ".join(previous[-1].split())
    frame_entities = entities(frame)
    m = _ELLIPSIS.match(question)
    if m:
        subject = (m.group("x") or m.group("y") or "").strip()
        if subject and any(c.isupper() for c in subject) and not _is_bare_wh(subject):
            if frame_entities:
                return _replace_first(frame, frame_entities[0], subject)
            return f"{frame.rstrip(' ?.!')}, regarding {subject}?"
    rest = _LEAD.sub("", question).strip()
    rest = rest[:1].upper() + rest[1:]
    words = [w.lower() for w in _WORD.findall(rest)]
    if frame_entities and any(w in PERSONAL_PRONOUNS for w in words):
        name = frame_entities[0]

        def sub(match: re.Match[str]) -> str:
            return PERSONAL_PRONOUNS[match.group(0).lower()].format(name)

        pattern = r"\b(?:" + "|".join(sorted(PERSONAL_PRONOUNS, key=len, reverse=True)) + r")\b"
        return re.sub(pattern, sub, rest, count=1, flags=re.IGNORECASE)
    ending = "" if frame.endswith(("?", ".", "!")) else "?"
    return f"{frame}{ending} {rest}".strip()


def _is_bare_wh(text: str) -> bool:
    return all(w.lower() in WH_WORDS for w in _WORD.findall(text))


def _replace_first(text: str, old: str, new: str) -> str:
    i = text.find(old)
    return text if i < 0 else text[:i] + new + text[i + len(old):]
