"""Segments: an update writes only the new documents; many updates equal one full build (hash embedder)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TINY_CORPUS, make_settings
from fakes import HashEmbedder
from rag.index.bm25 import Lexicon, TermStats
from rag.index.corpus import Corpus, load_corpus
from rag.index.manifest import Index, ensure_index, update_index
from rag.index.segment import Segment
from rag.index.retrieval import Retriever
from rag.store.faiss import FaissStore
from rag.store.segments import SegmentedStore
from rag.text import terms
from rag.types import Document

TOPICS = ["llama farm", "harbor ferry", "zebra crossing", "apple orchard", "rain gauge", "chess club", "bee hive", "tram line",
          "glass works", "salt mine", "kite festival", "tide clock"]


def _doc(n: int, topic: str) -> Document:
    text = (
        f"Report {n} on the {topic}\nThe {topic} near town {n} counted {n * 7} visitors this spring. "
        f"Volunteers at the {topic} painted {n + 3} benches. The {topic} opens every day at {n % 12 + 1} o'clock.\n"
    )
    return Document(doc_id=f"d{n:02d}", title=f"Report {n}", text=text, path=f"/in/d{n:02d}.txt", sha256=f"{n:064x}")


def _key(index: Index, chunk_id: int) -> tuple[str, int]:
    chunk = index.chunk(chunk_id)
    return chunk.doc_id, chunk.start


@pytest.fixture
def root(tmp_path):
    (tmp_path / "corpus").mkdir()
    for name, text in TINY_CORPUS.items():
        (tmp_path / "corpus" / name).write_text(text, encoding="utf-8")
    return tmp_path


def test_many_small_updates_rank_as_one_full_build(root, tmp_path):
    """Documents added one at a time, some removed and replaced on the way: BM25 scores, term
    weights and dense ranks equal those of one build of the same documents, and merging keeps
    the number of segments near log2 of the updates."""
    settings, embedder = make_settings(root), HashEmbedder()
    index = ensure_index(load_corpus(settings.corpus_dir), embedder, settings)
    docs = [_doc(n, topic) for n, topic in enumerate(TOPICS)]
    for doc in docs:
        index, report = update_index(settings, embedder, add=[doc], base=index)
        assert report.added == [doc.doc_id]
        assert len(index.segments) <= 5, [s.meta.n_chunks for s in index.segments]
    index, _ = update_index(settings, embedder, remove=["d03", "elm"], base=index)
    changed = _doc(5, "paper mill").model_copy(update={"sha256": "f" * 64})
    index, report = update_index(settings, embedder, add=[changed], base=index)
    assert report.replaced == ["d05"]

    full_settings = make_settings(tmp_path / "full", corpus=root / "corpus")
    kept = [d for d in load_corpus(settings.corpus_dir).documents if d.doc_id != "elm"]
    full = Index.build(Corpus(documents=kept + [d for d in docs if d.doc_id not in ("d03", "d05")] + [changed]), embedder, full_settings)
    assert sorted(index.documents) == sorted(full.documents)
    assert sorted((c.doc_id, c.start, c.text) for c in index.chunks) == sorted((c.doc_id, c.start, c.text) for c in full.chunks)

    for question in ["How many visitors did the paper mill count?", "ferry passengers", "benches painted at the tram line", "zebra"]:
        q_terms = terms(question)
        a_ids, a_scores = index.lexicon.top(q_terms, 10)
        b_ids, b_scores = full.lexicon.top(q_terms, 10)
        assert sorted(zip([_key(index, i) for i in a_ids.tolist()], np.round(a_scores, 4).tolist())) == sorted(
            zip([_key(full, i) for i in b_ids.tolist()], np.round(b_scores, 4).tolist())
        )
        for t in q_terms + ["unseen"]:
            assert index.lexicon.idf(t) == pytest.approx(full.lexicon.idf(t))
        q = embedder.encode_query(question)[None, :]
        a = index.chunk_store.search(q, 5)
        b = full.chunk_store.search(q, 5)
        assert np.allclose(a[0], b[0], atol=1e-5)  # the same scores; equal ones may come in either order
        assert sorted(zip(np.round(a[0][0], 4).tolist(), [_key(index, i) for i in a[1][0].tolist()])) == sorted(
            zip(np.round(b[0][0], 4).tolist(), [_key(full, i) for i in b[1][0].tolist()])
        )
    hits = Retriever(index, embedder, settings).search("How many visitors did the paper mill count?", 1)
    assert hits[0].chunk.doc_id == "d05" and "paper mill" in hits[0].chunk.text
    assert Index.load(settings.index_dir).chunks == index.chunks  # and the same from disk


def test_an_update_reads_no_old_segment_and_rewrites_none(root, monkeypatch):
    """`rag add` plans from the manifest: the old segment's files are neither read nor written."""
    settings, embedder = make_settings(root), HashEmbedder()
    first = Index.build(Corpus(documents=[_doc(n, topic) for n, topic in enumerate(TOPICS)]), embedder, settings)
    first.save(settings.index_dir)
    (old_name,) = [s.name for s in first.segments]
    folder = settings.index_dir / "segments" / old_name
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}
    reads = []
    real_load = Segment.load
    monkeypatch.setattr(Segment, "load", lambda self: (reads.append(self.name), real_load(self))[1])
    new = _doc(40, "paper mill")
    index, report = update_index(settings, embedder, add=[new])  # no base: as `rag add` in its own process
    assert report.added == ["d40"] and old_name not in reads
    assert [s.name for s in index.segments][0] == old_name and len(index.segments) == 2
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()} == before
    assert index.manifest.n_chunks == len(first.chunks) + index.segments[1].meta.n_chunks


def test_a_removed_document_leaves_search_and_statistics_at_once(root):
    settings, embedder = make_settings(root), HashEmbedder()
    index = ensure_index(load_corpus(settings.corpus_dir), embedder, settings)
    docs = [_doc(n, topic) for n, topic in enumerate(TOPICS[:6])]
    index, _ = update_index(settings, embedder, add=docs, base=index)
    big = index.segments[-1]
    (gauge,) = terms("gauge")  # a word only d04 has
    assert index.lexicon.idf(gauge) < index.lexicon.default_idf
    index, report = update_index(settings, embedder, remove=["d04"], base=index)
    assert "d04" not in index.documents and all(c.doc_id != "d04" for c in index.chunks)
    assert not any(index.chunk(i).doc_id == "d04" for i in index.lexicon.top(terms("rain gauge visitors"), 50)[0].tolist())
    q = embedder.encode_query("rain gauge")[None, :]
    ids = index.chunk_store.search(q, 100)[1][0]
    assert all(index.has_chunk(i) for i in ids.tolist() if i >= 0)
    assert index.chunk_store.count() == len(index.chunks) and index.sentence_store.count() == len(index.sentences)
    assert index.lexicon.idf(gauge) == index.lexicon.default_idf  # no live sentence has the word any more
    assert report.merged == 1 and big.name not in [s.name for s in index.segments]  # a small segment is rewritten at once


def test_lexicon_over_two_segments_equals_one_and_masks_rows():
    chunks = ["the llama farm keeps llamas", "the harbor ferry", "llama wool and llama milk", "ferry times", "nothing here"]
    sentences = chunks
    one = TermStats.of(chunks, sentences)
    a, b = TermStats.of(chunks[:2], sentences[:2]), TermStats.of(chunks[2:], sentences[2:])
    ids = np.arange(5, dtype=np.int64)
    live = np.ones(5, dtype=bool)
    whole = Lexicon([(one, ids, live, live)])
    split = Lexicon([(a, ids[:2], live[:2], live[:2]), (b, ids[2:], live[2:], live[2:])])
    for query in (["llama"], ["ferri", "llama"], ["harbor"], ["absent"]):
        x, y = whole.top(query, 5), split.top(query, 5)
        assert x[0].tolist() == y[0].tolist() and np.allclose(x[1], y[1])
    merged = Lexicon([(TermStats.concat([a, b]), ids, live, live)])
    assert merged.top(["llama"], 5)[0].tolist() == whole.top(["llama"], 5)[0].tolist()
    mask = np.array([True, True, False, True, True])
    masked = Lexicon([(one, ids, mask, mask)])
    without = TermStats.of([c for c, m in zip(chunks, mask) if m], [c for c, m in zip(chunks, mask) if m])
    rebuilt = Lexicon([(without, ids[mask], np.ones(4, dtype=bool), np.ones(4, dtype=bool))])
    for query in (["llama"], ["ferri"]):
        x, y = masked.top(query, 5), rebuilt.top(query, 5)
        assert x[0].tolist() == y[0].tolist() and np.allclose(x[1], y[1])
    assert masked.idf("llama") == pytest.approx(rebuilt.idf("llama"))
    assert 2 not in masked.top(["llama"], 5)[0].tolist()


def test_segmented_store_merges_by_score_and_hides_removed_rows():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((30, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    whole, parts = FaissStore(8), [FaissStore(8), FaissStore(8)]
    whole.add(np.arange(30), vectors)
    parts[0].add(np.arange(12), vectors[:12])
    parts[1].add(np.arange(12, 30), vectors[12:])
    view = SegmentedStore(parts, [0, 12], [np.array([3, 20]), np.array([], dtype=np.int64)], 8)
    # a removed id may be listed with either segment; both are hidden
    view = SegmentedStore(parts, [0, 12], [np.array([3]), np.array([20])], 8)
    assert view.count() == 28
    for q in vectors[[0, 3, 20, 29]]:
        scores, ids = view.search(q[None], 5)
        w_scores, w_ids = whole.search(q[None], 7)
        expect = [i for i in w_ids[0].tolist() if i not in (3, 20)][:5]
        assert ids[0].tolist() == expect
    assert np.allclose(view.get(np.array([29, 0, 13])), vectors[[29, 0, 13]])
    with pytest.raises(KeyError):
        view.get(np.array([20]))
    scores, ids = view.search(vectors[:1], 40)  # more than there are: padded
    assert (ids[0, 28:] == -1).all() and np.isinf(scores[0, 28:]).all() and len(set(ids[0, :28].tolist())) == 28


def test_the_app_follows_an_update_made_by_another_process(fake_pipeline, caplog):
    """A `rag add` beside the app: the next question sees the new version; an unusable version
    on disk is logged and the app keeps answering from the one it has."""
    pipeline = fake_pipeline(corpus={f"d{n:02d}.txt": _doc(n, topic).text for n, topic in enumerate(TOPICS)})
    first = pipeline.retriever.index
    update_index(pipeline.settings, pipeline.embedder, add=[_doc(40, "paper mill")])  # no base: as another process would
    assert pipeline.retriever.index is not first and "d40" in pipeline.retriever.index.documents
    assert pipeline.retriever.search("paper mill visitors", 1)[0].chunk.doc_id == "d40"
    assert all(a is b for a, b in zip(pipeline.retriever.index.segments, first.segments))  # old segments shared, not re-read

    other = pipeline.settings.model_copy(update={"chunk_size": 64})
    ensure_index(load_corpus(other.corpus_dir), pipeline.embedder, other, rebuild=True)  # built with other settings
    kept = pipeline.retriever.index
    assert "d40" in kept.documents
    assert "cannot be used" in caplog.text


def test_a_start_converts_only_files_that_changed(root, monkeypatch):
    """The corpus folder at start: unchanged files are hashed, not converted; a changed, new or
    deleted file is still noticed, and a rebuild still reads every file."""
    import rag.index.corpus
    from rag.index.manifest import indexed_files

    settings, embedder = make_settings(root), HashEmbedder()
    first = ensure_index(load_corpus(settings.corpus_dir), embedder, settings)
    converted = []
    real = rag.index.corpus.read_document
    monkeypatch.setattr(rag.index.corpus, "read_document", lambda path, limit, settings=None: (converted.append(path.name), real(path, limit, settings))[1])
    corpus = load_corpus(settings.corpus_dir, settings.max_file_bytes, indexed_files(settings.index_dir))
    assert converted == [] and sorted(corpus.unchanged) == ["elm.txt", "harbor.txt"]
    assert ensure_index(corpus, embedder, settings).chunks == first.chunks

    (root / "corpus" / "elm.txt").write_text(TINY_CORPUS["elm.txt"] + "The crossing got new lights.\n", encoding="utf-8")
    (root / "corpus" / "harbor.txt").unlink()
    (root / "corpus" / "tram.txt").write_text(_doc(3, "tram line").text, encoding="utf-8")
    corpus = load_corpus(settings.corpus_dir, settings.max_file_bytes, indexed_files(settings.index_dir))
    assert sorted(converted) == ["elm.txt", "tram.txt"] and corpus.unchanged == []
    index = ensure_index(corpus, embedder, settings)
    assert sorted(index.documents) == ["elm", "tram"] and any("lights" in c.text for c in index.chunks)

    converted.clear()
    corpus = load_corpus(settings.corpus_dir, settings.max_file_bytes, indexed_files(settings.index_dir))
    rebuilt = ensure_index(corpus, embedder, settings.model_copy(update={"chunk_size": 64}))  # other settings: a full rebuild
    assert sorted(rebuilt.documents) == ["elm", "tram"] and sorted(converted) == ["elm.txt", "tram.txt"]


def test_big_merges_are_left_to_compaction_which_changes_no_ranking(root):
    """An update merges only up to `inline_merge_chunks`; the merge it leaves is `compact_index`,
    one more atomic change after which every ranking is the same and fewer segments are searched."""
    from rag.index.manifest import compact_index

    settings, embedder = make_settings(root, inline_merge_chunks=3), HashEmbedder()
    index = Index.build(Corpus(documents=[_doc(n, topic) for n, topic in enumerate(TOPICS[:6])]), embedder, settings)
    index.save(settings.index_dir)
    index, report = update_index(settings, embedder, add=[_doc(n, t) for n, t in enumerate(TOPICS[6:], 6)], base=index)
    assert report.merged == 0 and report.merge_due and index.merge_due() and len(index.segments) == 2  # 6 + 6 chunks > 3
    question = "How many visitors did the kite festival count?"
    compacted, done = compact_index(settings, base=index)
    assert done.merged == 1 and len(compacted.segments) == 1 and not compacted.merge_due()
    for version_a, version_b in [(index, compacted)]:
        a, b = version_a.lexicon.top(terms(question), 20), version_b.lexicon.top(terms(question), 20)
        assert sorted(zip([_key(version_a, i) for i in a[0].tolist()], np.round(a[1], 4).tolist())) == sorted(
            zip([_key(version_b, i) for i in b[0].tolist()], np.round(b[1], 4).tolist())
        )
        q = embedder.encode_query(question)[None, :]
        a, b = version_a.chunk_store.search(q, 12), version_b.chunk_store.search(q, 12)  # every chunk: no tie at a cut
        assert sorted(zip(np.round(a[0][0], 4).tolist(), [_key(version_a, i) for i in a[1][0].tolist()])) == sorted(
            zip(np.round(b[0][0], 4).tolist(), [_key(version_b, i) for i in b[1][0].tolist()])
        )
    assert Retriever(compacted, embedder, settings).search(question, 1)[0].chunk.doc_id == "d10"
    assert Index.load(settings.index_dir).chunks == compacted.chunks
    assert compact_index(settings, base=compacted)[1].merged == 0  # nothing left to do


def test_the_app_merges_in_the_background_after_an_update(fake_pipeline):
    pipeline = fake_pipeline(corpus={f"d{n:02d}.txt": _doc(n, topic).text for n, topic in enumerate(TOPICS[:6])}, inline_merge_chunks=3)
    pipeline.retriever  # the index, loaded
    for n, topic in enumerate(TOPICS[6:], 6):
        (pipeline.settings.root / f"d{n:02d}.txt").write_text(_doc(n, topic).text, encoding="utf-8")
    report = pipeline.add_files([pipeline.settings.root / f"d{n:02d}.txt" for n in range(6, 12)])
    assert report.merge_due and len(report.added) == 6
    worker = pipeline._compactor
    assert worker is not None
    worker.join(60)
    assert len(pipeline.retriever.index.segments) == 1 and len(pipeline.retriever.index.documents) == 12
    assert pipeline.retriever.search("kite festival visitors", 1)[0].chunk.doc_id == "d10"
