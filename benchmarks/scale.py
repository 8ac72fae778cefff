"""Scale: index build, adding one 10-page PDF, retrieval + evidence latency, RSS and disk at 1k-100k chunks.

    python -m benchmarks.scale [--sizes 1000 10000 100000] [--questions 100] [--vectors 1000000]

What is real and what is cheap, per size:
  - text: generated (Zipf-distributed pseudo-words, ~15-word sentences, 20-chunk documents), so
    cost is like real text but no answer is meaningful;
  - chunking, the table, both FAISS stores (FaissStore: exact, IVF past 100k rows), BM25, the
    manifest, saving and the atomic flip: the real code;
  - vectors of the generated corpus: random unit vectors (384 floats, clustered per document),
    because embedding 100k chunks + ~400k sentences with the real model takes hours on 2 cores;
    the real model's embedding rate is measured on a sample and reported, so a real build time
    can be estimated as texts / rate;
  - adding one 10-page PDF: real end to end (PDF conversion, chunking, the real embedding model,
    update_index writing one new segment and a manifest and flipping `current`), on the index
    loaded in this process, as the chat UI does on upload (`base=`), then the new index's lookup
    tables and BM25 lexicon made before the swap; and once more as `rag add` does it, from the
    manifest alone (no segment read), into a fresh copy of the index;
  - removing that document again (its rows leave every search; its small segment is dropped);
  - the biggest update: adding half as many documents again at once (cheap vectors): the update
    itself, then the merge with the big segment that it leaves to `compact_index` (the app runs
    that in the background);
  - retrieval + evidence: the real Retriever (real query embedding, dense top-N, BM25 top-N,
    fusion, chunk -> sentences map, one matrix product), timed per question;
  - the vector part alone at `--vectors` rows: random unit vectors (the hardest case for an
    approximate index), exact search (IndexFlatIP) against FaissStore as shipped, one query at a
    time on one thread, recall@10 against the exact top 10.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from benchmarks.results_file import result_path
from rag.config import Settings
from rag.index.corpus import Corpus, read_document
from rag.index.embedding import Embedder
from rag.index.manifest import Index, compact_index, ensure_index, update_index
from rag.index.retrieval import Retriever
from rag.types import Document

DIM = 384
CHUNKS_PER_DOC = 20


class CheapEmbedder:
    """The real model's identity and token counts, random clustered vectors for the bulk build;
    `real = True` switches encode() to the real model (for the added PDF and the questions)."""

    def __init__(self, real: Embedder) -> None:
        self._real = real
        self.real = False
        self._rng = np.random.default_rng(0)
        self._centre = self._unit(1)[0]
        self.real_seconds = 0.0  # time spent in the real model's encode

    def identity(self):
        return self._real.identity()

    @property
    def dim(self) -> int:
        return DIM

    def warm_up(self) -> None:
        self._real.warm_up()

    def count_tokens(self, text: str) -> int:
        return int(len(text.split()) * 1.3) + 1  # ~ the tokenizer's count on this text, without running it 500k times

    def _unit(self, n: int) -> np.ndarray:
        v = self._rng.standard_normal((n, DIM)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        if self.real:
            t = time.perf_counter()
            out = self._real.encode(texts)
            self.real_seconds += time.perf_counter() - t
            return out
        v = self._unit(len(texts)) + 1.5 * self._centre  # one topic per call (a document or a batch)
        self._centre = self._unit(1)[0]
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def encode_query(self, text: str) -> np.ndarray:
        return self._real.encode_query(text)


def vocabulary(n: int = 5000, seed: int = 1) -> list[str]:
    rng = np.random.default_rng(seed)
    letters = list("abcdefghijklmnoprstuvwy")
    return ["".join(rng.choice(letters, size=int(rng.integers(3, 10)))) for _ in range(n)]


def documents(n_chunks: int, seed: int = 2) -> list[Document]:
    """Generated documents of ~CHUNKS_PER_DOC chunks each (128-token chunks, 32 overlap)."""
    rng = np.random.default_rng(seed)
    vocab = vocabulary()
    weights = 1 / np.arange(1, len(vocab) + 1)
    weights /= weights.sum()
    docs = []
    words_per_doc = CHUNKS_PER_DOC * 72  # ~96 new tokens per chunk at 1.3 tokens per word
    for d in range(max(1, n_chunks // CHUNKS_PER_DOC)):
        words = rng.choice(len(vocab), size=words_per_doc, p=weights)
        sentences = [" ".join(vocab[w] for w in words[i : i + 15]).capitalize() + "." for i in range(0, len(words), 15)]
        text = f"Generated document {d}\n" + " ".join(sentences)
        docs.append(Document(doc_id=f"g{d:06d}", title=f"Generated document {d}", text=text, path=f"/generated/g{d:06d}.txt", sha256=f"{d:064x}"))
    return docs


def ten_page_pdf(path: Path) -> Path:
    from tests.test_ingest import make_pdf

    pages = [[f"Page {p} of the benchmark report.", *(f"Line {i}: station {p}-{i} measured {p * i} millimetres of rain in the wet season." for i in range(30))] for p in range(1, 11)]
    path.write_bytes(make_pdf(pages, title="Benchmark report"))
    return path


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def run_size(n_chunks: int, real: Embedder, questions: int, work: Path) -> dict:
    root = work / f"n{n_chunks}"
    settings = Settings(root=root, corpus_dir=root / "corpus", index_dir=root / "index")
    (root / "corpus").mkdir(parents=True)
    cheap = CheapEmbedder(real)
    docs = documents(n_chunks)
    t = time.perf_counter()
    index = ensure_index(Corpus(documents=docs), cheap, settings)
    build_s = time.perf_counter() - t
    rss_built = psutil.Process().memory_info().rss
    del index
    t = time.perf_counter()
    index = Index.load(settings.index_dir)
    load_s = time.perf_counter() - t
    size = disk_bytes(settings.index_dir)

    retriever = Retriever(index, cheap, settings)
    t = time.perf_counter()
    retriever.warm_up()
    bm25_s = time.perf_counter() - t  # now: combining the segments' saved statistics
    vocab = vocabulary()
    rng = np.random.default_rng(n_chunks)  # questions of their own per size: none is in the query cache
    latencies, embedding = [], []
    for q in range(questions + 5):
        question = "What about " + " ".join(rng.choice(vocab[:2000], size=5)) + "?"
        t = time.perf_counter()
        cheap.encode_query(question)  # the same cost in every size; cached for the calls below
        t_embedded = time.perf_counter()
        hits = retriever.candidates(question, settings.top_k)
        retriever.evidence(question, hits, settings.evidence_k)
        if q >= 5:  # the first few warm the caches
            latencies.append(time.perf_counter() - t)
            embedding.append(t_embedded - t)
    rss = psutil.Process().memory_info().rss

    pdf = ten_page_pdf(work / f"report-{n_chunks}.pdf")
    cheap.real = True
    t = time.perf_counter()
    doc, problems = read_document(pdf, settings.max_file_bytes)
    assert doc is not None, problems
    convert_s = time.perf_counter() - t
    copy = root / "index-copy"  # for the `rag add` way below: the same index, before the add
    shutil.copytree(settings.index_dir, copy, symlinks=True)
    new_index, report = update_index(settings, cheap, add=[doc], base=index)
    t_update = report.seconds
    embed_s = cheap.real_seconds
    t = time.perf_counter()
    Retriever(new_index, cheap, settings).warm_up()  # what Pipeline.use_index does before the swap
    swap_s = time.perf_counter() - t
    assert report.added and len(new_index.chunks) > len(index.chunks)
    added_hits = [h.chunk.doc_id for h in Retriever(new_index, cheap, settings).search("How much rain did station 7-12 measure in the wet season?", 3)]
    assert report.added[0] in added_hits, added_hits  # the new document is searchable at once

    cheap.real_seconds = 0.0
    cli_settings = settings.model_copy(update={"index_dir": copy})
    _, cli_report = update_index(cli_settings, cheap, add=[doc])  # no base: plans from the manifest
    cli_embed_s = cheap.real_seconds

    t = time.perf_counter()
    removed, remove_report = update_index(settings, cheap, remove=report.added, base=new_index)
    Retriever(removed, cheap, settings).warm_up()
    remove_s = time.perf_counter() - t
    assert len(removed.chunks) == len(index.chunks)

    # The biggest update: documents half the index's size at once (cheap vectors). The update
    # writes their segment; the merge with the big one it leaves (over inline_merge_chunks) is
    # compact_index, which the app runs in the background: timed apart.
    cheap.real = False
    half = [d.model_copy(update={"doc_id": f"h{d.doc_id}", "path": f"/generated/h{d.doc_id}.txt", "sha256": "f" + d.sha256[1:],
                                 "text": d.text.replace("Generated document", "Second batch", 1)})
            for d in documents(n_chunks // 2, seed=7)]
    t = time.perf_counter()
    grown, grow_report = update_index(settings, cheap, add=half, base=removed)
    Retriever(grown, cheap, settings).warm_up()
    grow_s = time.perf_counter() - t
    assert grow_report.merge_due and len(grown.segments) == 2, [s.meta.n_chunks for s in grown.segments]
    t = time.perf_counter()
    merged, merge_report = compact_index(settings, base=grown)
    Retriever(merged, cheap, settings).warm_up()
    merge_s = time.perf_counter() - t
    assert merge_report.merged >= 1 and len(merged.segments) == 1, [s.meta.n_chunks for s in merged.segments]
    return {
        "chunks": len(index.chunks),
        "sentences": len(index.sentences),
        "documents": len(index.documents),
        "build_s": round(build_s, 2),
        "build_chunks_per_s": round(len(index.chunks) / build_s, 1),
        "load_s": round(load_s, 2),
        "bm25_build_s": round(bm25_s, 2),
        "retrieval_evidence_p50_ms": round(1000 * float(np.percentile(latencies, 50)), 2),
        "retrieval_evidence_p95_ms": round(1000 * float(np.percentile(latencies, 95)), 2),
        "of_which_query_embedding_p50_ms": round(1000 * float(np.percentile(embedding, 50)), 2),
        "add_pdf_pages": len(doc.pages),
        "add_pdf_chunks": len([c for c in new_index.chunks if c.doc_id == report.added[0]]),
        "add_pdf_convert_s": round(convert_s, 2),
        "add_pdf_update_s": round(t_update, 2),
        "add_pdf_embed_s": round(embed_s, 2),
        "add_pdf_index_s": round(t_update - embed_s, 2),
        "add_pdf_bm25_swap_s": round(swap_s, 2),
        "add_pdf_total_s": round(convert_s + t_update + swap_s, 2),
        "add_pdf_cli_update_s": round(cli_report.seconds, 2),
        "add_pdf_cli_index_s": round(cli_report.seconds - cli_embed_s, 2),
        "remove_pdf_s": round(remove_s, 2),
        "add_half_docs": len(half),
        "add_half_chunks": grown.manifest.n_chunks - len(index.chunks),
        "add_half_s": round(grow_s, 2),
        "merge_after_s": round(merge_s, 2),
        "rss_mb": round(max(rss, rss_built) / 2**20),
        "disk_mb": round(size / 2**20, 1),
    }


def vector_search(n: int, n_queries: int = 200, seed: int = 5) -> dict:
    """Exact search vs FaissStore (approximate past its threshold) on n random unit vectors."""
    import faiss

    from rag.store.faiss import FaissStore

    rng = np.random.default_rng(seed)
    data = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):
        block = rng.standard_normal((min(100_000, n - start), DIM), dtype=np.float32)
        data[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    queries = rng.standard_normal((n_queries, DIM), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact = faiss.IndexFlatIP(DIM)
    exact.add(data)
    _, truth = exact.search(queries, 10)  # all threads: only the ground truth
    store = FaissStore(DIM)
    t = time.perf_counter()
    store.add(np.arange(n, dtype=np.int64), data)
    build_s = time.perf_counter() - t
    del data
    faiss.omp_set_num_threads(1)  # one question is one query
    timings: dict[str, list[float]] = {"exact": [], "store": []}
    found = np.empty((n_queries, 10), dtype=np.int64)
    for i in range(n_queries):
        t = time.perf_counter()
        exact.search(queries[i : i + 1], 10)
        timings["exact"].append(time.perf_counter() - t)
        t = time.perf_counter()
        found[i] = store.search(queries[i : i + 1], 10)[1][0]
        timings["store"].append(time.perf_counter() - t)
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    recall = float(np.mean([len(set(f) & set(g)) / 10 for f, g in zip(found.tolist(), truth.tolist())]))
    ms = {k: (round(1000 * float(np.percentile(v, 50)), 2), round(1000 * float(np.percentile(v, 95)), 2)) for k, v in timings.items()}
    return {
        "vectors": n, "data": "random unit vectors", "store_mode": f"PQ{DIM // 4}x4fs + exact rescoring of {store.candidates}" if store.approximate else "exact",
        "exact_p50_ms": ms["exact"][0], "exact_p95_ms": ms["exact"][1], "store_p50_ms": ms["store"][0], "store_p95_ms": ms["store"][1],
        "store_recall_at_10": round(recall, 3), "store_build_s": round(build_s, 1),
    }


def embedding_rate(real: Embedder, seed: int = 4) -> float:
    """Texts per second of the real model on generated chunk- and sentence-sized texts (a sample)."""
    docs = documents(400, seed)
    texts = [d.text[i : i + 700] for d in docs for i in range(0, 2800, 700)][:128]
    texts += [s + "." for d in docs for s in d.text.split(".")[1:40]][:384]
    real.encode(texts[:8])
    t = time.perf_counter()
    real.encode(texts)
    return len(texts) / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--vectors", type=int, default=1_000_000, help="rows for the vector-only part (0: skip it)")
    args = parser.parse_args(argv)
    real = Embedder.from_settings(Settings())
    real.warm_up()
    rate = embedding_rate(real)
    rows = []
    work = Path(tempfile.mkdtemp(prefix="rag-scale-"))
    try:
        for n in args.sizes:
            row = run_size(n, real, args.questions, work)
            row["real_embedding_build_estimate_s"] = round((row["chunks"] + row["sentences"]) / rate)
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    vectors = vector_search(args.vectors) if args.vectors else None
    if vectors:
        print(json.dumps(vectors), flush=True)
    out = result_path("scale.json")
    out.write_text(json.dumps({"embedding_texts_per_s": round(rate, 1), "cpu_count": os.cpu_count(), "rows": rows, "vector_search": vectors}, indent=1))
    print(f"real model: {rate:.0f} texts/s; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
