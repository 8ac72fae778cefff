"""Retrieval among near-duplicates (issue 20): rerankers, year constraints and the analyser, on the
distractor set and on the sets the product already answers.

    python -m benchmarks.retrieval_ablation [--llm] [--before DIR] [golden.jsonl ...]

Variants, each over every set in one process (the index of each set built once, shared):
- "fusion only": dense + BM25 fused by reciprocal rank, no reranker, no year constraints (only
  exact copies collapse);
- "+ years": the question's years move passages up (named) or down (only other years named);
- "+ reader as reranker": the first `rerank_depth` candidates ordered by the reader's best span
  score minus its no-answer score;
- "+ trained reranker (default)": ordered by the cross-encoder trained here (rag/models/reranker);
- "trained reranker, no years": the same without the constraints;
- "trained reranker, depth 10" / "depth 40": half / twice the candidates read (the latency lever);
- "trained reranker, fp32": without int8 quantisation (the default quantizes).
With --before DIR: DIR holds `rag eval --report` folders of an earlier commit (the analyser
before hyphen joining, no reranker): its rows are read, not re-run, and put first.
Hit@k counts the question's own passage (a file of its own in the distractor set; the gold
document elsewhere). LLM phrasing is off unless --llm (ranking and the answer decision do not
depend on it). Writes benchmarks/results/<date>-<commit>-retrieval-ablation.{md,json}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.results_file import result_path
from rag.config import Settings
from rag.eval.golden import evaluate, load_golden, settings_for, summarize
from rag.pipeline import Pipeline

SETS = ["tests/golden/distractor/distractor.jsonl", "tests/golden/golden.jsonl", "tests/golden/squad/squad.jsonl", "tests/golden/squad_absent/absent.jsonl"]
COLUMNS = [
    ("hit@1", "hit@1"), ("hit@5", "hit@5"), ("mrr", "MRR"), ("answer_accuracy", "answerable right"),
    ("false_refusal_rate", "false refusals"), ("refusal_accuracy", "unanswerable refused"), ("stated_wrong_rate", "stated wrong"),
    ("latency_p50_s", "p50 s"),
]
VARIANTS = {
    "fusion only": {"reranker": "none", "year_constraints": False},
    "+ years": {"reranker": "none"},
    "+ reader as reranker": {"reranker": "reader"},
    "+ trained reranker (default)": {},
    "trained reranker, no years": {"year_constraints": False},
    "trained reranker, depth 10": {"rerank_depth": 10},
    "trained reranker, fp32": {"rerank_quantize": False},
    "trained reranker, depth 40": {"rerank_depth": 40},
}


def table(results: dict[str, dict[str, dict]]) -> str:
    lines = []
    for set_name, by_variant in results.items():
        lines += [f"### {set_name}", "", "| variant | " + " | ".join(c for _, c in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
        for name, scores in by_variant.items():
            lines.append(f"| {name} | " + " | ".join("" if scores.get(k) is None else f"{scores[k]:.3f}" for k, _ in COLUMNS) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sets", nargs="*", default=SETS)
    p.add_argument("--llm", action="store_true", help="with the LLM's phrasing (as users run it)")
    p.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    p.add_argument("--before", type=Path, help="`rag eval --report` folder of an earlier commit (one subfolder per set)")
    args = p.parse_args()
    shared: dict = {}
    results: dict[str, dict[str, dict]] = {}
    for path in map(Path, args.sets):
        items = load_golden(path)
        name_of_set = path.stem
        out = results.setdefault(name_of_set, {})
        if args.before and (args.before / name_of_set / "report.json").is_file():
            before = json.loads((args.before / name_of_set / "report.json").read_text(encoding="utf-8"))
            out["before (analyser v1, fusion only)"] = before["scores"]
        for name, change in VARIANTS.items():
            if args.only and name not in args.only:
                continue
            settings = settings_for(path, Settings(use_llm=args.llm)).model_copy(update=change)
            default_precision = settings.rerank_quantize == Settings().rerank_quantize
            pipeline = Pipeline(settings, **{k: v for k, v in shared.items() if k != "reranker" or default_precision})
            pipeline.warm_up()
            shared.update(embedder=pipeline.embedder, reader=pipeline.reader, **({"generator": pipeline.generator} if args.llm else {}))
            if default_precision:  # the other precision gets its own reranker
                shared["reranker"] = pipeline.reranker
            report = evaluate(items, pipeline, progress=False)
            out[name] = report.scores
            for sub in sorted({r.subtype for r in report.rows if r.type != "unanswerable" and r.subtype}):
                rows = [r for r in report.rows if r.subtype == sub]
                results.setdefault(f"{name_of_set} ({sub} only)", {})[name] = summarize(rows)
            print(f"{path.name:18} {name:32} " + " ".join(f"{c}={report.scores.get(k, float('nan')):.3f}" for k, c in COLUMNS), flush=True)
    md = result_path("retrieval-ablation.md")
    md.write_text(f"# Retrieval ablation ({'LLM on' if args.llm else 'LLM off'})\n\n{table(results)}\n", encoding="utf-8")
    md.with_suffix(".json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(md)


if __name__ == "__main__":
    main()
