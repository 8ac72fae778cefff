"""The on-disk index: round-trip, staleness and rebuild (real embedding model, tmp dirs)."""

from __future__ import annotations

import json
import logging

import numpy as np

from rag.corpus import load_corpus
from rag.index import Index, StaleIndex, ensure_index


def build(settings, embedder):
    return ensure_index(load_corpus(settings.corpus_dir), embedder, settings)


def test_save_load_round_trip(settings_in, embedder):
    built = build(settings_in, embedder)
    loaded = Index.load(settings_in.index_dir)
    assert loaded.chunks == built.chunks
    assert loaded.sentences == built.sentences
    assert loaded.manifest == built.manifest
    assert loaded.chunk_vectors.ntotal == len(built.chunks)
    v = built.chunk_vectors.reconstruct(3)
    assert np.allclose(loaded.chunk_vectors.reconstruct(3), v)
    manifest = json.loads((settings_in.index_dir / "current" / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert manifest["embedding_model"].endswith("all-MiniLM-L6-v2")
    assert manifest["dim"] == 384
    assert set(manifest["corpus"]) == {p.name for p in settings_in.corpus_dir.iterdir()}


def test_changed_corpus_file_triggers_rebuild(settings_in, embedder, caplog):
    first = build(settings_in, embedder)
    path = sorted(settings_in.corpus_dir.iterdir())[0]
    path.write_text(path.read_text(encoding="utf-8") + "\nA brand new closing sentence about llamas.\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="rag.index"):
        second = build(settings_in, embedder)
    assert f"corpus changed: {path.name}" in caplog.text
    assert any("llamas" in c.text for c in second.chunks)
    assert not any("llamas" in c.text for c in first.chunks)
    assert Index.load(settings_in.index_dir).manifest.corpus[path.name] != first.manifest.corpus[path.name]


def test_changed_chunk_settings_make_index_stale(settings_in, embedder):
    index = build(settings_in, embedder)
    other = settings_in.model_copy(update={"chunk_size": 64, "chunk_overlap": 16})
    try:
        index.check_fresh(load_corpus(settings_in.corpus_dir), embedder, other)
    except StaleIndex as why:
        assert "chunk settings changed" in str(why)
    else:
        raise AssertionError("chunk-size change was not detected")


def test_unchanged_index_is_loaded_not_rebuilt(settings_in, embedder):
    build(settings_in, embedder)
    target = (settings_in.index_dir / "current").resolve()
    build(settings_in, embedder)
    assert (settings_in.index_dir / "current").resolve() == target
