"""Interleaved A/B of decoding variants on one real prompt, so machine drift hits all alike.

Each round runs every variant once in turn (A B C A B C ...), forcing the same number of new
tokens (no early stop), and the medians are compared. Used because the shared 2-core machine
was busy: a variant's whole-set timing moved by 2x between runs, an interleaved median less.

    python -m benchmarks.ab_decode [--rounds 6] [--tokens 24]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rag.eval.bench import QUESTIONS
from rag.config import Settings
from rag.llm.transformers import TransformersGenerator
from rag.pipeline import Pipeline
from rag.answering.prompt import build_messages


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--tokens", type=int, default=24)
    args = ap.parse_args()
    s = Settings()
    p = Pipeline(s)
    q = QUESTIONS[0]
    messages = build_messages(q, p.retriever.evidence(q, p.retriever.search(q, s.top_k), s.evidence_k))
    # ignore_eos: every loop variant decodes exactly --tokens tokens, like min_new_tokens below
    gen = TransformersGenerator(s.model, ignore_eos=True)
    gen_prefix = TransformersGenerator(s.model, prefix_cache=True, ignore_eos=True)
    tok, model = gen.tokenizer, gen.model
    other = "float32" if s.llm_dtype == "bfloat16" else "bfloat16"
    gen2 = TransformersGenerator(s.model.model_copy(update={"dtype": other}), ignore_eos=True)
    inputs = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)

    def generate(**extra):
        with torch.inference_mode():
            model.generate(**inputs, max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False,
                           pad_token_id=tok.eos_token_id, **extra)

    def loop(prefix: bool, g=None):
        (g or (gen_prefix if prefix else gen)).generate(messages, args.tokens, stop=())

    def prefill(prefix: bool):
        (gen_prefix if prefix else gen).generate(messages, 1, stop=())

    variants = {
        "generate()": lambda: generate(),
        "generate(cache_implementation='static')": lambda: generate(cache_implementation="static"),
        "loop": lambda: loop(False),
        "loop + prefix KV cache": lambda: loop(True),
        f"loop, {other}": lambda: loop(False, gen2),
        "loop, 1 thread": lambda: (torch.set_num_threads(1), loop(False), torch.set_num_threads(s.llm_threads)),
        "prefill+1 token, full prompt": lambda: prefill(False),
        "prefill+1 token, prefix KV cache": lambda: prefill(True),
    }
    for fn in variants.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    print(f"prompt {inputs['input_ids'].shape[1]} tokens, {args.tokens} new tokens, {s.llm_dtype} unless named, {torch.get_num_threads()} threads unless named, {args.rounds} rounds")
    print("| variant | median s | min s | max s |\n|---|---|---|---|")
    for name, ts in times.items():
        print(f"| {name} | {statistics.median(ts):.3f} | {min(ts):.3f} | {max(ts):.3f} |")


if __name__ == "__main__":
    main()
