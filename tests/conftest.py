"""Shared fixtures: the real models, loaded once per session, and indexes built in tmp dirs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rag.config import Settings
from rag.embedding import Embedder
from rag.generation import TransformersGenerator
from rag.pipeline import Pipeline

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
    return Embedder(Settings().embedding_path)


@pytest.fixture(scope="session")
def generator() -> TransformersGenerator:
    gen = TransformersGenerator(Settings())
    gen.warm_up()
    return gen


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory, embedder, generator) -> Pipeline:
    """The real pipeline over a copy of the real corpus, index built in a session tmp dir."""
    settings = make_settings(tmp_path_factory.mktemp("rag"))
    return Pipeline(settings, generator=generator, embedder=embedder)


@pytest.fixture
def settings_in(tmp_path) -> Settings:
    """Fresh settings with a private copy of the corpus, for tests that change files."""
    return make_settings(tmp_path)
