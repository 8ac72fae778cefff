"""The openai backend against a server that decodes several requests at once (issue 21).

Starts llama.cpp's own `llama-server` (not on PyPI: built from the llama.cpp source that the
llama-cpp-python sdist vendors; see benchmarks/load.md) on 127.0.0.1 with the packaged SmolLM2
GGUF and `--parallel N` slots, then sends the phrasing prompts of real golden questions from 8
threads through rag's OpenAIGenerator, once with RAG_LLM_PARALLEL=1 (one request at a time) and
once unset (the slot count the server reports at /props), interleaved round by round.
llama-cpp-python's own server (`python -m llama_cpp.server`) has no slots: it runs one request
at a time whatever the client does, so it cannot show the difference. The server's prompt cache
is off: with it, a prompt repeated in a later round skips its prefill in whichever slot kept it,
and the one-at-a-time rate moved 1.8x between runs with it.

    python -m benchmarks.openai_parallel --server /path/to/llama-server [--slots 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.batched_decode import prompts
from benchmarks.results_file import cpu_model, result_path
from rag.config import Settings
from rag.llm.base import ModelSettings
from rag.llm.gguf import gguf_path
from rag.llm.openai import OpenAIGenerator
from rag.eval.load import free_port, server_process


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", type=Path, required=True, help="a llama-server binary")
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=32)
    args = ap.parse_args()
    chats = prompts(args.requests)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    model = gguf_path(Settings().model)
    cmd = [str(args.server), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "--parallel", str(args.slots),
           "-c", str(2048 * args.slots), "-t", "2", "--no-webui",
           "--no-cache-prompt", "--cache-ram", "0"]  # each round's prompts are decoded afresh, like new users' questions
    with tempfile.TemporaryDirectory() as tmp, server_process(cmd, f"{url}/health", Path(tmp) / "server.log", 120, "llama-server", _fail):
        one = OpenAIGenerator(ModelSettings(backend="openai", url=f"{url}/v1", parallel=1))
        slots = OpenAIGenerator(ModelSettings(backend="openai", url=f"{url}/v1"))
        one.warm_up()
        slots.warm_up()

        def run(g: OpenAIGenerator) -> tuple[float, int, list[str]]:
            t = time.perf_counter()
            with ThreadPoolExecutor(max_workers=len(chats)) as pool:
                out = list(pool.map(lambda c: g.generate(c, args.tokens), chats))
            return time.perf_counter() - t, sum(o.new_tokens for o in out), [o.text for o in out]

        run(slots)  # warm
        serial, parallel = [], []
        for _ in range(args.rounds):
            t1, n1, texts1 = run(one)
            t2, n2, texts2 = run(slots)
            serial.append(len(chats) / t1)
            parallel.append(len(chats) / t2)
        row = {
            "slots_reported": slots.parallel,
            "requests_at_once": len(chats),
            "one_at_a_time_per_s": round(statistics.median(serial), 3),
            "parallel_per_s": round(statistics.median(parallel), 3),
            "ratio": round(statistics.median(parallel) / statistics.median(serial), 2),
            "peak_in_flight": {"parallel=1": one.peak, "unset": slots.peak},
            "same_text": f"{sum(a == b for a, b in zip(texts1, texts2))}/{len(chats)}",
        }
    print(json.dumps(row))
    out = result_path(f"openai-parallel-{args.slots}-slots.json")
    out.write_text(json.dumps({"cpu": cpu_model(), "server": "llama.cpp llama-server (vendored in llama-cpp-python 0.3.36)",
                               "slots": args.slots, "rounds": args.rounds, "max_new_tokens": args.tokens, **row}, indent=1) + "\n",
                   encoding="utf-8")
    print(f"wrote {out}")


def _fail(message: str) -> None:
    raise RuntimeError(message)


if __name__ == "__main__":
    main()
