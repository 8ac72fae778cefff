"""How much faster can the embedder run on this CPU, and with which vectors? (issue 21, part 2)

Speed: real texts (SQuAD 1.1 train paragraphs cut to ~600 characters, and the seed corpus's
chunks) are embedded by today's `Embedder.encode` (torch fp32, batch 32) and by every option:
other batch sizes, torch dynamic int8, and an ONNX export run by onnxruntime (fp32 and int8,
with and without onnxruntime's transformer fusions). All options run in one process, one after
another in each round (the order rotated per round), torch and onnxruntime on 2 threads; each is
reported as texts/s and as its ratio to today's encode of the same round (median over rounds),
so a shared machine's load hits them alike. Every option's vectors are compared with today's,
vector by vector (min and mean cosine).

Quality (`--quality`): hit@1, hit@5 and MRR of retrieval on both golden sets (the document of the
answer among the first 10 chunks' documents, as `rag eval` counts it; answerable questions), each
set with its own index built by the backend in a temporary folder and the questions embedded by
the same backend; with the shipped retriever (BM25 + dense fused, reranked) and with dense
vectors alone (where a change in the vectors shows undiluted).

    python -m benchmarks.fast_embedding [--rounds 3] [--texts 600]
    python -m benchmarks.fast_embedding --ab OPTION [OPTION ...] [--rounds 5] [--texts 300]
    python -m benchmarks.fast_embedding --quality torch onnx onnx-int8 [--sets FILE ...] [--name NAME]

`--ab` times only the named options, each right after today's encode (A B A C ...), and reports
each pair's ratio: the tighter check of the best ones.

Writes benchmarks/results/<date>-<commit>-fast-embedding.json, -fast-embedding-paired.json with
--ab, or with --quality <name>.json.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.results_file import cpu_model, result_path
from rag.config import Settings
from rag.env import apply_env_defaults

SQUAD = Path("/work/shared/data/qa/squad1.1-train/squad1.1-train.json.gz")
THREADS = 2


def cut(text: str, limit: int = 600) -> str:
    """`text` cut at the last space before `limit` characters."""
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0]


def real_texts(n: int, settings: Settings, count_tokens) -> tuple[list[str], dict[str, int]]:
    """The seed corpus's chunks, then SQuAD paragraphs (two per article, articles in order) up to `n`."""
    from rag.index.chunking import chunk_document
    from rag.index.corpus import load_corpus

    chunks = [c.text for d in load_corpus(settings.corpus_dir).documents for c in chunk_document(d.doc_id, d.text, settings.chunk_size, settings.chunk_overlap, count_tokens)[0]]
    data = json.loads(gzip.open(SQUAD).read())["data"]
    paragraphs = [cut(p["context"]) for article in data for p in article["paragraphs"][:2]]
    return chunks + paragraphs[: max(0, n - len(chunks))], {"seed_corpus_chunks": len(chunks), "squad_paragraphs": max(0, n - len(chunks))}


def options(workdir: Path, settings: Settings):
    """name -> (what it is, encode(texts) -> unit rows). The first is today's."""
    import torch

    from rag.index.embedding import Embedder
    from rag.index.embedding_onnx import BATCH, OnnxSentenceModel, Recipe, export, max_seq_length, token_batches

    torch.set_num_threads(THREADS)
    today = Embedder.from_settings(settings)
    st = today.model

    def st_encode(model, batch):
        return lambda texts: np.asarray(model.encode(texts, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True), dtype=np.float32)

    def torch_token_sorted(texts, batch=BATCH):
        out = np.zeros((len(texts), st.get_sentence_embedding_dimension()), dtype=np.float32)
        with torch.inference_mode():
            for part, feed in token_batches(st.tokenizer, texts, max_seq_length(settings.embedding_path), batch):
                out[part] = st({k: torch.from_numpy(v) for k, v in feed.items()})["sentence_embedding"].numpy()
        return out

    found = {"torch fp32 b32 (today)": ("Embedder.encode as shipped", today.encode)}
    for batch in (8, 16, 64, 128):
        found[f"torch fp32 b{batch}"] = (f"sentence-transformers encode, batch {batch}", st_encode(st, batch))
    found[f"torch fp32 b{BATCH}, token-sorted"] = ("torch with the ONNX path's batching: one tokenizer call, sorted by tokens, padded per batch", torch_token_sorted)
    int8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(st), {torch.nn.Linear}, dtype=torch.qint8)
    found["torch int8 b32"] = ("torch.ao.quantization.quantize_dynamic on nn.Linear (per tensor)", st_encode(int8, 32))
    per_channel = torch.ao.quantization.quantize_dynamic(copy.deepcopy(st), {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig})
    found["torch int8 per-channel b32"] = ("the same with per_channel_dynamic_qconfig", st_encode(per_channel, 32))

    chosen = Recipe(optimize=True, quantize=True, quantize_attention=True)
    recipes = {  # all at the ONNX path's batch (BATCH) unless named
        "onnx fp32, no fusions": (Recipe(optimize=False), False, "torch.onnx.export, onnxruntime basic graph optimisations only"),
        "onnx fp32, runtime fusions": (Recipe(optimize=False), True, "the same export, onnxruntime's default (all) graph optimisations at load"),
        "onnx fp32 + BERT optimiser": (Recipe(optimize=True), True, "onnxruntime.transformers optimize_model (Attention, SkipLayerNorm, BiasGelu fused)"),
        "onnx int8 per-tensor, no fusions": (Recipe(optimize=False, quantize=True, per_channel=False), False, "onnxruntime quantize_dynamic, per-tensor scales, MatMul, on the plain export"),
        "onnx int8 per-tensor + BERT optimiser": (Recipe(optimize=True, quantize=True, per_channel=False), True, "fused, then quantize_dynamic per tensor (MatMul)"),
        "onnx int8 per-channel, no fusions": (Recipe(optimize=False, quantize=True), False, "quantize_dynamic per channel on the plain export"),
        "onnx int8 per-channel, runtime fusions": (Recipe(optimize=False, quantize=True), True, "the same, onnxruntime's graph optimisations at load"),
        "onnx int8 per-channel + BERT optimiser": (Recipe(optimize=True, quantize=True), True, "fused, then quantize_dynamic per channel (MatMul; the attention's Q/K/V stay fp32)"),
        "onnx int8 per-channel + BERT optimiser + QAttention": (chosen, True, "the same with the fused attention quantised too (QAttention)"),
    }
    files: dict[Recipe, Path] = {}
    sessions = {}
    for name, (recipe, fusions, what) in recipes.items():
        if recipe not in files:
            folder = workdir / f"r{len(files)}"
            folder.mkdir()
            export(settings.embedding_path, folder / "model.onnx", recipe)
            files[recipe] = folder / "model.onnx"
        sessions[name] = OnnxSentenceModel(files[recipe], settings.embedding_path, THREADS, runtime_fusions=fusions)
        found[name] = (what + f", batch {BATCH}", sessions[name].encode)
    fp32 = sessions["onnx fp32 + BERT optimiser"]
    found["onnx fp32 + BERT optimiser b32"] = ("batch 32", lambda texts: fp32.encode(texts, batch_size=32))
    best = sessions["onnx int8 per-channel + BERT optimiser + QAttention"]
    for batch in (1, 16, 32):
        found[f"onnx int8 per-channel + BERT optimiser + QAttention b{batch}"] = (f"batch {batch}", lambda texts, b=batch: best.encode(texts, batch_size=b))
    return found


def paired(args) -> dict:
    """Today's encode right before each named option, round after round (A B A C ... A B A C ...):
    each option's ratio is today's time over its own in the pair, so load that changes within a
    round (other jobs share these cores) moves both sides of a pair alike."""
    apply_env_defaults()
    settings = Settings(embedding_backend="torch")  # today's encode is torch's, whatever the default
    from rag.index.embedding import Embedder

    texts, made_of = real_texts(args.texts, settings, Embedder.from_settings(settings).count_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        found = options(Path(tmp), settings)
        today = next(iter(found))
        unknown = [n for n in args.ab if n not in found]
        if unknown:
            raise SystemExit(f"no option named {unknown}; options: {list(found)}")
        for name in [today, *args.ab]:
            found[name][1](texts)  # warm up
        pairs: dict[str, list[tuple[float, float]]] = {n: [] for n in args.ab}
        load = [round(os.getloadavg()[0], 2)]
        for r in range(args.rounds):
            for name in args.ab:
                times = []
                for which in (today, name):
                    started = time.perf_counter()
                    found[which][1](texts)
                    times.append(time.perf_counter() - started)
                pairs[name].append((times[0], times[1]))
            load.append(round(os.getloadavg()[0], 2))
            print(f"round {r + 1}: " + ", ".join(f"{n} {a / b:.2f}x" for n, ((a, b), *_) in ((n, pairs[n][-1:]) for n in args.ab)) + f", load {load[-1]}", flush=True)
    rows = {}
    for name, got in pairs.items():
        ratios = [a / b for a, b in got]
        rows[name] = {
            "what": found[name][0], "ratio_vs_today": round(statistics.median(ratios), 2), "ratio_per_pair": [round(x, 2) for x in ratios],
            "texts_per_s": round(len(texts) / statistics.median(b for _, b in got), 1),
            "today_texts_per_s_in_its_pairs": round(len(texts) / statistics.median(a for a, _ in got), 1),
        }
        print(f"| {name} | {rows[name]['texts_per_s']} | {rows[name]['ratio_vs_today']} | {rows[name]['ratio_per_pair']} |", flush=True)
    return {"cpu": cpu_model(), "threads": THREADS, "rounds": args.rounds, "load_average_per_round": load, "texts": len(texts),
            "made_of": made_of, "today": today, "pairs": rows}


def speed(args) -> dict:
    apply_env_defaults()
    settings = Settings(embedding_backend="torch")  # today's encode is torch's, whatever the default
    from rag.index.embedding import Embedder

    texts, made_of = real_texts(args.texts, settings, Embedder.from_settings(settings).count_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        found = options(Path(tmp), settings)
        names = list(found)
        today = names[0]
        reference = found[today][1](texts)
        cosines = {}
        for name in names:  # warm each up; its vectors against today's
            vectors = found[name][1](texts)
            cos = np.sum(vectors * reference, axis=1)
            cosines[name] = (float(cos.min()), float(cos.mean()))
            print(f"{name}: cosine min {cos.min():.6f} mean {cos.mean():.6f}", flush=True)
        seconds: dict[str, list[float]] = {n: [] for n in names}
        load = [round(os.getloadavg()[0], 2)]  # 1-minute load average: other jobs share these 2 cores
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                started = time.perf_counter()
                found[name][1](texts)
                seconds[name].append(time.perf_counter() - started)
            load.append(round(os.getloadavg()[0], 2))
            print(f"round {r + 1}: today {len(texts) / seconds[today][-1]:.1f} texts/s, load {load[-1]}", flush=True)
    rows = {}
    for name in names:
        ratios = [t / s for s, t in zip(seconds[name], seconds[today])]
        rows[name] = {
            "what": found[name][0],
            "texts_per_s": round(len(texts) / statistics.median(seconds[name]), 1),
            "ratio_vs_today": round(statistics.median(ratios), 2),
            "ratio_per_round": [round(x, 2) for x in ratios],
            "cosine_min": round(cosines[name][0], 6),
            "cosine_mean": round(cosines[name][1], 6),
        }
        print(f"| {name} | {rows[name]['texts_per_s']} | {rows[name]['ratio_vs_today']} | {rows[name]['cosine_min']:.6f} | {rows[name]['cosine_mean']:.6f} |", flush=True)
    return {"cpu": cpu_model(), "threads": THREADS, "rounds": args.rounds, "load_average_per_round": load, "texts": len(texts), "made_of": made_of,
            "mean_chars": round(sum(map(len, texts)) / len(texts), 1), "options": rows, "sentence_transformers_onnx": ST_ONNX}


ST_ONNX = (
    "SentenceTransformer(path, backend='onnx') needs optimum-onnx; its newest release (0.1.0, with optimum 2.1.0) "
    "requires transformers<4.58, and this project runs transformers 5.x (pip would downgrade transformers, tokenizers "
    "and huggingface_hub). Installed beside transformers 5.25 with --no-deps, the export fails on import: "
    "\"ImportError: cannot import name 'get_parameter_dtype' from 'transformers.modeling_utils'\" "
    "(optimum/exporters/onnx/convert.py). So the export here is torch.onnx.export of the model with sentence-transformers' "
    "mean pooling and normalisation in the graph (rag/index/embedding_onnx.py)."
)


SETS = ("tests/golden/golden.jsonl", "tests/golden/squad/squad.jsonl")


def quality(backends: list[str], sets: list[str]) -> dict:
    """hit@5 and MRR of retrieval on golden sets, index and questions embedded by each backend."""
    from rag.eval.golden import load_golden, settings_for
    from rag.pipeline import Pipeline

    sets = [Settings().root / s for s in sets]
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for golden in sets:
            items = [i for i in load_golden(golden) if i.answerable]
            for backend in backends:
                base = settings_for(golden, Settings(use_llm=False, embedding_backend=backend))
                settings = base.model_copy(update={"index_dir": Path(tmp) / f"{golden.stem}-{backend}"})
                started = time.perf_counter()
                pipeline = Pipeline(settings)
                pipeline.warm_up()
                built = time.perf_counter() - started
                row = {"index_build_and_load_s": round(built, 1), "chunks": len(pipeline.index.chunks), "identity": str(pipeline.embedder.identity())}
                dense = Pipeline(settings.model_copy(update={"hybrid": False, "reranker": "none"}), index=pipeline.index, embedder=pipeline.embedder)
                for name, p in (("shipped", pipeline), ("dense only", dense)):
                    ranks = []
                    for item in items:
                        docs = list(dict.fromkeys(h.chunk.doc_id for h in p.retriever.search(item.question, 10)))
                        ranks.append(next((r for r, d in enumerate(docs, start=1) if d in set(item.doc_ids)), None))
                    n = len(ranks)
                    row[name] = {
                        "questions": n, "hit@1": round(sum(r == 1 for r in ranks) / n, 4),
                        "hit@5": round(sum(r is not None and r <= 5 for r in ranks) / n, 4), "mrr": round(sum(1 / r for r in ranks if r) / n, 4),
                    }
                out.setdefault(golden.stem, {})[backend] = row
                print(golden.stem, backend, row, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--texts", type=int, default=600)
    ap.add_argument("--quality", nargs="*", help="backends whose retrieval to measure (no speed run)")
    ap.add_argument("--sets", nargs="+", default=list(SETS), help="golden sets of --quality")
    ap.add_argument("--name", default="fast-embedding-retrieval", help="result file name of --quality")
    ap.add_argument("--ab", nargs="+", help="only these options, each paired with today's encode right before it")
    args = ap.parse_args()
    if args.ab:
        result = paired(args)
        out = result_path("fast-embedding-paired.json")
    elif args.quality:
        result = {"cpu": cpu_model(), "sets": quality(args.quality, args.sets)}
        out = result_path(f"{args.name}.json")
    else:
        result = speed(args)
        out = result_path("fast-embedding.json")
    out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(out)


if __name__ == "__main__":
    main()
