"""Concurrent clients against a real `rag serve`, on loopback only: the harness of the load test
(tests/test_load.py, small and bounded) and the load benchmark (benchmarks/load.py, full).

Clients ask through `POST /v1/answer`, each in its own thread with its own HTTP connection;
every phase has a hard time limit, so a hang ends as a failure, not a blocked run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel


class Outcome(BaseModel):
    """One request: the answer (the Answer JSON) or why there is none."""

    question: str
    status: int = 0  # HTTP status; 0 = no response (connection error, time limit)
    answer: dict | None = None
    error: str = ""
    retry_after: str = ""
    seconds: float = 0.0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server_process(cmd: list[str], probe: str, log_path: Path, timeout_s: float, what: str, fail: Callable[[str], None], **popen) -> Iterator[int]:
    """Run `cmd` (output to `log_path`) until `probe` answers 200 (an http URL) or accepts a
    connection (tcp://host:port), yield its pid, stop it after.

    `fail(message)` is called, with the end of the log, if it exits early or is not up in time.
    """
    import urllib.request

    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, **popen)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                fail(f"{what} exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if probe.startswith("tcp://"):
                    import socket

                    host, _, port = probe[len("tcp://") :].rpartition(":")
                    socket.create_connection((host, int(port)), timeout=2).close()
                    break
                with urllib.request.urlopen(probe, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                fail(f"{what} was not up after {timeout_s} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _raise(message: str) -> None:
    raise RuntimeError(message)


@contextmanager
def rag_server(
    log_path: Path, env: dict[str, str] | None = None, timeout_s: float = 240, fail: Callable[[str], None] = _raise, cwd: Path | None = None
) -> Iterator[tuple[str, int]]:
    """`python -m rag serve` on a free 127.0.0.1 port with `env` over os.environ; yields (url, pid).

    `cwd`: the checkout whose rag runs (`python -m` puts it first on the path), e.g. an older
    commit's worktree for a before/after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    full = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", **(env or {}))
    cmd = [sys.executable, "-m", "rag", "serve", "--port", str(port)]
    with server_process(cmd, f"{url}/healthz", log_path, timeout_s, "the app", fail, env=full, cwd=cwd) as pid:
        yield url, pid


def ask(client, question: str) -> Outcome:
    """One question through /v1/answer with an httpx.Client."""
    started = time.perf_counter()
    try:
        r = client.post("/v1/answer", json={"question": question})
    except Exception as err:  # noqa: BLE001 - counted as an error, never hidden
        return Outcome(question=question, error=f"{type(err).__name__}: {err}", seconds=time.perf_counter() - started)
    took = time.perf_counter() - started
    if r.status_code != 200:
        return Outcome(question=question, status=r.status_code, error=r.text[:300], retry_after=r.headers.get("retry-after", ""), seconds=took)
    return Outcome(question=question, status=200, answer=r.json(), seconds=took)


def run_clients(url: str, plans: list[list[str]], time_limit_s: float, request_timeout_s: float = 300) -> tuple[list[Outcome], float]:
    """One client per plan, all started together (a barrier), each asking its questions in
    turn on its own connection. Returns every outcome (in plan order) and the wall time.

    Raises:
        TimeoutError: some client was still waiting after `time_limit_s`.
    """
    import httpx

    start = threading.Barrier(len(plans))

    def client(questions: list[str]) -> list[Outcome]:
        with httpx.Client(base_url=url, timeout=request_timeout_s) as c:
            start.wait()
            return [ask(c, q) for q in questions]

    pool = ThreadPoolExecutor(max_workers=len(plans))
    started = time.perf_counter()
    futures = [pool.submit(client, plan) for plan in plans]
    done, pending = wait(futures, timeout=time_limit_s)
    elapsed = time.perf_counter() - started
    pool.shutdown(wait=not pending, cancel_futures=True)  # never block past the time limit
    if pending:
        raise TimeoutError(f"{len(pending)} of {len(plans)} clients still waiting after {time_limit_s} s")
    return [o for f in futures for o in f.result()], elapsed


def belongs(answer: dict, reference: dict) -> bool:
    """Whether `answer` is an answer to `reference`'s question, as that question alone gets it.

    The same question, refused or not alike, the same span, and for a fact answer (a span) the
    same cited passages. The words may differ: under load a fact answer may skip the LLM's
    phrasing, and a phrasing decoded in a batch may round differently in bfloat16. A non-span
    answer must cite only documents its reference cites or shows as closest.
    """
    if (answer["question"], answer["refused"], answer.get("span")) != (reference["question"], reference["refused"], reference.get("span")):
        return False
    cited = {(c["doc_id"], c["start"], c["end"]) for c in answer["citations"]}
    if reference.get("span"):
        return cited == {(c["doc_id"], c["start"], c["end"]) for c in reference["citations"]}
    allowed = {c["doc_id"] for c in reference["citations"] + reference["closest"]}
    return {doc for doc, _, _ in cited} <= allowed


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile; 0.0 for no values.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 50), percentile([], 95)
    (3.0, 0.0)
    """
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20
