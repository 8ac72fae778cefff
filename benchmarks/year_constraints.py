"""Do the question's years help find the right passage? Every question that names a year.

    python -m benchmarks.year_constraints --data ../shared/data

The distractor set asks only 7 questions with a year, too few to see anything. Here every question
of the distractor corpus's own articles (SQuADShifts new Wikipedia, the 32 no model or threshold
saw) that names a year (1500-2099) and whose answer stands in exactly one passage of the corpus is
asked, retrieval only (no reader, no LLM): hit@1, hit@5 and MRR of the own passage, with and
without the constraints, with and without the trained reranker. Nothing is tuned here: the
constraint's weight is fixed at one rank-1 vote of the fusion.
Writes benchmarks/results/<date>-<commit>-year-constraints.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.make_distractor_set import OUT, policy_titles
from benchmarks.make_squad_sets import doc_id
from benchmarks.results_file import result_path
from rag.config import Settings
from rag.eval.golden import settings_for
from rag.index.retrieval import question_years
from rag.pipeline import Pipeline
from rag.training.data import load_squad

VARIANTS = {
    "fusion only": {"reranker": "none", "year_constraints": False},
    "fusion + years": {"reranker": "none", "year_constraints": True},
    "trained reranker": {"year_constraints": False},
    "trained reranker + years (default)": {"year_constraints": True},
}


def questions(data: Path) -> list[tuple[str, str]]:
    """(question, own passage id) for every answerable year question of the corpus's articles."""
    corpus = OUT / "corpus"
    texts = {p.stem: p.read_text(encoding="utf-8").lower() for p in corpus.glob("*.txt")}
    used = policy_titles(data)
    out = []
    for art in load_squad(data / "qa" / "squadshifts" / "squadshifts-new_wiki.json.gz"):
        if art["title"] in used:
            continue
        for i, para in enumerate(art["paragraphs"]):
            fid = f"{doc_id(art['title'])}_{i + 1:02d}"
            if fid not in texts:
                continue  # left out as the absent questions' passage
            for qa in para["qas"]:
                answers = {a["text"].lower() for a in qa["answers"] if len(a["text"]) >= 2}
                if not answers or not question_years(qa["question"]):
                    continue
                holders = {f for f, t in texts.items() if any(a in t for a in answers)}
                if holders == {fid}:
                    out.append((qa["question"].strip(), fid))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    args = p.parse_args()
    asked = questions(args.data)
    shared: dict = {}
    result: dict = {"questions": len(asked), "variants": {}}
    for name, change in VARIANTS.items():
        settings = settings_for(OUT / "distractor.jsonl", Settings(use_llm=False)).model_copy(update=change)
        pipeline = Pipeline(settings, **shared)
        shared.update(embedder=pipeline.embedder)
        if settings.reranker == "trained":
            shared["reranker"] = pipeline.reranker
        ranks = []
        for question, fid in asked:
            docs = list(dict.fromkeys(h.chunk.doc_id for h in pipeline.retriever.search(question, 10)))
            ranks.append(docs.index(fid) + 1 if fid in docs else None)
        n = len(ranks)
        result["variants"][name] = {
            "hit@1": round(sum(r == 1 for r in ranks) / n, 4), "hit@5": round(sum(r is not None and r <= 5 for r in ranks) / n, 4),
            "mrr": round(sum(1 / r for r in ranks if r) / n, 4),
        }
        print(name, result["variants"][name], flush=True)
    out = result_path("year-constraints.json")
    out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(out)


if __name__ == "__main__":
    main()
