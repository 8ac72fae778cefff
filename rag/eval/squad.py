"""The official SQuAD v2 answer scoring: normalisation, exact match and token F1.

Shared by `rag eval` and the reader's training script, so both score alike.
"""

from __future__ import annotations

import re

def normalize_answer(s: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, articles or extra white space.

    >>> normalize_answer("The  64 Percent!")
    '64 percent'
    """
    import string

    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def f1_score(prediction: str, gold: str) -> float:
    """Token F1 as in the official SQuAD v2 script (both empty counts as 1).

    >>> round(f1_score("64 percent", "Cohere 64 percent"), 3)
    0.8
    """
    from collections import Counter

    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not p or not g:
        return float(p == g)
    common = Counter(p) & Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def exact_score(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def best_scores(prediction: str, golds: list[str]) -> tuple[float, float]:
    """(EM, F1) against the best of several gold answers; no gold means "no answer" is right."""
    if not golds:
        return float(prediction == ""), float(prediction == "")
    return max(exact_score(prediction, g) for g in golds), max(f1_score(prediction, g) for g in golds)
