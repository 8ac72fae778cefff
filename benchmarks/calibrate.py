"""Refusal calibration: answerability signals for every golden item, without the LLM.

Prints, per signal threshold pair, how many unanswerable items would be refused and how many
answerable ones would be wrongly refused, so the gate's thresholds (Settings.min_dense,
min_coverage, ...; rag/answering/policy.py) are chosen from data.
Usage: python -m benchmarks.calibrate [tests/golden/golden.jsonl]
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

from rag.answering.policy import AnswerPolicy, signals
from rag.eval.golden import load_golden
from rag.pipeline import Pipeline
from rag.types import Signals


def main(path: str = "tests/golden/golden.jsonl") -> None:
    pipeline = Pipeline()
    s = pipeline.settings
    rows: list[tuple[str, str, Signals, str]] = []
    for item in load_golden(Path(path)):
        hits = pipeline.retriever.candidates(item.question, s.top_k)
        ev = pipeline.retriever.evidence(item.question, hits, s.evidence_k)
        sig = signals(item.question, [e.sentence.text for e in ev], max(e.dense for e in ev), pipeline.retriever.coverage(item.question, ev))
        rows.append((item.id, item.type if item.answerable else f"un:{item.subtype}", sig, item.question))
    for rid, kind, sig, q in sorted(rows, key=lambda r: r[2].dense):
        print(f"{rid} {kind:16} dense={sig.dense:.2f} cov={sig.coverage:.2f} num={int(sig.wants_number)}{int(sig.has_number)}  {q[:70]}")
    print("\nmin_dense min_coverage | refused unanswerable | refused answerable")
    n_un = sum(k.startswith("un:") for _, k, _, _ in rows)
    n_an = len(rows) - n_un
    for d, c in itertools.product([0.2, 0.25, 0.3, 0.35, 0.4], [0.3, 0.4, 0.45, 0.5, 0.6, 0.7]):
        gate = AnswerPolicy(s.model_copy(update={"min_dense": d, "min_coverage": c})).gate
        un = sum(bool(gate(sig)) for _, k, sig, _ in rows if k.startswith("un:"))
        an = sum(bool(gate(sig)) for _, k, sig, _ in rows if not k.startswith("un:"))
        print(f"{d:9.2f} {c:12.2f} | {un:3d}/{n_un} | {an:3d}/{n_an}")


if __name__ == "__main__":
    main(*sys.argv[1:])
