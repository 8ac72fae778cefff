"""Shared fixtures: the real models, loaded once per session, and indexes built in tmp dirs."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple
from pathlib import Path

import pytest

from fakes import HashEmbedder
from rag.config import Settings
from rag.embedding import Embedder
from rag.env import apply_env_defaults
from rag.llm.transformers import TransformersGenerator
from rag.pipeline import Pipeline

apply_env_defaults()  # as the entry points do, before any test loads torch

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "corpus"
GOLDEN = REPO / "tests" / "golden" / "golden.jsonl"


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


@pytest.fixture
def hash_embedder() -> HashEmbedder:
    """The fake embedder of tests/fakes.py: pure-logic tests load no model."""
    return HashEmbedder()


@pytest.fixture
def settings_in(tmp_path) -> Settings:
    """Fresh settings with a private copy of the corpus, for tests that change files."""
    return make_settings(tmp_path)


# -- the chat app as a real server (tests/test_ui*.py, tests/test_client.py) -------------------
APP_START_TIMEOUT_S = 240


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    import subprocess
    import sys
    import time
    import urllib.request

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
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rag", "serve", "--port", str(port)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + APP_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the app exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the app was not up after {APP_START_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield App(url=url, pid=proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
