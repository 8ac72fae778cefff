"""How deep to rerank, and whether to keep some of the fused order: chosen on a development set of
distractors, then reported on the distractor set (issue 20).

    python -m benchmarks.rerank_fusion --data ../shared/data [--report]

The development set is made like tests/golden/distractor/ (one paragraph a file; questions whose
answer is in their own paragraph only) from text the distractor set does not hold: the reader's 24
SQuAD 1.1 validation articles and the Amazon products the reranker held out for its own validation
(rag/training/train_reranker.py, every 10th product it may train on). It is built under the cache
folder. For every question the fused ranking (dense + BM25, years, copies collapsed) is taken once
to depth 30 and the shipped int8 reranker scores those 30 passages once; the variants are then
computed from those numbers by rag/index/retrieval.py's own `rerank_order`:

- depth d: the reranker orders the first d fused passages, the rest keep the fused order;
- weight w: the first d are ordered by 1/(60 + reranker rank) + w/(60 + fused rank) (w = 0 is
  today's order: the reranker's alone).

hit@1, hit@5 and MRR of the question's own passage per variant and subtype. `--report` also
runs the variants on the distractor set (answerable questions), to report, not to choose.
Writes benchmarks/results/<date>-<commit>-rerank-fusion.json.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

from benchmarks.make_squad_sets import doc_id
from benchmarks.results_file import result_path
from rag.config import Settings
from rag.eval.golden import load_golden, settings_for
from rag.index.retrieval import rerank_order
from rag.pipeline import Pipeline
from rag.training.data import load_squad
from rag.training.train_reranker import AMAZON, held_out_products

ROOT = Path(__file__).resolve().parents[1]
DEPTHS = (10, 20, 30)
WEIGHTS = (0.0, 0.25, 0.5, 1.0)


def build_dev(data: Path, out: Path, seed: int = 31) -> Path:
    """The development corpus and questions (out/corpus/, out/dev.jsonl); returns the jsonl."""
    rng = random.Random(seed)
    val_titles = set(json.loads((ROOT / "rag/models/reader/record.json").read_text())["data"]["val_titles"])
    wiki = sorted((a for a in load_squad(data / "qa/squad1.1-train/squad1.1-train.json.gz") if a["title"] in val_titles), key=lambda a: a["title"])
    held = held_out_products(data)
    products = sorted((a for a in load_squad(data / AMAZON) if a["title"] not in held), key=lambda a: a["title"])
    products = [{**a, "title": "Product reviews " + a["title"].rsplit("_", 1)[-1], "reviews": True} for i, a in enumerate(products) if i % 10 == 5]
    if out.exists():
        shutil.rmtree(out)
    (out / "corpus").mkdir(parents=True)
    passages = []
    for art in wiki + products:
        for i, para in enumerate(art["paragraphs"]):
            fid = f"{doc_id(art['title'])}_{i + 1:02d}"
            text = f"{art['title'].replace('_', ' ')}\n\n{para['context'].strip()}\n"
            (out / "corpus" / f"{fid}.txt").write_text(text, encoding="utf-8")
            passages.append((fid, art, para))
    lowered = {fid: para["context"].lower() for fid, _, para in passages}
    rows = []
    for art in wiki + products:
        pool = []
        for fid, a, para in passages:
            if a is not art:
                continue
            for qa in para["qas"]:
                answers = sorted({x["text"] for x in qa["answers"]})
                if len(answers[0]) >= 2 and not any(x.lower() in t for other, t in lowered.items() if other != fid for x in answers):
                    pool.append({"id": qa["id"], "type": "distractor", "subtype": "reviews" if art.get("reviews") else "wiki", "question": qa["question"].strip(),
                                 "answers": [answers], "doc_ids": [fid], "evidence": answers[:1]})
        rows += rng.sample(pool, min(4 if art.get("reviews") else 8, len(pool)))
    path = out / "dev.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{out}: {len(passages)} passages, {len(rows)} questions", flush=True)
    return path


def measure(path: Path, settings: Settings) -> dict:
    """Per-question fused order (depth 30) and reranker scores, then every variant's ranks."""
    settings = settings_for(path, settings.model_copy(update={"use_llm": False}))
    pipeline = Pipeline(settings)
    pipeline.warm_up()
    fused_only = pipeline.retriever.__class__(pipeline.index, pipeline.embedder, settings, rerank=None)
    reranker = pipeline.reranker
    items = [i for i in load_golden(path) if i.answerable]
    ranks: dict[str, dict[str, list]] = {}
    for item in items:
        hits = fused_only.search(item.question, max(DEPTHS))
        scores = reranker.scores(item.question, [h.chunk.text for h in hits])
        for d in DEPTHS:
            for w in WEIGHTS:
                head = rerank_order(list(range(min(d, len(hits)))), dict(enumerate(scores)), w, settings.rrf_k)
                order = head + list(range(len(head), len(hits)))
                docs = list(dict.fromkeys(hits[n].chunk.doc_id for n in order))
                gold = set(item.doc_ids)
                r = next((k + 1 for k, doc in enumerate(docs) if doc in gold), None)
                for group in ["all"] + ([item.subtype] if item.subtype else []):
                    ranks.setdefault(f"depth {d}, w {w}", {}).setdefault(group, []).append(r)
    out = {}
    for name, groups in ranks.items():
        out[name] = {}
        for g, r in groups.items():
            n = len(r)
            out[name][g] = {"n": n, "hit@1": round(sum(x == 1 for x in r) / n, 4), "hit@5": round(sum(x is not None and x <= 5 for x in r) / n, 4),
                            "mrr": round(sum(1 / x for x in r if x) / n, 4)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--report", action="store_true", help="also run the variants on the distractor set")
    args = ap.parse_args()
    settings = Settings()
    dev = build_dev(args.data, settings.cache_dir / "dev-distractor")
    result = {"dev": measure(dev, settings)}
    for name, row in result["dev"].items():
        print("dev", name, row, flush=True)
    if args.report:
        result["distractor"] = measure(ROOT / "tests/golden/distractor/distractor.jsonl", settings)
        for name, row in result["distractor"].items():
            print("distractor", name, row, flush=True)
    path = result_path("rerank-fusion.json")
    path.write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(path)


if __name__ == "__main__":
    main()
