"""How long the reader takes on CPU for what a question gives it, by precision.

    python -m benchmarks.reader_speed [--windows 6] [--repeats 15]

Reads `--windows` chunks of the real corpus (about 128 MiniLM tokens each, the index's chunk
size) for a question, interleaving fp32, bf16 and int8-dynamic runs so that a busy machine
affects each alike; prints the median and p90 per variant and whether the spans agree.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from rag.answering.reader import Reader

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--windows", type=int, default=6)
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    import torch

    text = " ".join(f.read_text(encoding="utf-8") for f in sorted((ROOT / "corpus").glob("*.txt")))
    words = text.split()
    passages = [" ".join(words[i : i + 95]) for i in range(0, 95 * args.windows, 95)]  # ~128 tokens each
    question = "How much money did the company offer to the engineers it wanted to hire?"
    readers = {"fp32": Reader(quantize=False), "int8": Reader(quantize=True)}
    bf16 = Reader(quantize=False)
    bf16.warm_up()
    bf16._model = bf16._model.to(torch.bfloat16)  # measurement only: bf16 weights on CPU
    readers["bf16"] = bf16
    times: dict[str, list[float]] = {k: [] for k in readers}
    spans = {}
    for r in readers.values():
        r.warm_up()
        r.read(question, passages)
    for _ in range(args.repeats):
        for name, r in readers.items():
            t = time.perf_counter()
            res = r.read(question, passages)
            times[name].append(time.perf_counter() - t)
            spans[name] = [(s.passage, s.text) for s in res.spans[:3]]
    for name, ts in times.items():
        ts.sort()
        print(f"{name:5s} {args.windows} windows: median {1000 * statistics.median(ts):.0f} ms, p90 {1000 * ts[int(0.9 * len(ts)) - 1]:.0f} ms, top spans {spans[name]}")


if __name__ == "__main__":
    main()
