"""The trained reranker in int8 against fp32 (and none), retrieval only, on the distractor set.

    python -m benchmarks.rerank_precision

Every answerable question of tests/golden/distractor/ is searched (no reader, no LLM): hit@1, hit@5
and MRR of its own passage, and the median time of one search, per variant, all in one process.
The variants alternate question by question, so a busy machine slows them alike. It decides
`Settings.rerank_quantize`. Writes benchmarks/results/<date>-<commit>-rerank-precision.json.
"""

from __future__ import annotations

import json
import statistics
import time

from benchmarks.make_distractor_set import OUT
from benchmarks.results_file import result_path
from rag.config import Settings
from rag.eval.golden import load_golden, settings_for
from rag.pipeline import Pipeline

VARIANTS = {"none": {"reranker": "none"}, "int8 (default)": {"rerank_quantize": True}, "fp32": {"rerank_quantize": False}}


def main() -> None:
    items = [i for i in load_golden(OUT / "distractor.jsonl") if i.answerable]
    pipelines, shared = {}, {}
    for name, change in VARIANTS.items():
        settings = settings_for(OUT / "distractor.jsonl", Settings(use_llm=False)).model_copy(update=change)
        pipelines[name] = Pipeline(settings, **shared)
        pipelines[name].warm_up()
        shared["embedder"] = pipelines[name].embedder
    ranks: dict[str, list] = {n: [] for n in VARIANTS}
    seconds: dict[str, list] = {n: [] for n in VARIANTS}
    for item in items:
        for name, pipeline in pipelines.items():
            t = time.perf_counter()
            hits = pipeline.retriever.search(item.question, 10)
            seconds[name].append(time.perf_counter() - t)
            docs = list(dict.fromkeys(h.chunk.doc_id for h in hits))
            gold = item.doc_ids[0]
            ranks[name].append(docs.index(gold) + 1 if gold in docs else None)
    result = {"questions": len(items), "variants": {}}
    for name, r in ranks.items():
        n = len(r)
        result["variants"][name] = {
            "hit@1": round(sum(x == 1 for x in r) / n, 4), "hit@5": round(sum(x is not None and x <= 5 for x in r) / n, 4),
            "mrr": round(sum(1 / x for x in r if x) / n, 4), "search_p50_s": round(statistics.median(seconds[name]), 4),
        }
        print(name, result["variants"][name], flush=True)
    out = result_path("rerank-precision.json")
    out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(out)


if __name__ == "__main__":
    main()
