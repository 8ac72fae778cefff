"""Ablation: golden sets scored under variants of the default settings, in one process.

    python -m benchmarks.ablation [--set reader|retrieval] [golden.jsonl ...]

`--set reader` (default): the default pipeline (reader + LLM phrasing); the reader off (the
sentence route alone, the pipeline before the reader); LLM phrasing off (the span as found, or
the quoted sentence); the reader's no-answer threshold at 0 instead of the calibrated 4.
`--set retrieval`: the earlier variants (dense only, no grounding check, no LLM, chunk sizes).
Each golden set is answered from its own corpus/ when it has one (rag.eval.golden.settings_for).
Writes benchmarks/results/<date>-<commit>-ablation[-retrieval].md.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.results_file import result_path
from rag.eval.golden import evaluate, load_golden, settings_for
from rag.pipeline import Pipeline

METRICS = [
    "answer_accuracy", "concise_accuracy", "median_words", "squad_f1", "hasans_f1", "noans_accuracy", "citation_hit",
    "refusal_accuracy", "false_refusal_rate", "latency_p50_s",
]
SETS = ["tests/golden/golden.jsonl", "tests/golden/squad/squad.jsonl"]


def variants(which: str, tmp: Path) -> dict[str, dict]:
    if which == "retrieval":
        return {
            "default": {},
            "dense retrieval only": {"hybrid": False},
            "no grounding check": {"grounding_check": False},
            "extractive only (no LLM)": {"use_llm": False},
            "chunks 64/16": {"chunk_size": 64, "chunk_overlap": 16, "index_dir": tmp / "index-64"},
            "chunks 256/64": {"chunk_size": 256, "chunk_overlap": 64, "index_dir": tmp / "index-256"},
        }
    return {
        "default (reader, LLM phrasing, threshold 4)": {},
        "reader off (sentence route only)": {"use_reader": False},
        "LLM phrasing off (span as found)": {"use_llm": False},
        "reader threshold 0": {"reader_no_answer": 0.0},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sets", nargs="*", default=SETS)
    p.add_argument("--set", dest="which", choices=["reader", "retrieval"], default="reader")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rag-ablation-"))
    lines = []
    shared: dict = {}
    for path in args.sets:
        items = load_golden(Path(path))
        base = Pipeline(settings_for(Path(path)), **shared)
        base.warm_up()
        shared = {"embedder": base.embedder, "generator": base.generator, "reader": base.reader}
        lines += [f"## {path} ({len(items)} items)", "", "| variant | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
        for name, overrides in variants(args.which, tmp).items():
            settings = base.settings.model_copy(update=overrides)
            same_index = "index_dir" not in overrides
            pipe = Pipeline(settings, index=base.index if same_index else None, **shared)
            scores = evaluate(items, pipe, progress=False).scores
            row = f"| {name} | " + " | ".join(f"{scores.get(m, float('nan')):.3f}" if m != "latency_p50_s" else f"{scores[m]:.2f} s" for m in METRICS) + " |"
            print(row, flush=True)
            lines.append(row)
        lines.append("")
    out = result_path("ablation.md" if args.which == "reader" else "ablation-retrieval.md")
    out.write_text("Produced by benchmarks/ablation.py.\n\n" + "\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
