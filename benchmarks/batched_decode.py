"""Does decoding several answers in one batch raise throughput on this CPU? (issue 21)

The in-process generator decodes every concurrent generation in one forward pass per step.
This times N phrasing prompts of real golden questions generated one after another (batch 1)
against the same N sent at once from N threads (one batch), interleaved round by round so
machine drift hits both alike, and counts how many texts are the same in both.

    python -m benchmarks.batched_decode [--rounds 3] [--sizes 1 2 4 8] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

from benchmarks.results_file import cpu_model, result_path
from rag.answering.phrasing import messages as phrasing_messages
from rag.config import Settings
from rag.eval.golden import load_golden
from rag.llm.transformers import TransformersGenerator
from rag.pipeline import Pipeline


def prompts(n: int) -> list[list[dict[str, str]]]:
    """Phrasing prompts of the first `n` golden questions the pipeline answers with a span."""
    s = Settings(use_llm=False)
    pipeline = Pipeline(s)
    found = []
    for case in load_golden(s.root / "tests/golden/golden.jsonl"):
        if not case.answerable:
            continue
        a = pipeline.answer(case.question)
        if a.span and a.citations:
            found.append(phrasing_messages(a.searched, a.span, " ".join(c.text for c in a.citations)))
        if len(found) == n:
            return found
    return found


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--dtype", default=Settings().llm_dtype)
    args = ap.parse_args()
    chats = prompts(max(args.sizes))
    s = Settings(llm_dtype=args.dtype)
    one_by_one = TransformersGenerator(s.model.model_copy(update={"batch": 1}))
    batched = TransformersGenerator(s.model.model_copy(update={"batch": max(args.sizes)}))
    one_by_one.warm_up()
    batched.warm_up()

    def run(gen: TransformersGenerator, chats: list, together: bool) -> tuple[float, list[str], int]:
        texts: list[str] = [""] * len(chats)
        tokens = [0] * len(chats)

        def ask(n: int) -> None:
            g = gen.generate(chats[n], args.tokens)
            texts[n], tokens[n] = g.text, g.new_tokens

        t = time.perf_counter()
        if together:
            threads = [threading.Thread(target=ask, args=(n,)) for n in range(len(chats))]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
        else:
            for n in range(len(chats)):
                ask(n)
        return time.perf_counter() - t, texts, sum(tokens)

    rows = []
    for size in args.sizes:
        batch = chats[:size]
        run(batched, batch, True)  # warm
        serial, together = [], []
        for _ in range(args.rounds):
            t1, texts1, tok1 = run(one_by_one, batch, False)
            t2, texts2, tok2 = run(batched, batch, True)
            serial.append(tok1 / t1)
            together.append(tok2 / t2)
        same = sum(a == b for a, b in zip(texts1, texts2))
        row = {"concurrent": size, "serial_tok_s": round(statistics.median(serial), 1),
               "batched_tok_s": round(statistics.median(together), 1),
               "ratio": round(statistics.median(together) / statistics.median(serial), 2), "same_text": f"{same}/{size}"}
        print(row, flush=True)
        rows.append(row)
    out = result_path(f"batched-decode-{args.dtype}.json")
    out.write_text(json.dumps({"cpu": cpu_model(), "dtype": args.dtype, "rounds": args.rounds, "max_new_tokens": args.tokens,
                               "rows": rows}, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
