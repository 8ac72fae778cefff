"""Sweep evidence-selection knobs with the extractive path (no LLM): which sentences does the
answer come from? Scores answer accuracy and refusals on the golden set for each setting.

Usage: python -m benchmarks.sweep_evidence [tests/golden/golden.jsonl]
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

from rag.config import Settings
from rag.eval.golden import evaluate, load_golden
from rag.pipeline import Pipeline


def main(path: str = "tests/golden/golden.jsonl") -> None:
    items = load_golden(Path(path))
    base = Pipeline(Settings(use_llm=False))
    print("top_k overlap_w rank_bonus hybrid | accuracy refusal false_refusal hit@1")
    for top_k, w, bonus, hybrid in itertools.product([4, 8], [0.3, 0.5, 0.8], [0.0, 0.05, 0.15], [True]):
        settings = Settings(use_llm=False, top_k=top_k, hybrid=hybrid, overlap_weight=w, rank_bonus=bonus)
        p = Pipeline(settings, index=base.index, embedder=base.embedder)
        s = evaluate(items, p, progress=False).scores
        print(f"{top_k:5d} {w:9.2f} {bonus:10.2f} {hybrid!s:6} | {s['answer_accuracy']:.3f} {s['refusal_accuracy']:.3f} {s['false_refusal_rate']:.3f} {s['hit@1']:.3f}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
