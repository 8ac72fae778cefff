"""Pure span arithmetic of an extractive reader: logits of one window -> best answer span.

Shared by the reader at answer time and by its training script's evaluation, so that both
decide the same way. NumPy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SpanPick:
    """The best span of one window, in characters of that window's passage."""

    score: float
    """start logit + end logit of the span"""
    null: float
    """start logit + end logit of the [CLS] token: the model's "no answer here" score"""
    start: int
    end: int
    runner_up: float = float("-inf")
    """score of the best span in the same window that shares no token with this one (another
    item of a list, another name): close to `score` means the reader could not tell them apart"""


def best_span(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    offsets: list[tuple[int, int] | None],
    max_answer_tokens: int = 30,
) -> SpanPick | None:
    """The highest-scoring span whose tokens all belong to the passage.

    Args:
        start_logits, end_logits: (L,) logits of one window; index 0 is [CLS].
        offsets: per token, its (start, end) characters in the passage, or None for tokens that
            are not passage text (question, special tokens, padding).
        max_answer_tokens: longest span considered.

    Returns:
        The best span, or None when the window holds no passage token.

    >>> s = np.array([5.0, 0.0, 3.0, 0.0]); e = np.array([5.0, 0.0, 0.0, 2.0])
    >>> best_span(s, e, [None, (0, 3), (4, 9), (10, 12)])
    SpanPick(score=5.0, null=10.0, start=4, end=12, runner_up=0.0)
    """
    valid = np.array([o is not None for o in offsets], dtype=bool)
    n = len(offsets)
    if not valid.any():
        return None
    s = np.where(valid, start_logits[:n], -np.inf)
    e = np.where(valid, end_logits[:n], -np.inf)
    scores = s[:, None] + e[None, :]
    i, j = np.indices(scores.shape)
    scores[(j < i) | (j - i >= max_answer_tokens)] = -np.inf
    flat = int(np.argmax(scores))
    a, b = divmod(flat, n)
    if not np.isfinite(scores[a, b]):
        return None
    best = float(scores[a, b])
    scores[: b + 1, a:] = -np.inf  # every span sharing a token with [a, b]: starts <= b and ends >= a
    return SpanPick(
        score=best,
        null=float(start_logits[0] + end_logits[0]),
        start=offsets[a][0],  # type: ignore[index]
        end=offsets[b][1],  # type: ignore[index]
        runner_up=float(scores.max()),
    )
