"""Ablation: the golden set scored under variants of the default settings, in one process.

Variants: the default (hybrid retrieval, grounding check, 128-token chunks); dense retrieval
only; no grounding check (the model's answer is kept whenever it has a citation); extractive
only (no LLM); and 64-token chunks (an index built in a temporary folder).
Writes benchmarks/results/<date>-<commit>-ablation.md. Usage: python -m benchmarks.ablation [golden.jsonl]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from benchmarks.results_file import result_path
from rag.config import Settings
from rag.evaluation import evaluate, load_golden
from rag.pipeline import Pipeline

METRICS = ["answer_accuracy", "hit@1", "hit@5", "mrr", "citation_hit", "groundedness", "refusal_accuracy", "false_refusal_rate", "latency_p50_s"]


def main(path: str = "tests/golden/golden.jsonl") -> None:
    items = load_golden(Path(path))
    base = Pipeline()
    base.warm_up()
    tmp = Path(tempfile.mkdtemp(prefix="rag-ablation-"))
    variants = {
        "default (hybrid, grounding check, chunks 128/32)": {},
        "dense retrieval only": {"hybrid": False},
        "no grounding check": {"grounding_check": False},
        "extractive only (no LLM)": {"use_llm": False},
        "chunks 64/16": {"chunk_size": 64, "chunk_overlap": 16, "index_dir": tmp / "index-64"},
        "chunks 256/64": {"chunk_size": 256, "chunk_overlap": 64, "index_dir": tmp / "index-256"},
    }
    lines = ["| variant | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for name, overrides in variants.items():
        settings = Settings(**overrides)
        same_index = "index_dir" not in overrides  # the chunk variants build their own
        p = Pipeline(settings, index=base.index if same_index else None, generator=base.generator, embedder=base.embedder)
        scores = evaluate(items, p, progress=False).scores
        row = f"| {name} | " + " | ".join(f"{scores[m]:.3f}" if m != "latency_p50_s" else f"{scores[m]:.2f} s" for m in METRICS) + " |"
        print(row, flush=True)
        lines.append(row)
    out = result_path("ablation.md")
    out.write_text(f"Golden set: {path} ({len(items)} items). Produced by benchmarks/ablation.py.\n\n" + "\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
