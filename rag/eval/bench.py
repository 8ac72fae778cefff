"""python -m rag bench: time cold start, retrieval, first token, decoding and whole answers.

Every number comes from the real Pipeline with the settings the user runs (env `RAG_*`
included), so they are the product's numbers, not a micro-benchmark's. Cold start runs in a
fresh interpreter so imports, model loads and the index load are really paid for; "cold" means
a new process, not an empty OS file cache (the weights are usually in the page cache).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pydantic import BaseModel, Field

from ..config import Settings

# Generic questions about the four articles, written for timing (not the golden set): each
# should reach the LLM, so the end-to-end times are those of generated answers.
QUESTIONS = [
    "How much money is Meta offering AI researchers?",
    "What did Sam Altman say about Meta's hiring offers?",
    "How is Mark Zuckerberg recruiting AI talent?",
    "Why are AI researchers leaving Meta?",
    "Which researchers left Meta for xAI?",
    "What is Meta's superintelligence group?",
    "What happened at Scale AI after the Meta deal?",
    "How much does Meta plan to spend on AI in 2025?",
    "Why did some researchers turn down Meta's offers?",
    "Which AI lab keeps its researchers best?",
]

TARGETS = {
    "e2e_p50_s": 2.0,
    "e2e_p95_s": 4.0,
    "first_token_p50_s": 0.7,
    "retrieval_p50_ms": 15.0,
    "cold_first_answer_s": 10.0,
}


class ColdStart(BaseModel):
    """Seconds from the start of a fresh `python` to each stage being done."""

    interpreter_s: float = Field(description="process spawn until our first line runs")
    import_s: float = Field(description="import rag and the pipeline module")
    embedder_load_s: float
    index_load_s: float = Field(description="load + verify the index, build the BM25 tables")
    reader_load_s: float = Field(0.0, description="the span reader's weights, checked against their sha256")
    model_load_s: float = Field(description="LLM weights (from the converted cache)")
    first_answer_s: float = Field(description="the first question, all loaded")
    total_s: float = Field(description="spawn to first answer: what a user waits for")
    peak_rss_mb: float


class QuestionRun(BaseModel):
    question: str
    route: str
    retrieve_ms: float
    read_ms: float = Field(0.0, description="the span reader over the retrieved chunks")
    first_token_s: float = Field(description="question in -> first streamed piece out (0 if none)")
    total_s: float
    prompt_tokens: int
    new_tokens: int
    decode_tok_s: float


class Warm(BaseModel):
    """The pipeline fully loaded and warmed up; each question asked once (uncached)."""

    n: int
    e2e_p50_s: float
    e2e_p95_s: float
    answered_p50_s: float = Field(0.0, description="end to end over the questions answered (a refusal stops before the LLM, so it is fast)")
    answered: int = Field(0, description="questions answered, not refused")
    first_token_p50_s: float
    first_token_p95_s: float
    decode_tok_s: float = Field(description="tokens after the first / time after the first, over all answers")
    retrieval_p50_ms: float = Field(description="embed the question + dense/BM25 search + evidence sentences")
    retrieval_p95_ms: float
    read_p50_ms: float = Field(0.0, description="the span reader, when it ran")
    embed_p50_ms: float = Field(description="the question's embedding alone, uncached")
    prompt_tokens_mean: float
    prompt_tokens_max: int
    new_tokens_mean: float
    generated: int = Field(description="answers that reached the LLM (others were refused or extractive early)")
    runs: list[QuestionRun]


class Report(BaseModel):
    machine: dict[str, str]
    settings: dict[str, str]
    cold: ColdStart | None
    warm: Warm
    peak_rss_mb: float = Field(description="this process, both models loaded, after the warm runs")
    targets: dict[str, float] = TARGETS


# -- helpers -------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100].

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
    2.5
    >>> percentile([5.0], 95)
    5.0
    """
    if not values:
        return 0.0
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux ru_maxrss is in KiB)."""
    import resource

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / (1024 if sys.platform != "darwin" else 1024 * 1024), 1)


def machine() -> dict[str, str]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        import psutil

        mem = f"{psutil.virtual_memory().total / 2**30:.0f} GiB"
    except ImportError:
        pass
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": mem,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": str(torch.get_num_threads()),
        "os": f"{platform.system()} {platform.release()}",
        "load_avg_1m": f"{os.getloadavg()[0]:.2f}",  # other processes on the cores skew every figure
    }


class _Recording:
    """A Generator that passes every call to `inner` and keeps the last Generation (token counts, timings)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.last = None

    def warm_up(self) -> None:
        self.inner.warm_up()

    def count_tokens(self, messages):
        return self.inner.count_tokens(messages)

    def generate(self, messages, max_new_tokens, stop=("\n",), on_token=None):
        self.last = self.inner.generate(messages, max_new_tokens, stop=stop, on_token=on_token)
        return self.last


# -- measuring -----------------------------------------------------------------------------
def measure_warm(pipeline, questions: list[str] = QUESTIONS) -> Warm:
    """Ask each question once on a loaded pipeline and time it from the caller's side."""
    from ..pipeline import Pipeline

    recorder = _Recording(pipeline.generator)
    # the same loaded parts, with the model observed
    observed = Pipeline(pipeline.settings, retriever=pipeline.retriever, generator=recorder, reader=pipeline.reader)
    observed.warm_up()
    embed_ms = []
    for q in questions:  # the uncached embedding cost alone (encode() bypasses the cache)
        t = time.perf_counter()
        observed.embedder.encode([q])
        embed_ms.append((time.perf_counter() - t) * 1000)
    runs = []
    for q in questions:
        recorder.last = None
        started = time.perf_counter()
        first: list[float] = []

        def on_token(piece: str) -> None:
            if not first:
                first.append(time.perf_counter() - started)

        answer = observed.answer(q, on_token=on_token)
        total = time.perf_counter() - started
        gen = recorder.last
        new = gen.new_tokens if gen else 0
        decode = (new - 1) / (gen.total_s - gen.first_token_s) if gen and new > 1 and gen.total_s > gen.first_token_s else 0.0
        runs.append(
            QuestionRun(
                question=q,
                route=answer.route,
                retrieve_ms=round(answer.timings.get("retrieve", 0.0) * 1000, 2),
                read_ms=round(answer.timings.get("read", 0.0) * 1000, 2),
                first_token_s=round(first[0] if first else 0.0, 4),
                total_s=round(total, 4),
                prompt_tokens=gen.prompt_tokens if gen else 0,
                new_tokens=new,
                decode_tok_s=round(decode, 1),
            )
        )
    gens = [r for r in runs if r.prompt_tokens]
    firsts = [r.first_token_s for r in runs if r.first_token_s]
    decode_tokens = sum(max(r.new_tokens - 1, 0) for r in gens)
    decode_time = sum((r.new_tokens - 1) / r.decode_tok_s for r in gens if r.decode_tok_s)
    return Warm(
        n=len(runs),
        e2e_p50_s=round(percentile([r.total_s for r in runs], 50), 3),
        e2e_p95_s=round(percentile([r.total_s for r in runs], 95), 3),
        answered_p50_s=round(percentile([r.total_s for r in runs if r.route != "refused"], 50), 3) if any(r.route != "refused" for r in runs) else 0.0,
        answered=sum(r.route != "refused" for r in runs),
        first_token_p50_s=round(percentile(firsts, 50), 3),
        first_token_p95_s=round(percentile(firsts, 95), 3),
        decode_tok_s=round(decode_tokens / decode_time, 1) if decode_time else 0.0,
        retrieval_p50_ms=round(percentile([r.retrieve_ms for r in runs], 50), 2),
        retrieval_p95_ms=round(percentile([r.retrieve_ms for r in runs], 95), 2),
        read_p50_ms=round(percentile([r.read_ms for r in runs if r.read_ms], 50), 2) if any(r.read_ms for r in runs) else 0.0,
        embed_p50_ms=round(percentile(embed_ms, 50), 2),
        prompt_tokens_mean=round(statistics.fmean([r.prompt_tokens for r in gens]), 1) if gens else 0.0,
        prompt_tokens_max=max((r.prompt_tokens for r in gens), default=0),
        new_tokens_mean=round(statistics.fmean([r.new_tokens for r in gens]), 1) if gens else 0.0,
        generated=len(gens),
        runs=runs,
    )


# The child of measure_cold(). It imports nothing of rag before its clock starts.
_COLD_CHILD = r"""
import json, sys, time
t0 = time.time()
c0 = time.perf_counter()
marks = {}
import rag
from rag.pipeline import Pipeline
from rag.config import Settings
marks["import"] = time.perf_counter()
settings = Settings.model_validate_json(sys.argv[1])
p = Pipeline(settings)
p.embedder.warm_up()
marks["embedder"] = time.perf_counter()
p.retriever.warm_up()
marks["index"] = time.perf_counter()
if settings.use_reader:
    p.reader.warm_up()
marks["reader"] = time.perf_counter()
if settings.use_llm:
    p.generator.warm_up()
marks["model"] = time.perf_counter()
p.answer(sys.argv[2])
marks["answer"] = time.perf_counter()
from rag.eval.bench import peak_rss_mb
print(json.dumps({"t0": t0, "c0": c0, "marks": marks, "rss": peak_rss_mb(), "t_end": time.time()}))
"""


def measure_cold(settings: Settings, question: str = QUESTIONS[0], timeout: float = 300.0) -> ColdStart:
    """Start a fresh interpreter, load everything stage by stage, answer one question.

    Raises:
        RuntimeError: the child failed; its stderr is in the message.
    """
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parents[2])  # the child imports this same rag, not another install
    env["PYTHONPATH"] = here + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    spawn = time.time()
    proc = subprocess.run(
        [sys.executable, "-c", _COLD_CHILD, settings.model_dump_json(), question],
        capture_output=True, text=True, env=env, timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"cold-start child failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    m, c0 = out["marks"], out["c0"]
    return ColdStart(
        interpreter_s=round(out["t0"] - spawn, 3),
        import_s=round(m["import"] - c0, 3),
        embedder_load_s=round(m["embedder"] - m["import"], 3),
        index_load_s=round(m["index"] - m["embedder"], 3),
        reader_load_s=round(m["reader"] - m["index"], 3),
        model_load_s=round(m["model"] - m["reader"], 3),
        first_answer_s=round(m["answer"] - m["model"], 3),
        total_s=round(out["t0"] - spawn + m["answer"] - c0, 3),
        peak_rss_mb=out["rss"],
    )


def run(settings: Settings | None = None, questions: list[str] = QUESTIONS, cold: bool = True, pipeline=None) -> Report:
    """The whole benchmark. Cold start first, while this process has loaded nothing heavy."""
    from ..pipeline import Pipeline

    settings = settings or Settings()
    cold_start = measure_cold(settings, questions[0]) if cold else None
    pipeline = pipeline or Pipeline(settings)
    warm = measure_warm(pipeline, questions)
    shown = ("llm_backend", "llm_dtype", "llm_threads", "top_k", "evidence_k", "max_new_tokens", "hybrid", "use_llm")
    return Report(
        machine=machine(),
        settings={k: str(getattr(pipeline.settings, k)) for k in shown},
        cold=cold_start,
        warm=warm,
        peak_rss_mb=peak_rss_mb(),
    )


# -- printing ------------------------------------------------------------------------------
def table(report: Report) -> str:
    """The report as an aligned text table, with targets where the issue sets one."""
    w, c = report.warm, report.cold
    rows: list[tuple[str, str, str]] = []
    if c:
        rows += [
            ("cold: interpreter start", f"{c.interpreter_s:.2f} s", ""),
            ("cold: import rag", f"{c.import_s:.2f} s", ""),
            ("cold: embedder load", f"{c.embedder_load_s:.2f} s", ""),
            ("cold: index load (+BM25)", f"{c.index_load_s:.2f} s", ""),
            ("cold: reader load", f"{c.reader_load_s:.2f} s", ""),
            ("cold: LLM load", f"{c.model_load_s:.2f} s", ""),
            ("cold: first answer", f"{c.first_answer_s:.2f} s", ""),
            ("cold: start -> first answer", f"{c.total_s:.2f} s", f"<= {TARGETS['cold_first_answer_s']:.0f} s"),
            ("cold: peak RSS", f"{c.peak_rss_mb:.0f} MB", ""),
        ]
    rows += [
        ("warm: first token p50 / p95", f"{w.first_token_p50_s:.2f} / {w.first_token_p95_s:.2f} s", f"<= {TARGETS['first_token_p50_s']} s"),
        ("warm: answer p50", f"{w.e2e_p50_s:.2f} s", f"<= {TARGETS['e2e_p50_s']} s"),
        ("warm: answer p95", f"{w.e2e_p95_s:.2f} s", f"<= {TARGETS['e2e_p95_s']} s"),
        ("warm: answer p50, answered only", f"{w.answered_p50_s:.2f} s ({w.answered} of {w.n} answered)", ""),
        ("warm: decode", f"{w.decode_tok_s:.1f} tok/s", ""),
        ("warm: retrieval p50 / p95", f"{w.retrieval_p50_ms:.1f} / {w.retrieval_p95_ms:.1f} ms", f"<= {TARGETS['retrieval_p50_ms']:.0f} ms"),
        ("warm: reader p50", f"{w.read_p50_ms:.1f} ms", ""),
        ("warm: question embedding p50", f"{w.embed_p50_ms:.1f} ms", ""),
        ("prompt tokens mean / max", f"{w.prompt_tokens_mean:.0f} / {w.prompt_tokens_max}", ""),
        ("new tokens mean", f"{w.new_tokens_mean:.1f}", ""),
        ("answers generated by the LLM", f"{w.generated} of {w.n}", ""),
        ("peak RSS (both models loaded)", f"{report.peak_rss_mb:.0f} MB", ""),
    ]
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    lines = [f"{'measure':<{width}}  {'value':>{vwidth}}  target", "-" * (width + vwidth + 12)]
    lines += [f"{a:<{width}}  {b:>{vwidth}}  {t}".rstrip() for a, b, t in rows]
    s = report.settings
    m = report.machine
    lines.append("")
    lines.append(
        f"backend {s['llm_backend']} ({s['llm_dtype'] if s['llm_backend'] == 'transformers' else 'GGUF'}), {s['llm_threads']} threads; "
        f"{m['cpu']}, {m['cores']} cores, {m['memory']}; "
        f"torch {m['torch']}; load average {m['load_avg_1m']} at the end"
    )
    return "\n".join(lines)


def main(args) -> int:
    report = run()
    if getattr(args, "json", False):
        print(report.model_dump_json(indent=2))
    else:
        print(table(report))
    return 0
