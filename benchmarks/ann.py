"""Exact vs approximate FAISS search on random unit vectors: which index FaissStore uses when large.

    python -m benchmarks.ann [--sizes 100000 1000000] [--queries 200] [--out FILE.md]
    python -m benchmarks.ann --sizes --store 300000 1000000   # FaissStore itself, end to end

For each size n it builds, on n random unit vectors of dim 384 (float32, the embedder's size):
  - exact: IndexFlatIP (what FaissStore uses below its ANN threshold);
  - HNSW: IndexHNSWFlat, inner product, M=32, efSearch swept;
  - IVF: IndexIVFFlat, inner product, nlist = 4*sqrt(n), nprobe swept;
and reports build time, single-query latency p50/p95 (one question is one query, so queries are
timed one at a time, as FaissStore runs them), recall@10 against the exact top 10, and memory
(RSS growth while building; the saved index's size).

Random unit vectors (the issue's test) are the hardest case there is for ANN: in 384 dimensions
every vector is at cosine ~0 +- 0.05 from every other, so the "nearest" 10 are barely nearer than
the rest and any index must look at most of the data to find them. Two query sets on them:
  - "random": fresh random unit vectors;
  - "near": database vectors plus noise of norm 0.5, renormalised (cosine ~0.89 to their source),
    like a question whose answer chunk is close; the other 9 neighbours are still random.
Real embeddings are not like that: chunks of one document or topic sit together. So a third,
labelled synthetic set has that structure and nothing else:
  - "clustered": n/100 random topic centres, each vector = centre + a random unit vector,
    renormalised (cosine ~0.5 within a topic, ~0 across); queries are fresh points of random topics.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import psutil

from benchmarks.results_file import commit, cpu_model

REPO = Path(__file__).resolve().parents[1]
DIM = 384
K = 10
NOISE = 0.5
HNSW_M = 32
CLUSTER_SIZE = 100
EF_SEARCH = (16, 32, 64, 128, 256, 512, 1024)
NPROBE = (1, 4, 8, 16, 32, 64, 128, 256, 512)
TARGET_RECALL = 0.98
TARGET_MS = 5.0


def unit(rng: np.random.Generator, n: int, dim: int = DIM, batch: int = 100_000) -> np.ndarray:
    """n random unit vectors, made in batches so 1M needs no float64 copy."""
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, batch):
        block = rng.standard_normal((min(batch, n - start), dim), dtype=np.float32)
        out[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def near(rng: np.random.Generator, data: np.ndarray, n: int) -> np.ndarray:
    rows = data[rng.choice(len(data), n, replace=False)]
    noise = unit(rng, n) * NOISE
    q = rows + noise
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def clustered(rng: np.random.Generator, n: int, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    """n vectors in n/CLUSTER_SIZE topics, and n_queries fresh points of random topics."""
    centres = unit(rng, max(1, n // CLUSTER_SIZE))
    out = []
    for count in (n, n_queries):
        points = np.empty((count, DIM), dtype=np.float32)
        for start in range(0, count, 100_000):
            size = min(100_000, count - start)
            block = centres[rng.integers(len(centres), size=size)] + unit(rng, size)
            points[start : start + size] = block / np.linalg.norm(block, axis=1, keepdims=True)
        out.append(points)
    return out[0], out[1]


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def disk_mb(index: faiss.Index) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "i.faiss")
        faiss.write_index(index, path)
        return os.path.getsize(path) / 2**20


def timed_search(index: faiss.Index, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-K ids of every query, searched one at a time; and each query's latency in ms."""
    ids = np.empty((len(queries), K), dtype=np.int64)
    ms = np.empty(len(queries))
    index.search(queries[:1], K)  # warm caches
    for i in range(len(queries)):
        t = time.perf_counter()
        _, found = index.search(queries[i : i + 1], K)
        ms[i] = (time.perf_counter() - t) * 1000
        ids[i] = found[0]
    return ids, ms


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth)]))


def run_size(n: int, dataset: str, n_queries: int, ef_construction: int, search_threads: int, seed: int, log) -> list[dict]:
    rng = np.random.default_rng(seed)
    t = time.perf_counter()
    if dataset == "random":
        data = unit(rng, n)
        queries = {"random": unit(rng, n_queries), "near": near(rng, data, n_queries)}
    else:
        data, topic = clustered(rng, n, n_queries)
        queries = {"topic": topic}
    log(f"n={n:,} {dataset}: data made in {time.perf_counter() - t:.1f}s")
    rows: list[dict] = []
    build_threads = faiss.omp_get_max_threads()

    def measure(name: str, params: str, index: faiss.Index, build_s: float, mem_mb: float, set_param=None, values=(None,)):
        size = disk_mb(index)
        faiss.omp_set_num_threads(search_threads)
        for value in values:
            if set_param is not None:
                set_param(value)
            for qname, q in queries.items():
                found, ms = timed_search(index, q)
                row = {"n": n, "data": dataset, "queries": qname, "index": name, "params": params.format(value), "build_s": build_s}
                row |= {"recall": recall(found, truth[qname]), "p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95))}
                row |= {"mem_mb": mem_mb, "disk_mb": size}
                rows.append(row)
                log(_fmt(row))
        faiss.omp_set_num_threads(build_threads)

    # exact: also the ground truth (batched search is exact and fast)
    before, t = rss_mb(), time.perf_counter()
    flat = faiss.IndexFlatIP(DIM)
    flat.add(data)
    build_s, mem = time.perf_counter() - t, rss_mb() - before
    truth = {qname: flat.search(q, K)[1] for qname, q in queries.items()}
    measure("exact (FlatIP)", "-", flat, build_s, mem)
    del flat
    gc.collect()

    # HNSW
    before, t = rss_mb(), time.perf_counter()
    hnsw = faiss.IndexHNSWFlat(DIM, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = ef_construction
    hnsw.add(data)
    build_s, mem = time.perf_counter() - t, rss_mb() - before
    log(f"n={n:,} {dataset}: HNSW built in {build_s:.1f}s")

    def set_ef(v):
        hnsw.hnsw.efSearch = v

    measure("HNSW", f"M={HNSW_M} efC={ef_construction} efSearch={{}}", hnsw, build_s, mem, set_ef, EF_SEARCH)
    del hnsw
    gc.collect()

    # IVF
    nlist = int(round(4 * np.sqrt(n)))
    before, t = rss_mb(), time.perf_counter()
    quantizer = faiss.IndexFlatIP(DIM)
    ivf = faiss.IndexIVFFlat(quantizer, DIM, nlist, faiss.METRIC_INNER_PRODUCT)
    train = data[rng.choice(n, min(n, 64 * nlist), replace=False)]
    ivf.train(train)
    ivf.add(data)
    build_s, mem = time.perf_counter() - t, rss_mb() - before
    log(f"n={n:,} {dataset}: IVF built in {build_s:.1f}s")

    def set_nprobe(v):
        ivf.nprobe = v

    measure("IVF", f"nlist={nlist} nprobe={{}}", ivf, build_s, mem, set_nprobe, [p for p in NPROBE if p <= nlist])
    del ivf, quantizer, data
    gc.collect()
    return rows


def store_run(n: int, dataset: str, batch: int, n_queries: int, search_threads: int, seed: int, log) -> dict:
    """FaissStore end to end (its default approximate index) on random or clustered vectors: adds
    in batches (crossing its ANN threshold and retraining as it grows, as an index fed file by
    file would), then one document's worth of adds and deletes, and searches."""
    from rag.store.faiss import FaissStore

    rng = np.random.default_rng(seed)
    if dataset == "clustered":
        data, queries = clustered(rng, n, n_queries)
    else:
        data, queries = unit(rng, n), unit(rng, n_queries)
    store = FaissStore(DIM)
    slowest, t0 = 0.0, time.perf_counter()
    for start in range(0, n, batch):
        t = time.perf_counter()
        store.add(np.arange(start, min(n, start + batch)), data[start : start + batch])
        slowest = max(slowest, time.perf_counter() - t)
    build_s = time.perf_counter() - t0
    doc = unit(rng, 50)  # one 10-page document is ~50 chunks
    t = time.perf_counter()
    store.add(np.arange(n, n + 50), doc)
    add_ms = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    store.delete(np.arange(n, n + 50))
    delete_ms = (time.perf_counter() - t) * 1000
    faiss.omp_set_num_threads(search_threads)
    ms = []
    found = np.empty((n_queries, K), dtype=np.int64)
    for i in range(n_queries):
        t = time.perf_counter()
        found[i] = store.search(queries[i : i + 1], K)[1][0]
        ms.append((time.perf_counter() - t) * 1000)
    truth = np.concatenate([np.argsort(-(queries[i : i + 20] @ data.T), axis=1)[:, :K] for i in range(0, n_queries, 20)])
    row = {
        "n": n, "mode": _mode(store),
        "build_s": build_s, "slowest_add_s": slowest, "add50_ms": add_ms, "delete50_ms": delete_ms,
        "recall": recall(found, truth), "p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
    }
    log(
        f"| {n:,} | {dataset} | {row['mode']} | {batch:,} | {build_s:.1f} | {slowest:.1f} | {add_ms:.1f} | {delete_ms:.1f} | "
        f"{row['recall']:.3f} | {row['p50']:.2f} | {row['p95']:.2f} |"
    )
    return row


STORE_HEADER = (
    "| n | data | FaissStore mode | add batch | build s | slowest add s | add 50 ms | delete 50 ms | recall@10 | p50 ms | p95 ms |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def _mode(store) -> str:
    if not store.approximate:
        return "exact"
    if store.ann == "ivf":
        return f"IVF nlist={store.nlist} nprobe={store.nprobe}"
    return f"PQ{store.dim // 4}x4fs + exact rescoring of {store.candidates:,}"


def _fmt(row: dict) -> str:
    return (
        f"| {row['n']:,} | {row['data']} | {row['queries']} | {row['index']} | {row['params']} | {row['build_s']:.1f} | "
        f"{row['recall']:.3f} | {row['p50']:.2f} | {row['p95']:.2f} | {row['mem_mb']:.0f} | {row['disk_mb']:.0f} |"
    )


HEADER = (
    "| n | data | queries | index | params | build s | recall@10 | p50 ms | p95 ms | RSS growth MB | saved MB |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200, help="queries per query set")
    parser.add_argument("--ef-construction", type=int, default=40, help="HNSW build beam (faiss default 40)")
    parser.add_argument("--data", nargs="+", default=["random", "clustered"], choices=["random", "clustered"])
    parser.add_argument("--threads", type=int, default=0, help="OpenMP threads for building (0: faiss default)")
    parser.add_argument("--search-threads", type=int, default=1, help="OpenMP threads while timing single queries")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--store", type=int, nargs="*", default=[], help="also run FaissStore end to end at these sizes (on each --data)")
    parser.add_argument("--store-batch", type=int, default=10_000, help="rows per add in the --store run")
    parser.add_argument("--out", type=Path, help="markdown file for the table (default: print only)")
    args = parser.parse_args()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)

    def log(line: str) -> None:
        print(line, flush=True)

    header = (
        f"commit {commit(mark_dirty=False)}, {datetime.date.today()}, faiss {faiss.__version__}, {cpu_model()}, {os.cpu_count()} CPUs, "
        f"{faiss.omp_get_max_threads()} OpenMP threads to build, {args.search_threads} to search; dim {DIM}, k={K}, {args.queries} queries per set, "
        f"near-query noise {NOISE}, seed {args.seed}"
    )
    log(header)
    log(HEADER)
    rows = []
    for n in args.sizes:
        for dataset in args.data:
            rows += run_size(n, dataset, args.queries, args.ef_construction, args.search_threads, args.seed, log)
    store_lines = []
    if args.store:
        log(STORE_HEADER)
        for n in args.store:
            for dataset in args.data:
                store_run(n, dataset, args.store_batch, args.queries, args.search_threads, args.seed, lambda line: (store_lines.append(line), log(line)))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        text = f"# ANN benchmark: exact vs HNSW vs IVF\n\n{header}\n\n`python -m benchmarks.ann {' '.join(sys.argv[1:])}`\n"
        if rows:
            text += f"\n{HEADER}\n" + "\n".join(_fmt(r) for r in rows) + "\n"
        if store_lines:
            text += f"\n{STORE_HEADER}\n" + "\n".join(store_lines) + "\n"
        args.out.write_text(text)
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
