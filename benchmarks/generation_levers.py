"""Decoding levers of the transformers backend, on the real prompts of the bench questions.

For each variant: time to first token (prefill + 1 step), time to the end of the answer,
decode tok/s, and whether the answer text equals the reference variant's (greedy decoding
should give the same text; a different dtype may not).

    python -m benchmarks.generation_levers [--dtypes bfloat16 float32] [--threads 2 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

import torch

from rag.eval.bench import QUESTIONS
from rag.config import Settings
from rag.llm.transformers import TransformersGenerator
from rag.pipeline import Pipeline
from rag.answering.prompt import build_messages


def prompts(pipeline: Pipeline) -> list[list[dict[str, str]]]:
    """The messages the pipeline would send for each bench question."""
    out = []
    for q in QUESTIONS:
        hits = pipeline.retriever.search(q, pipeline.settings.top_k)
        evidence = pipeline.retriever.evidence(q, hits, pipeline.settings.evidence_k)
        out.append(build_messages(q, evidence))
    return out


def via_generate(gen: TransformersGenerator, messages, max_new: int, **extra):
    """The shipped code before this branch: model.generate + stop_strings + a streamer thread."""
    from transformers import TextIteratorStreamer

    tok, model = gen.tokenizer, gen.model
    inputs = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    res = {}

    def run():
        with torch.inference_mode():
            out = model.generate(**inputs, streamer=streamer, max_new_tokens=max_new, do_sample=False,
                                 pad_token_id=tok.eos_token_id, stop_strings=["\n"], tokenizer=tok, **extra)
        res["n"] = int(out.shape[1] - inputs["input_ids"].shape[1])

    t0 = time.perf_counter()
    th = threading.Thread(target=run)
    th.start()
    first, text = 0.0, ""
    for piece in streamer:
        if piece and not first:
            first = time.perf_counter() - t0
        text += piece
    th.join()
    return text, res["n"], first, time.perf_counter() - t0


def via_loop(gen: TransformersGenerator, messages, max_new: int):
    t0 = time.perf_counter()
    first: list[float] = []
    out = gen.generate(messages, max_new, on_token=lambda _: first or first.append(time.perf_counter() - t0))
    return out.text, out.new_tokens, first[0] if first else 0.0, time.perf_counter() - t0


def run_variant(name, fn, all_messages, max_new, reference=None):
    fn(all_messages[0], 4)  # warm-up (also builds the prefix cache)
    rows = [fn(m, max_new) for m in all_messages]
    texts = [r[0].split("\n")[0].strip() for r in rows]
    firsts = [r[2] for r in rows]
    totals = [r[3] for r in rows]
    decode_tokens = sum(max(r[1] - 1, 0) for r in rows)
    decode_time = sum(r[3] - r[2] for r in rows)
    same = sum(a == b for a, b in zip(texts, reference)) if reference else len(texts)
    out = {
        "variant": name,
        "first_token_p50_s": round(statistics.median(firsts), 3),
        "answer_p50_s": round(statistics.median(totals), 3),
        "answer_max_s": round(max(totals), 3),
        "new_tokens_mean": round(statistics.fmean(r[1] for r in rows), 1),
        "decode_tok_s": round(decode_tokens / decode_time, 1),
        "same_text_as_ref": f"{same}/{len(texts)}",
    }
    print(json.dumps(out), flush=True)
    return out, texts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    ap.add_argument("--threads", nargs="+", type=int, default=[2, 1])
    ap.add_argument("--show-texts", action="store_true")
    ap.add_argument("--only", nargs="*", default=[], help="keep variants whose name contains one of these")
    ap.add_argument("-n", type=int, default=len(QUESTIONS), help="first N bench questions")
    args = ap.parse_args()
    base = Settings()
    pipeline = Pipeline(base)
    all_messages = prompts(pipeline)[: args.n]
    max_new = base.max_new_tokens
    reference = None
    results = []
    for dtype in args.dtypes:
        model = base.model.model_copy(update={"dtype": dtype})
        gen = TransformersGenerator(model)
        gen_prefix = TransformersGenerator(model, prefix_cache=True)
        gen.warm_up()
        for threads in args.threads:
            torch.set_num_threads(threads)
            tag = f"{dtype}, {threads} thr"
            variants = [
                (f"generate() + stop_strings [{tag}]", lambda m, n: via_generate(gen, m, n)),
                (f"loop, no prefix cache [{tag}]", lambda m, n: via_loop(gen, m, n)),
                (f"loop + prefix KV cache [{tag}]", lambda m, n: via_loop(gen_prefix, m, n)),
            ]
            if dtype == args.dtypes[0] and threads == args.threads[0]:
                variants.insert(1, (f"generate() + static cache [{tag}]", lambda m, n: via_generate(gen, m, n, cache_implementation="static")))
            for name, fn in variants:
                if args.only and not any(o in name for o in args.only):
                    continue
                out, texts = run_variant(name, fn, all_messages, max_new, reference)
                reference = reference or texts
                results.append(out)
                if args.show_texts:
                    for q, t in zip(QUESTIONS, texts):  # zip stops at -n
                        print(f"    {q} -> {t}")
        del gen, gen_prefix
    print("\n| variant | first token p50 | answer p50 | answer max | new tok | decode tok/s | same text |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['variant']} | {r['first_token_p50_s']:.3f} s | {r['answer_p50_s']:.3f} s | {r['answer_max_s']:.3f} s | "
              f"{r['new_tokens_mean']} | {r['decode_tok_s']} | {r['same_text_as_ref']} |")


if __name__ == "__main__":
    main()
