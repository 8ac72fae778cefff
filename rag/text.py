"""Shared word handling: the tokens BM25, evidence scoring and the grounding check agree on."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import Stemmer

from .lexicon import MAGNITUDES, NUMBER_WORDS, STOPWORDS

_WORD = re.compile(r"[0-9]+(?:[.,][0-9]+)*|[^\W\d_]+(?:['’][^\W\d_]+)*", re.UNICODE)
_stemmer = Stemmer.Stemmer("english")


def normalize(text: str) -> str:
    """NFKC-fold, lower-case and unify quotes, so 'Meta’s' and "Meta's" compare equal."""
    text = unicodedata.normalize("NFKC", text).lower()
    return text.replace("’", "'").replace("‘", "'").replace("“", '"').replace("”", '"')


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    return _stemmer.stemWord(word)


def words(text: str) -> list[str]:
    """Lower-cased word and number tokens, possessives dropped.

    >>> words("Meta’s $14.3 billion deal")
    ['meta', '14.3', 'billion', 'deal']
    """
    out = []
    for token in _WORD.findall(normalize(text)):
        if token.endswith("'s"):
            token = token[:-2]
        out.append(token.replace(",", "") if token[0].isdigit() else token)
    return out


def terms(text: str) -> list[str]:
    """Stemmed content terms (stopwords and question words removed)."""
    return [stem(w) for w in words(text) if w not in STOPWORDS]


ANALYSER_VERSION = 2
"""Of `index_terms`, recorded in the index manifest: another version means the BM25 statistics
were counted another way, so the index is rebuilt. v2: hyphenated words also count joined."""

_COMPOUND = re.compile(r"[^\W\d_]+(?:[-‐‑][^\W\d_]+)+", re.UNICODE)


def index_terms(text: str) -> list[str]:
    """The analyser of BM25, the same for a passage and a question: `terms`, plus each hyphenated
    word joined, so spellings that differ only by hyphens, spacing or case meet. Letters and
    digits are already separate terms ("Llama3", "Llama-3" and "llama 3" all give llama, 3;
    "COVID19" and "COVID-19" give covid, 19); "Wi-Fi" gives wi, fi and the "wifi" that "WiFi"
    and "wifi" give. Numbers and years are terms like words.

    >>> index_terms("Llama-3 and Wi-Fi in 2023")
    ['llama', '3', 'wi', 'fi', '2023', 'wifi']
    >>> index_terms("WiFi, COVID19")
    ['wifi', 'covid', '19']
    """
    out = terms(text)
    for m in _COMPOUND.finditer(normalize(text)):
        joined = re.sub(r"[-‐‑]", "", m.group(0))
        if joined not in STOPWORDS:
            out.append(stem(joined))
    return out


def numbers(text: str) -> set[str]:
    """Numbers mentioned, normalised ('1,000' -> '1000', '4.30' -> '4.3', 'two' -> '2')."""
    found = set()
    for w in words(text):
        if w[0].isdigit():
            n = w.rstrip(".")
            if "." in n:
                n = n.rstrip("0").rstrip(".")
            found.add(n)
        elif w in NUMBER_WORDS:
            found.add(str(NUMBER_WORDS[w]))
    return found


def proper_names(text: str, sentence_starts: bool = False) -> set[str]:
    """Capitalised words that do not start a sentence: a cheap stand-in for named entities.
    With `sentence_starts`, a sentence's capitalised first word counts too (where every name
    must be accounted for, a false alarm on "Google kept it." is worse than on "It").

    >>> sorted(proper_names("He said Meta hired Alexandr Wang. The deal closed."))
    ['alexandr', 'meta', 'wang']
    >>> sorted(proper_names("Google kept it. The CEO said so.", sentence_starts=True))
    ['ceo', 'google']
    """
    names = set()
    for sentence in re.split(r"(?<=[.!?:])\s+|\n+", text):
        tokens = re.findall(r"[^\W\d_]+(?:['’][^\W\d_]+)*", sentence)
        for token in tokens if sentence_starts else tokens[1:]:
            if len(token) > 1 and token[0].isupper() and token.lower() not in STOPWORDS:
                names.add(normalize(token).split("'")[0])
    return names


# -- answers compared by value (the grader and the phrasing check agree) ---------------------------

_QUANTITY = re.compile(r"(\d[\d,]*(?:\.\d+)?)\s*(thousand|million|billion|trillion|mn|bn|[kmb]\b)?")


def _canon(text: str) -> str:
    """Lower-case, unify quotes, dashes and percent signs, drop other punctuation.

    >>> _canon("Meta’s 64 percent, open-source!")
    "meta's 64 % open source"
    """
    t = normalize(text)
    t = re.sub(r"\bper ?cent\b", "%", t)
    t = re.sub(r"(\d)\s*%", r"\1 %", t)
    t = re.sub(r"[‐-―\-/]", " ", t)
    t = re.sub(r"[^\w%$.,' ]", " ", t)
    t = re.sub(r"(?<!\d)[.,]|[.,](?!\d)", " ", t)
    return " ".join(t.split())


def quantities(text: str) -> set[float]:
    """Numeric values mentioned, with magnitudes applied.

    >>> sorted(quantities("$10,000,000 or 10 million or 14.3 billion"))
    [10000000.0, 14300000000.0]
    """
    t = normalize(text)
    values = set()
    for m in _QUANTITY.finditer(t):
        value = float(m.group(1).replace(",", ""))
        if m.group(2):
            value *= MAGNITUDES[m.group(2)]
        values.add(round(value, 6))
    for word, value in NUMBER_WORDS.items():
        if re.search(rf"\b{word}\b", t):
            values.add(float(value))
    return values


def matches(answer: str, alternative: str) -> bool:
    """An accepted answer string is in the answer: numbers compare by value (with units and
    magnitudes), words by normalised whole-word match.

    >>> matches("Cohere retained 64% [1].", "64 percent")
    True
    >>> matches("They offered $10,000,000 a year.", "$10 million")
    True
    >>> matches("It was 640 people.", "64")
    False
    >>> matches("Philippines. [1]", "The Philippines")  # articles do not count (SQuAD's normalisation)
    True
    """
    alt_q = quantities(alternative)
    if alt_q and re.search(r"\d", alternative):
        return alt_q <= quantities(answer)
    return _contains(_ARTICLES.sub(" ", _canon(answer)), _ARTICLES.sub(" ", _canon(alternative)).strip())


_ARTICLES = re.compile(r"\b(?:a|an|the)\b\s*")


def _contains(haystack: str, needle: str) -> bool:
    if not needle:
        return False
    return re.search(rf"(?<!\w){re.escape(needle)}(?!\w)", haystack) is not None
