"""One admission limit for the chat UI and the /v1 API together, and the load they report.

Every question served takes a place (`Admission.enter()`) for as long as it is answered. With
`limit` places taken, the next gets `Busy` at once, saying how long to wait (the recent answer
time), instead of queueing without bound; the API answers it 503 with `Retry-After`, the UI
with a notice. While more than `degrade_after` questions are in flight, `crowded()` is true and
answers skip the LLM (a fact is the reader's span, anything else the passages quoted), so a deep
queue drains at the reader's speed.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Busy(Exception):
    """No place is free: `retry_after` whole seconds is when one is likely to be."""

    def __init__(self, in_flight: int, retry_after: int) -> None:
        super().__init__(f"The server is busy answering {in_flight} questions; try again in {retry_after} s.")
        self.in_flight = in_flight
        self.retry_after = retry_after


class Admission:
    """Places for questions being answered, shared by every route of one server.

    Args:
        limit: questions answered at once; the next one is turned away (`Busy`).
        degrade_after: above this many in flight the server is crowded; None = never.
    """

    def __init__(self, limit: int, degrade_after: int | None = None) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1.")
        self.limit = limit
        self.degrade_after = degrade_after
        self._lock = threading.Lock()
        self._in_flight = 0
        self._recent_s = 1.0  # moving average of how long an admitted question took
        self.turned_away = 0

    @classmethod
    def from_settings(cls, settings) -> "Admission":
        return cls(settings.max_in_flight, settings.degrade_after)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def crowded(self) -> bool:
        """More questions in flight than `degrade_after`."""
        return self.degrade_after is not None and self._in_flight > self.degrade_after

    def quick_reason(self) -> str:
        """Why answers skip the LLM now ("N questions in flight (more than M)"), or "" when not crowded."""
        n = self._in_flight
        return f"{n} questions in flight (more than {self.degrade_after})" if self.crowded() else ""

    def retry_after(self) -> int:
        """Whole seconds until a place is likely free: the recent answer time, 1-60."""
        return max(1, min(60, math.ceil(self._recent_s)))

    @contextmanager
    def enter(self) -> Iterator[None]:
        """Hold a place while the block runs.

        Raises:
            Busy: all `limit` places are taken.
        """
        with self._lock:
            if self._in_flight >= self.limit:
                self.turned_away += 1
                raise Busy(self._in_flight, self.retry_after())
            self._in_flight += 1
        started = time.perf_counter()
        try:
            yield
        finally:
            took = time.perf_counter() - started
            with self._lock:
                self._in_flight -= 1
                self._recent_s = 0.8 * self._recent_s + 0.2 * took
