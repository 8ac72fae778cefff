"""Incremental index updates: add, replace, remove, list; bad files; a kill mid-update (hash embedder, tmp dirs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, TINY_CORPUS, make_settings
from fakes import HashEmbedder
from rag.index.corpus import CorpusProblem, load_corpus, read_document, safe_file_name
from rag.index.manifest import CURRENT, Index, ensure_index, migrate_index, update_index
from rag.index.retrieval import Retriever
from test_ingest import encrypt_pdf, make_docx, make_pdf, zip_bytes

LLAMAS = "Llama farm news\nThe llama farm near Oslo keeps 42 llamas. Farmer Ingrid Dahl shears them every June.\n"


@pytest.fixture
def tiny(tmp_path):
    """(settings, embedder, index) over TINY_CORPUS in tmp_path/root; outside files go in tmp_path/in."""
    root = tmp_path / "root"
    (root / "corpus").mkdir(parents=True)
    for name, text in TINY_CORPUS.items():
        (root / "corpus" / name).write_text(text, encoding="utf-8")
    (tmp_path / "in").mkdir()
    settings = make_settings(root)
    embedder = HashEmbedder()
    index = ensure_index(load_corpus(settings.corpus_dir), embedder, settings)
    return settings, embedder, index


def _docs(*paths: Path, max_bytes: int = 5_000_000):
    docs, problems = [], []
    for p in paths:
        doc, found = read_document(p, max_bytes)
        problems += found
        if doc:
            docs.append(doc)
    return docs, problems


def _top_doc(index: Index, embedder, settings, question: str) -> str:
    return Retriever(index, embedder, settings).search(question, 1)[0].chunk.doc_id


def test_add_list_remove_round_trip(tiny, tmp_path, monkeypatch, capsys):
    settings, embedder, before = tiny
    (tmp_path / "in" / "llamas.txt").write_text(LLAMAS, encoding="utf-8")
    docs, _ = _docs(tmp_path / "in" / "llamas.txt")
    index, report = update_index(settings, embedder, add=docs)
    assert report.added == ["llamas"] and not report.problems
    assert set(index.documents) == {"elm", "harbor", "llamas"}
    assert _top_doc(index, embedder, settings, "How many llamas does the farm keep?") == "llamas"
    old_ids = [c.chunk_id for c in before.chunks]
    assert [c.chunk_id for c in index.chunks if c.doc_id != "llamas"] == old_ids  # nothing renumbered
    assert min(c.chunk_id for c in index.chunks if c.doc_id == "llamas") == before.manifest.next_chunk_id
    assert Index.load(settings.index_dir).chunks == index.chunks

    monkeypatch.setenv("RAG_INDEX_DIR", str(settings.index_dir))
    from rag.serve.cli import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "llamas" in out and "3 documents" in out

    removed, report = update_index(settings, embedder, remove=["elm"])
    assert report.removed == ["elm"] and set(removed.documents) == {"harbor", "llamas"}
    assert removed.chunk_store.count() == len(removed.chunks) and removed.sentence_store.count() == len(removed.sentences)
    elm_ids = np.asarray([c.chunk_id for c in before.chunks if c.doc_id == "elm"])
    with pytest.raises(KeyError):
        removed.chunk_store.get(elm_ids)
    assert not any(h.chunk.doc_id == "elm" for h in Retriever(removed, embedder, settings).search("zebra crossing Elm Street", 5))
    # the corpus file is still there, but a removed document stays out at the next start
    again = ensure_index(load_corpus(settings.corpus_dir), embedder, settings)
    assert "elm" not in again.documents
    with pytest.raises(KeyError, match="not in the index: nope"):
        update_index(settings, embedder, remove=["nope"])


def test_only_new_or_changed_files_are_embedded(tiny, caplog):
    settings, embedder, first = tiny
    (settings.corpus_dir / "llamas.txt").write_text(LLAMAS, encoding="utf-8")
    embedded = embedder.encoded
    second = ensure_index(load_corpus(settings.corpus_dir), embedder, settings)
    new_rows = [c for c in second.chunks if c.doc_id == "llamas"] + [s for s in second.sentences if s.doc_id == "llamas"]
    assert embedder.encoded - embedded == len(new_rows) > 0  # only the new file
    assert "updating because corpus changed: llamas.txt" in caplog.text and "rebuilding" not in caplog.text

    elm = settings.corpus_dir / "elm.txt"
    elm.write_text(elm.read_text() + "The crossing got new lights in June.\n", encoding="utf-8")
    embedded = embedder.encoded
    third = ensure_index(load_corpus(settings.corpus_dir), embedder, settings)
    changed = [c for c in third.chunks if c.doc_id == "elm"] + [s for s in third.sentences if s.doc_id == "elm"]
    assert embedder.encoded - embedded == len(changed)
    assert any("lights" in c.text for c in third.chunks)
    assert min(c.chunk_id for c in third.chunks if c.doc_id == "elm") >= second.manifest.next_chunk_id  # new ids, never reused

    (settings.corpus_dir / "harbor.txt").unlink()
    fourth = ensure_index(load_corpus(settings.corpus_dir), embedder, settings)
    assert "harbor" not in fourth.documents and fourth.chunk_store.count() == len(fourth.chunks)

    embedded = embedder.encoded
    assert ensure_index(load_corpus(settings.corpus_dir), embedder, settings).chunks == fourth.chunks
    assert embedder.encoded == embedded  # nothing changed, nothing embedded


def test_a_question_on_the_old_index_is_unaffected_by_an_update(tiny, tmp_path):
    """Indexes are never changed in place: an update writes a new build from a copy of the stores."""
    settings, embedder, old = tiny
    counts = (old.chunk_store.count(), old.sentence_store.count())
    (tmp_path / "in" / "llamas.txt").write_text(LLAMAS, encoding="utf-8")
    new, _ = update_index(settings, embedder, add=_docs(tmp_path / "in" / "llamas.txt")[0], remove=["harbor"])
    assert (old.chunk_store.count(), old.sentence_store.count()) == counts
    hits = Retriever(old, embedder, settings).search("ferry passengers", 2)
    assert hits[0].chunk.doc_id == "harbor"
    assert "harbor" not in new.documents and "llamas" in new.documents


def test_same_file_again_is_unchanged_and_a_copy_is_a_duplicate(tiny, tmp_path):
    settings, embedder, _ = tiny
    path = tmp_path / "in" / "llamas.txt"
    path.write_text(LLAMAS, encoding="utf-8")
    update_index(settings, embedder, add=_docs(path)[0])
    embedded = embedder.encoded
    _, report = update_index(settings, embedder, add=_docs(path)[0])
    assert report.unchanged == ["llamas.txt"] and embedder.encoded == embedded
    copy = tmp_path / "in" / "copy-of-llamas.md"
    copy.write_text(LLAMAS.replace("\n", "\r\n"), encoding="utf-8")
    _, report = update_index(settings, embedder, add=_docs(copy)[0])
    assert [str(p) for p in report.problems] == ["copy-of-llamas.md: skipped (duplicate: same content as llamas)"]
    path.write_text(LLAMAS + "They also keep two alpacas.\n", encoding="utf-8")
    index, report = update_index(settings, embedder, add=_docs(path)[0])
    assert report.replaced == ["llamas"] and "alpacas" in index.documents["llamas"].text


def test_pdf_pages_reach_the_citation(tiny, tmp_path):
    from rag.answering.citations import to_citation
    from rag.types import Evidence

    settings, embedder, _ = tiny
    pdf = tmp_path / "in" / "report.pdf"
    pdf.write_bytes(make_pdf([["Annual report of the glacier survey."], ["The glacier lost 12 metres of ice in 2023."]], title="Glacier report"))
    index, report = update_index(settings, embedder, add=_docs(pdf)[0])
    assert report.added == ["report"] and index.documents["report"].title == "Glacier report"
    retriever = Retriever(index, embedder, settings)
    best = retriever.evidence("How much ice did the glacier lose?", retriever.search("How much ice did the glacier lose?", 2), 1)[0]
    assert isinstance(best, Evidence) and "12 metres" in best.sentence.text
    assert to_citation(1, best, index.documents["report"]).page == 2


def _bad_files(folder: Path) -> dict[str, str]:
    """File name -> the reason its message must give."""
    good = make_pdf([["A fine page of text about rivers."]])
    files = {
        "corrupt.pdf": (b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage", "damaged PDF"),
        "locked.pdf": (encrypt_pdf(good, "secret"), "encrypted PDF: it needs a password"),
        "scan.pdf": (make_pdf([None, None]), "no text found by OCR"),
        "empty.txt": (b"", "empty"),
        "huge.txt": (b"word " * 7000, "over the 30000-byte limit"),
        "bomb.docx": (zip_bytes({"[Content_Types].xml": b"<Types/>", "word/document.xml": b"\0" * (20 * 1024 * 1024)}), "zip bomb"),
        "scripts.html": (b"<html><head><script>var a = 1;</script></head><body><script>alert('x')</script><style>p{}</style></body></html>", "no extractable text"),
        "photo.png": (b"\x89PNG\r\n\x1a\n", "not a readable image"),
    }
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    return {name: reason for name, (_, reason) in files.items()}


def test_every_bad_file_is_named_with_its_reason_and_the_index_is_intact(tiny, tmp_path):
    settings, embedder, before = tiny
    reasons = _bad_files(tmp_path / "in")
    (tmp_path / "in" / "llamas.txt").write_text(LLAMAS, encoding="utf-8")
    docs, problems = _docs(*sorted((tmp_path / "in").iterdir()), max_bytes=30_000)
    index, report = update_index(settings, embedder, add=docs)
    messages = {p.name: str(p) for p in problems + report.problems}
    assert set(messages) == set(reasons), messages
    for name, reason in reasons.items():
        assert messages[name].startswith(f"{name}: skipped (") and reason in messages[name], messages[name]
    assert report.added == ["llamas"]  # the good file went in despite the bad ones
    loaded = Index.load(settings.index_dir)
    assert [c for c in loaded.chunks if c.doc_id != "llamas"] == before.chunks


@pytest.mark.parametrize(
    ("name", "safe"),
    [("../../etc/passwd", "passwd"), ("..\\..\\win.ini", "win.ini"), ("/abs/path/report.pdf", "report.pdf"), (".hidden.txt", "hidden.txt"),
     ("a\x00b.txt", "ab.txt"), ("..", "upload"), ("", "upload"), ("ok name (1).md", "ok name (1).md")],
)
def test_upload_names_are_sanitized(name, safe):
    assert safe_file_name(name) == safe


KILL_SCRIPT = """
import sys, time
sys.path[:0] = [{tests!r}]
from fakes import HashEmbedder
from conftest import make_settings
from rag.index.corpus import read_document
from rag.index.manifest import update_index
from pathlib import Path

class Slow(HashEmbedder):
    def encode(self, texts, show_progress=False):
        print("embedding", flush=True)
        time.sleep(0.5)
        return super().encode(texts)

settings = make_settings(Path({root!r}))
docs = [read_document(p, 10**7)[0] for p in sorted(Path({src!r}).iterdir())]
update_index(settings, Slow(), add=docs, remove=["harbor"])
print("done", flush=True)
"""


def test_a_kill_during_add_leaves_the_old_index_usable(tiny, tmp_path):
    settings, embedder, before = tiny
    for n in range(20):
        (tmp_path / "in" / f"doc{n}.txt").write_text(f"Document {n}\n" + LLAMAS.replace("42", str(100 + n)), encoding="utf-8")
    script = KILL_SCRIPT.format(tests=str(REPO / "tests"), root=str(settings.root), src=str(tmp_path / "in"))
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    live = (settings.index_dir / CURRENT).resolve()
    assert proc.stdout.readline().strip() == "embedding"  # mid-update: `current` not flipped
    assert (settings.index_dir / CURRENT).resolve() == live
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    half = settings.index_dir / "segments" / "seg-killed-while-writing"  # as a kill after the embedding leaves it
    (half / "chunks").mkdir(parents=True)
    (half / "chunks" / "vectors.faiss").write_bytes(b"half")
    loaded = Index.load(settings.index_dir)
    assert loaded.chunks == before.chunks and set(loaded.documents) == {"elm", "harbor"}
    assert Retriever(loaded, embedder, settings).search("ferry passengers", 1)[0].chunk.doc_id == "harbor"
    # the next update works and clears the leftover
    index, report = update_index(settings, embedder, add=_docs(tmp_path / "in" / "doc0.txt")[0])
    assert report.added == ["doc0"]
    assert sorted(p.name for p in settings.index_dir.iterdir()) == sorted([CURRENT, ".lock", "segments", (settings.index_dir / CURRENT).resolve().name])
    assert sorted(p.name for p in (settings.index_dir / "segments").iterdir()) == sorted(r.name for r in index.manifest.segments)


def _milvus_round_trip(settings, embedder, before: Index, tmp_path) -> Index:
    """After `migrate` to Milvus: the index loads with the same chunks and search results, takes
    an update (llamas added, elm removed) and migrates back to FAISS; returns the FAISS index."""
    loaded = Index.load(settings.index_dir)
    assert loaded.manifest.store == "milvus" and loaded.chunks == before.chunks
    q = embedder.encode_query("ferry passengers")
    assert (loaded.chunk_store.search(q[None], 3)[1] == before.chunk_store.search(q[None], 3)[1]).all()
    loaded.close()
    (tmp_path / "in" / "llamas.txt").write_text(LLAMAS, encoding="utf-8")
    index, report = update_index(settings, embedder, add=_docs(tmp_path / "in" / "llamas.txt")[0], remove=["elm"])
    assert report.added == ["llamas"] and index.chunk_store.count() == len(index.chunks)
    assert Retriever(index, embedder, settings).search("How many llamas?", 1)[0].chunk.doc_id == "llamas"
    index.close()
    back = migrate_index(settings, "faiss")
    assert back.manifest.store == "faiss" and set(back.documents) == {"harbor", "llamas"}
    return back


def test_milvus_lite_index_updates_and_migrates(tiny, tmp_path):
    """The same updates on Milvus Lite, and `migrate` from FAISS to Milvus and back (for real)."""
    settings, embedder, before = tiny
    moved = migrate_index(settings, "milvus")
    segment = settings.index_dir / "segments" / moved.manifest.segments[0].name
    assert moved.manifest.store == "milvus" and (segment / "chunks" / "milvus.db").is_dir()
    moved.close()
    _milvus_round_trip(settings, embedder, before, tmp_path)


# Milvus servers the index is tested on: milvus-lite's gRPC server and a real Milvus 2.3.5 standalone.
MILVUS_SERVERS = ["milvus_server", pytest.param("milvus_standalone", marks=pytest.mark.slow)]


@pytest.fixture(params=MILVUS_SERVERS)
def milvus_uri(request) -> str:
    return request.getfixturevalue(request.param)


def server_collections(version: Index) -> set[str]:
    """The server collections that an index version's segments use."""
    return {store.collection for seg in version.segments for store in (seg.chunk_store, seg.sentence_store)}


def test_migrate_to_a_milvus_server_and_back(tiny, tmp_path, milvus_standalone, monkeypatch):
    """`migrate` from FAISS into collections on a real Milvus server (RAG_MILVUS_URI), an update
    there, and back. (Not on milvus-lite's server too: pymilvus 3 keeps an idle shared connection
    per URI, which that server's gRPC then refuses with "Too many pings" in the next test.)"""
    from pymilvus import MilvusClient

    settings, embedder, before = tiny
    milvus_uri = milvus_standalone
    monkeypatch.setenv("RAG_MILVUS_URI", milvus_uri)
    client = MilvusClient(uri=milvus_uri)
    others = set(client.list_collections())  # the server is shared with other tests
    moved = migrate_index(settings, "milvus")
    segment = settings.index_dir / "segments" / moved.manifest.segments[0].name
    assert moved.manifest.store == "milvus" and not (segment / "chunks" / "milvus.db").exists()
    assert json.loads((segment / "chunks" / "milvus.json").read_text())["uri"] == milvus_uri
    assert set(client.list_collections()) - others == server_collections(moved)
    moved.close()
    back = _milvus_round_trip(settings, embedder, before, tmp_path)
    assert Retriever(back, embedder, settings).search("How many llamas?", 1)[0].chunk.doc_id == "llamas"
    client.close()


SERVER_ADD_SCRIPT = """
import sys
sys.path[:0] = [{tests!r}]
from fakes import HashEmbedder
from conftest import make_settings
from rag.index.corpus import read_document
from rag.index.manifest import update_index
from pathlib import Path

settings = make_settings(Path({root!r}), store="milvus")
doc = read_document(Path({path!r}), 10**7)[0]
index, report = update_index(settings, HashEmbedder(), add=[doc])
print(",".join(report.added), index.manifest.n_chunks, flush=True)
"""


def test_an_index_on_a_milvus_server_is_shared_by_two_processes(tmp_path, milvus_uri, monkeypatch):
    """With RAG_MILVUS_URI set, the segments' stores are collections on the server: a second
    process adds a document while this one holds the index open (Milvus Lite would refuse); the
    open version keeps working (the segments it reads outlive it by one change), this process then
    sees the new one, and collections of segments no version needs are dropped from the server."""
    from pymilvus import MilvusClient

    monkeypatch.setenv("RAG_MILVUS_URI", milvus_uri)
    root = tmp_path / "root"
    (root / "corpus").mkdir(parents=True)
    for name, text in TINY_CORPUS.items():
        (root / "corpus" / name).write_text(text, encoding="utf-8")
    settings, embedder = make_settings(root, store="milvus"), HashEmbedder()
    client = MilvusClient(uri=milvus_uri)
    others = set(client.list_collections())  # the server is shared with other tests
    index = ensure_index(load_corpus(settings.corpus_dir), embedder, settings)
    ours = lambda: sorted(set(client.list_collections()) - others)  # noqa: E731
    assert len(ours()) == 2 and index.chunk_store.stores[0].uri == milvus_uri
    held = Retriever(index, embedder, settings)
    assert held.search("ferry passengers", 1)[0].chunk.doc_id == "harbor"

    (tmp_path / "in" ).mkdir()
    (tmp_path / "in" / "llamas.txt").write_text(LLAMAS, encoding="utf-8")
    script = SERVER_ADD_SCRIPT.format(tests=str(REPO / "tests"), root=str(root), path=str(tmp_path / "in" / "llamas.txt"))
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO), "RAG_MILVUS_URI": milvus_uri})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[0] == "llamas"
    assert held.search("ferry passengers", 1)[0].chunk.doc_id == "harbor"  # the open index is untouched

    now = Index.load(settings.index_dir, reuse=index)
    assert set(now.documents) == {"elm", "harbor", "llamas"}
    assert Retriever(now, embedder, settings).search("How many llamas does the farm keep?", 1)[0].chunk.doc_id == "llamas"
    assert set(ours()) == server_collections(now) | server_collections(index)  # the merged-away segment stays one change
    removed, report = update_index(settings, embedder, remove=["llamas"], base=now)
    assert set(ours()) == server_collections(removed) | server_collections(now) and "llamas" not in removed.documents
    assert not server_collections(index) & set(ours()) - server_collections(now)  # two changes old: dropped
    removed.close()
    client.close()
