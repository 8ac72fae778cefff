"""Scale with real text and real vectors (issue 21): every article of SQuAD 1.1 train, indexed by
the shipped embedder, then questions of those articles answered.

The scale table's other rows (`scale.py`) use generated text and random vectors, because the
torch embedder ran ~70 texts/s; this row is the real thing at the embedder's own speed:
- the corpus: one text file per SQuAD 1.1 train article (442 articles, paragraphs joined by blank
  lines), from ../shared/data (CC BY-SA 4.0);
- build: `rag`'s own index build (conversion, chunking, embedding every chunk and sentence, BM25,
  FAISS, the manifest), timed whole, with the chunk and sentence counts and texts/s;
- retrieval + evidence p50/p95 over `--questions` real questions of those articles (each new to
  the query cache), and hit@5 of the question's own article;
- answer p50 with the default settings (reader, reranker, policy, LLM) over `--answers` of them;
- the process's peak RSS.

    python -m benchmarks.scale_real [--articles 442] [--questions 200] [--answers 20] [--backend onnx-int8]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.results_file import cpu_model, result_path
from rag.config import Settings
from rag.index.corpus import load_corpus
from rag.index.embedding import Embedder
from rag.index.manifest import ensure_index
from rag.pipeline import Pipeline
from rag.training.data import load_squad

SQUAD = Path(__file__).resolve().parents[2] / "shared" / "data" / "qa" / "squad1.1-train" / "squad1.1-train.json.gz"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--articles", type=int, default=442)
    ap.add_argument("--questions", type=int, default=200)
    ap.add_argument("--answers", type=int, default=20)
    ap.add_argument("--backend", default=None, help="embedding_backend (default: the shipped default)")
    ap.add_argument("--squad", type=Path, default=SQUAD)
    args = ap.parse_args()
    articles = load_squad(args.squad)[: args.articles]
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        asked: list[tuple[str, str]] = []
        for n, art in enumerate(articles):
            name = f"{n:03d}"
            text = art["title"].replace("_", " ") + "\n\n" + "\n\n".join(p["context"] for p in art["paragraphs"])
            (corpus / f"{name}.txt").write_text(text, encoding="utf-8")
            asked += [(qa["question"].strip(), name) for p in art["paragraphs"] for qa in p["qas"]]
        random.Random(0).shuffle(asked)
        extra = {"embedding_backend": args.backend} if args.backend else {}
        s = Settings(corpus_dir=corpus, index_dir=Path(tmp) / "index", cache_dir=Settings().cache_dir, **extra)
        embedder = Embedder.from_settings(s)
        embedder.warm_up()
        t = time.perf_counter()
        index = ensure_index(load_corpus(corpus, s.max_file_bytes), embedder, s, progress=True)
        build_s = time.perf_counter() - t
        chunks, sentences = len(index.chunks), len(index.sentences)
        p = Pipeline(s, index=index, embedder=embedder)
        p.warm_up()
        seconds, found = [], 0
        for question, doc in asked[: args.questions]:
            t = time.perf_counter()
            hits = p.retriever.candidates(question, s.top_k)
            p.retriever.evidence(question, hits, s.evidence_k)
            seconds.append(time.perf_counter() - t)
            found += any(h.chunk.doc_id.startswith(doc) for h in p.retriever.search(question, 5))
        answer_s = []
        for question, _ in asked[args.questions : args.questions + args.answers]:
            t = time.perf_counter()
            p.answer(question)
            answer_s.append(time.perf_counter() - t)
        ordered = sorted(seconds)
        row = {
            "articles": len(articles),
            "chunks": chunks,
            "sentences": sentences,
            "embedding": str(embedder.identity()),
            "build_s": round(build_s, 1),
            "texts_per_s": round((chunks + sentences) / build_s, 1),
            "retrieval_evidence_p50_ms": round(1000 * statistics.median(seconds), 1),
            "retrieval_evidence_p95_ms": round(1000 * ordered[int(0.95 * (len(ordered) - 1))], 1),
            "article_hit@5": round(found / len(seconds), 3),
            "answer_p50_s": round(statistics.median(answer_s), 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        }
    print(json.dumps(row))
    out = result_path("scale-real.json")
    out.write_text(json.dumps({"cpu": cpu_model(), "questions": args.questions, "answers": args.answers, **row}, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
