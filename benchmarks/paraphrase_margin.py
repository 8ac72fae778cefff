"""Does a source clause, a lead-in or lower case move the reader's no-answer margin? (issue 19's hypothesis)

    python -m benchmarks.paraphrase_margin [--sets tests/golden/golden.jsonl tests/golden/squad/squad.jsonl]

The hypothesis: the reader learnt from rule negatives that a question term missing near the span
means "no answer", so "... in the report?" raises the margin although the fact is unchanged. For
every answerable question of each set, the reader reads the same retrieved chunks (retrieved with
the canonical question, so retrieval is held fixed) once per wording; printed and written as a
result file: the median margin change per wording, how often the best span changes, and how often
the margin crosses the old hand-set threshold (reader_no_answer = 4).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from benchmarks.results_file import result_path
from rag.config import Settings
from rag.eval.golden import VARIANTS, load_golden, settings_for
from rag.pipeline import Pipeline


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", nargs="+", type=Path, default=[Path("tests/golden/golden.jsonl"), Path("tests/golden/squad/squad.jsonl")])
    args = p.parse_args()
    out: dict[str, dict] = {}
    shared: dict = {}
    for golden in args.sets:
        pipeline = Pipeline(settings_for(golden, Settings(use_llm=False)), **shared)
        shared = {"embedder": pipeline.embedder, "reader": pipeline.reader}
        reader, retriever = pipeline.reader, pipeline.retriever
        rows = []
        for item in load_golden(golden):
            if not item.answerable:
                continue
            hits = retriever.candidates(item.question, pipeline.settings.top_k)[: pipeline.settings.reader_passages]
            passages = [h.chunk.text for h in hits]
            base = reader.read(item.question, passages)
            row = {"id": item.id, "margin": base.no_answer}
            for kind, make in VARIANTS.items():
                r = reader.read(make(item.question), passages)
                row[kind] = {"delta": r.no_answer - base.no_answer, "same_span": bool(r.best and base.best and r.best.text == base.best.text),
                             "crosses": base.no_answer < 4.0 <= r.no_answer}
            rows.append(row)
        summary = {"questions": len(rows)}
        for kind in VARIANTS:
            summary[kind] = {
                "median_margin_change": round(statistics.median(r[kind]["delta"] for r in rows), 3),
                "mean_margin_change": round(statistics.mean(r[kind]["delta"] for r in rows), 3),
                "same_best_span": round(sum(r[kind]["same_span"] for r in rows) / len(rows), 3),
                "crosses_old_threshold": round(sum(r[kind]["crosses"] for r in rows) / len(rows), 3),
            }
        out[golden.stem] = summary
        print(golden.stem, json.dumps(summary, indent=1))
    path = result_path("paraphrase-margin.json")
    path.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
