"""Concurrent answering on this machine (issue 21): one client against ten, in one run.

For each setting it starts `python -m rag serve` on a free 127.0.0.1 port (the checkout's
corpus and index, the default in-process LLM), then, through `POST /v1/answer`:
1. one client asks N questions one after another: the references, and answers/s alone;
2. on a fresh server (so no cache has seen the questions), ten clients ask 3 different
   questions each, all at once: answers/s together, p50/p95,
   errors, and "mixed" answers (not their own question's, `rag.eval.load.belongs`);
3. (`--burst`) 100 requests at once: how many are answered, how many get 503 with
   Retry-After and how fast, and the server's RSS before and after.
Settings are varied through the environment (`--degrade 1000 8 4 2 0` gives the curve that
chose `degrade_after`; 1000 = never). Timings are ratios inside one server's run, so the
machine's load cancels out as far as it can.

    python -m benchmarks.load [--clients 10] [--per-client 3] [--degrade 4] [--burst 100] [--env K=V ...]
                              [--before WORKTREE]   # e.g. git worktree add /tmp/before f289430
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from benchmarks.results_file import cpu_model, result_path
from rag.config import Settings
from rag.eval.golden import load_golden
from rag.eval.load import belongs, percentile, rag_server, rss_mb, run_clients

TIME_LIMIT_S = 900  # one phase; a hang ends the run instead of blocking it


def questions(n: int) -> list[str]:
    """The first `n` questions of the news golden set, answerable and not, in file order."""
    items = load_golden(Settings().root / "tests/golden/golden.jsonl")
    return [i.question for i in items[:n]]


def measure(env: dict[str, str], clients: int, per_client: int, burst: int, log_dir: Path, checkout: Path | None = None) -> dict:
    """One client alone on one server, then all clients at once on a fresh one: a question is
    new to each server (no cached query vector or reranker scores helps the second phase)."""
    asked, warm = questions(clients * per_client + 2)[:-2], questions(clients * per_client + 2)[-2:]
    label = (f"{checkout}: " if checkout else "") + (" ".join(f"{k}={v}" for k, v in env.items()) or "defaults")

    def server():
        return rag_server(log_dir / f"serve-{len(list(log_dir.iterdir()))}.log", env, cwd=checkout)

    with server() as (url, pid):
        run_clients(url, [warm], TIME_LIMIT_S)  # the first answers load nothing new
        alone, alone_s = run_clients(url, [asked], TIME_LIMIT_S)
    reference = {o.question: o.answer for o in alone if o.answer}
    plans = [asked[n * per_client : (n + 1) * per_client] for n in range(clients)]
    with server() as (url, pid):
        run_clients(url, [warm], TIME_LIMIT_S)
        together, together_s = run_clients(url, plans, TIME_LIMIT_S)
        ok = [o for o in together if o.answer]
        row = {
            "settings": label,
            "questions": len(asked),
            "alone_answers_per_s": round(len(asked) / alone_s, 3),
            "alone_p50_s": round(percentile([o.seconds for o in alone], 50), 2),
            "together_answers_per_s": round(len(together) / together_s, 3),
            "ratio": round((len(together) / together_s) / (len(asked) / alone_s), 2),
            "together_p50_s": round(percentile([o.seconds for o in ok], 50), 2),
            "together_p95_s": round(percentile([o.seconds for o in ok], 95), 2),
            "errors": [f"{o.question}: {o.status} {o.error[:120]}" for o in alone + together if not o.answer],
            "mixed": [o.question for o in ok if o.question in reference and not belongs(o.answer, reference[o.question])],
            "quick": sum("not phrased" in (o.answer or {}).get("reason", "") for o in ok),  # answers that skipped the LLM
            "routes_alone": _count(o.answer["route"] for o in alone if o.answer),
            "routes_together": _count(o.answer["route"] for o in ok),
            "rss_mb_after_load": round(rss_mb(pid)),
        }
        if burst:  # twice: the second shows whether memory keeps growing or stays where the first left it
            row["burst"] = [_burst(url, pid, asked, burst) for _ in range(2)]
    print(json.dumps(row), flush=True)
    return row


def _burst(url: str, pid: int, asked: list[str], n: int) -> dict:
    before = rss_mb(pid)
    crowd, crowd_s = run_clients(url, [[asked[k % len(asked)]] for k in range(n)], TIME_LIMIT_S)
    busy = [o for o in crowd if o.status == 503]
    return {
        "requests": n,
        "answered": sum(1 for o in crowd if o.answer),
        "busy_503": len(busy),
        "other": [f"{o.status} {o.error[:80]}" for o in crowd if not o.answer and o.status != 503],
        "busy_retry_after_s": sorted({o.retry_after for o in busy}),
        "busy_p50_s": round(percentile([o.seconds for o in busy], 50), 3),
        "busy_max_s": round(max((o.seconds for o in busy), default=0.0), 3),
        "answered_p95_s": round(percentile([o.seconds for o in crowd if o.answer], 95), 2),
        "wall_s": round(crowd_s, 1),
        "rss_mb_before": round(before),
        "rss_mb_after": round(rss_mb(pid)),
    }


def _count(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--per-client", type=int, default=3)
    ap.add_argument("--degrade", nargs="+", default=[], help="RAG_DEGRADE_AFTER values, one server each (1000 = never)")
    ap.add_argument("--burst", type=int, default=0, help="requests at once in a burst after the load (0 = none)")
    ap.add_argument("--env", nargs="*", default=[], help="KEY=VALUE settings for every server")
    ap.add_argument("--before", type=Path, help="also run a checkout of older code first (a git worktree), same settings")
    ap.add_argument("--name", default="load")
    args = ap.parse_args()
    base = dict(kv.split("=", 1) for kv in args.env)
    runs = [dict(base, RAG_DEGRADE_AFTER=d) for d in args.degrade] or [base]
    started = time.strftime("%Y-%m-%d %H:%M")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(base, args.clients, args.per_client, 0, Path(tmp), args.before)] if args.before else []
        rows += [measure(env, args.clients, args.per_client, args.burst, Path(tmp)) for env in runs]
    out = result_path(f"{args.name}.json")
    out.write_text(json.dumps({"cpu": cpu_model(), "started": started, "clients": args.clients, "per_client": args.per_client,
                               "rows": rows}, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
