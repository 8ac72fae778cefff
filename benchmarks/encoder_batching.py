"""Should questions that arrive together be reranked and read in one forward pass? (issue 21)

For 8 golden questions at once this times, interleaved round by round:
- the reranker: each question's 20 fused candidates scored per question (today) against all
  8 x 20 pairs in one padded batch;
- the reader: each question's windows per question against all windows in one batch;
- both per question from 8 threads at once, free and behind one lock, against one thread;
and how far the batched reranker's scores move from the per-question ones (int8 dynamic
quantisation takes its activation scale from the whole batch, so a question's scores would
depend on which others share its batch).

    python -m benchmarks.encoder_batching [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

import torch

from benchmarks.results_file import cpu_model, result_path
from rag.config import Settings
from rag.eval.golden import load_golden
from rag.pipeline import Pipeline


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--questions", type=int, default=8)
    args = ap.parse_args()
    s = Settings(use_llm=False)
    p = Pipeline(s)
    p.warm_up()
    fused = Pipeline(s.model_copy(update={"reranker": "none"}), index=p.index, embedder=p.embedder)
    qs = [c.question for c in load_golden(s.root / "tests/golden/golden.jsonl")][: args.questions]
    rerank_in = [(q, [h.chunk.text for h in fused.retriever.search(q, s.rerank_depth)]) for q in qs]
    read_in = [(q, [h.chunk.text for h in p.retriever.candidates(q, s.top_k)[: s.reader_passages]]) for q in qs]
    rr, rd = p.reranker, p.reader

    def rerank_each():
        return [rr.scores(q, ps) for q, ps in rerank_in]

    def rerank_batched():
        pairs = [(q, x) for q, ps in rerank_in for x in ps]
        enc = rr._tokenizer([q for q, _ in pairs], [x for _, x in pairs], truncation="only_second", max_length=rr.max_len,
                            padding=True, return_tensors="pt")
        with torch.inference_mode():
            flat = rr._model(**enc).logits[:, 0].tolist()
        out, n = [], 0
        for _, ps in rerank_in:
            out.append(flat[n : n + len(ps)])
            n += len(ps)
        return out

    def read_each():
        return [rd.read(q, ps) for q, ps in read_in]

    def read_batched():
        qq = [q for q, ps in read_in for _ in ps]
        pp = [x for _, ps in read_in for x in ps]
        enc = rd._tokenizer(qq, pp, truncation="only_second", max_length=rd.max_len, stride=rd.stride,
                            return_overflowing_tokens=True, return_offsets_mapping=True, padding=True, return_tensors="pt")
        enc.pop("overflow_to_sample_mapping")
        enc.pop("offset_mapping")
        with torch.inference_mode():
            rd._model(**enc)

    lock = threading.Lock()

    def both(i: int, locked: bool) -> None:
        if locked:
            with lock:
                rr.scores(*rerank_in[i])
            with lock:
                rd.read(*read_in[i])
        else:
            rr.scores(*rerank_in[i])
            rd.read(*read_in[i])

    def threads(locked: bool):
        ts = [threading.Thread(target=both, args=(i, locked)) for i in range(len(qs))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    variants = {
        "rerank per question": rerank_each,
        "rerank one batch": rerank_batched,
        "read per question": read_each,
        "read one batch": read_batched,
        "rerank+read, one thread": lambda: [both(i, False) for i in range(len(qs))],
        "rerank+read, 8 threads": lambda: threads(False),
        "rerank+read, 8 threads, one lock": lambda: threads(True),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, run in variants.items():
            t = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t)
    each, batched = rerank_each(), rerank_batched()
    drift = max(abs(a - b) for u, v in zip(each, batched) for a, b in zip(u, v))
    same_top = sum(max(range(len(u)), key=u.__getitem__) == max(range(len(v)), key=v.__getitem__) for u, v in zip(each, batched))
    rows = {k: round(statistics.median(v), 3) for k, v in times.items()}
    for k, v in rows.items():
        print(f"{k:34s} {v:6.3f} s")
    print(f"batched rerank scores moved by up to {drift:.3f}; same first passage for {same_top}/{len(qs)}")
    out = result_path("encoder-batching.json")
    out.write_text(json.dumps({"cpu": cpu_model(), "questions": len(qs), "pairs_per_question": s.rerank_depth, "rounds": args.rounds,
                               "median_s": rows, "batched_rerank_max_score_change": round(drift, 3),
                               "batched_rerank_same_first": f"{same_top}/{len(qs)}"}, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
