"""Time the question embedding right after a generation (and once more), and seconds per token.

    python -m benchmarks.omp_stall                       # this checkout's default (idle threads sleep)
    OMP_WAIT_POLICY= python -m benchmarks.omp_stall      # libgomp's default: idle threads spin
"""

from __future__ import annotations

import statistics
import time

from rag.eval.bench import QUESTIONS
from rag.pipeline import Pipeline
from rag.answering.prompt import build_messages


def main() -> None:
    p = Pipeline()  # sets OMP_WAIT_POLICY=PASSIVE unless the environment says otherwise
    p.warm_up()
    emb, tok = [], []
    for q in QUESTIONS[:5]:
        hits = p.retriever.search(q, 4)
        gen = p.generator.generate(build_messages(q, p.retriever.evidence(q, hits, 3)), 24)
        tok.append(gen.total_s / max(gen.new_tokens, 1))
        t = time.perf_counter()
        p.embedder.encode([q + "x"])
        a = time.perf_counter() - t
        t = time.perf_counter()
        p.embedder.encode([q + "y"])
        b = time.perf_counter() - t
        emb.append((round(a * 1000), round(b * 1000)))
    print("embed right after generation, then again (ms):", emb, "s/token median", round(statistics.median(tok), 3))


if __name__ == "__main__":
    main()
