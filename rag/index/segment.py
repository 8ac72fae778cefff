"""Segments: the immutable parts an index is made of (rag/index/manifest.py names them in its manifest).

A segment holds some documents, their chunks and sentences with offsets (its table), their BM25
term statistics (rag/index/bm25.py) and two vector stores, in one folder:
    segment.json            its counts, its id range and every file's sha256, written last
    table.json              documents (their text: the only source of offsets), chunks, sentences, chunk -> sentences
    terms.json, *_tf.npz    term statistics
    chunks/, sentences/     the stores, each saved by its kind (rag/store/)
It is written once and never changed, like a Lucene segment: `make_segment` chunks, embeds and
counts new documents into one; `merge_segments` copies the live rows of several into one (vectors
and statistics copied, nothing embedded again).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from .bm25 import TermStats
from .chunking import chunk_document
from ..config import Settings
from ..env import file_sha256
from .embedding import Encoder
from ..store import StoreError, VectorStore, new_store, open_store
from ..types import Chunk, Document, Sentence

FORMAT_VERSION = 1  # of a segment's files
EMBED_BATCH = 64  # texts per embedding call: the progress bar moves at least this often



class StaleIndex(Exception):
    """The index on disk cannot be used as-is; the message says why (and so why it is rebuilt)."""


class SegmentMeta(BaseModel):
    format_version: int
    name: str
    store: str
    dim: int
    n_documents: int
    n_chunks: int
    n_sentences: int
    first_chunk_id: int = Field(description="every chunk id of the segment is at least this")
    first_sentence_id: int
    files: dict[str, str]  # path in the segment -> sha256, to catch a truncated or swapped file


class Table(BaseModel):
    documents: list[Document]
    chunks: list[Chunk]
    sentences: list[Sentence]
    chunk_sentences: list[list[int]] = Field(description="per chunk, in table order: ids of the sentences it overlaps")


class Segment:
    """One immutable segment: its table, BM25 statistics and two stores.

    Opened from its folder it reads only segment.json; the rest is read (and checked against
    the hashes) on first use, so an update that does not touch a segment never reads it.
    """

    def __init__(self, meta: SegmentMeta, folder: Path | None = None, table: Table | None = None,
                 stats: TermStats | None = None, stores: tuple[VectorStore, VectorStore] | None = None) -> None:
        self.meta = meta
        self.name = meta.name
        self.folder = folder
        self._table, self._stats, self._stores = table, stats, stores
        self._lock = threading.Lock()

    @classmethod
    def new(cls, kind: str, dim: int, table: Table, stats: TermStats, chunk_vectors: np.ndarray, sentence_vectors: np.ndarray,
            first_chunk_id: int, first_sentence_id: int) -> "Segment":
        """A segment in memory (saved by `save`), its stores filled with the given rows."""
        chunk_store, sentence_store = new_store(kind, dim), new_store(kind, dim)
        chunk_store.add(np.asarray([c.chunk_id for c in table.chunks], dtype=np.int64), chunk_vectors)
        sentence_store.add(np.asarray([s.sentence_id for s in table.sentences], dtype=np.int64), sentence_vectors)
        meta = SegmentMeta(
            format_version=FORMAT_VERSION, name=f"seg-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}", store=kind, dim=dim,
            n_documents=len(table.documents), n_chunks=len(table.chunks), n_sentences=len(table.sentences),
            first_chunk_id=first_chunk_id, first_sentence_id=first_sentence_id, files={},
        )
        return cls(meta, None, table, stats, (chunk_store, sentence_store))

    @classmethod
    def open(cls, folder: Path, store: str, dim: int) -> "Segment":
        """The segment saved in `folder`, which must hold vectors of `store` kind and size `dim`;
        only segment.json is read now."""
        try:
            meta = SegmentMeta.model_validate_json((folder / "segment.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, ValidationError) as err:
            raise StaleIndex(f"segment {folder.name} is missing or unreadable ({err.__class__.__name__})") from err
        if (meta.format_version, meta.name, meta.store, meta.dim) != (FORMAT_VERSION, folder.name, store, dim):
            raise StaleIndex(f"segment {folder.name} does not belong to this index")
        return cls(meta, folder)

    def save(self, segments_dir: Path) -> None:
        """Write the segment's folder; segment.json (with every file's hash) last, so a folder
        without it is a leftover of a killed write."""
        assert self._table is not None and self._stats is not None and self._stores is not None
        folder = segments_dir / self.name
        folder.mkdir(parents=True)
        self._stores[0].save(folder / "chunks")
        self._stores[1].save(folder / "sentences")
        (folder / "table.json").write_text(self._table.model_dump_json(), encoding="utf-8")
        self._stats.save(folder)
        files = {p.relative_to(folder).as_posix(): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file() and _checked(p)}
        self.meta = self.meta.model_copy(update={"files": files})
        write_atomic(folder / "segment.json", self.meta.model_dump_json(indent=1))
        fsync_dir(folder)
        self.folder = folder

    def load(self) -> "Segment":
        """Read everything now (once). Raises StaleIndex for missing, damaged or inconsistent files."""
        with self._lock:
            if self._stores is not None:
                return self
            folder = self.folder
            assert folder is not None
            try:
                for name, digest in self.meta.files.items():
                    path = folder / name
                    if not path.exists() or file_sha256(path) != digest:
                        raise StaleIndex(f"{self.name}/{name} is missing, truncated or changed since it was written")
                table = Table.model_validate_json((folder / "table.json").read_text(encoding="utf-8"))
                stats = TermStats.load(folder)
            except (ValidationError, ValueError, OSError) as err:
                raise StaleIndex(f"corrupt index files in {self.name} ({err.__class__.__name__}: {err})") from err
            m = self.meta
            if (len(table.documents), len(table.chunks), len(table.sentences)) != (m.n_documents, m.n_chunks, m.n_sentences):
                raise StaleIndex(f"the chunk table of {self.name} disagrees with its segment.json")
            if len(table.chunk_sentences) != len(table.chunks):
                raise StaleIndex(f"the chunk -> sentences map of {self.name} disagrees with its chunk table")
            if stats.chunk_tf.shape[0] != m.n_chunks or stats.sentence_tf.shape[0] != m.n_sentences:
                raise StaleIndex(f"the term statistics of {self.name} disagree with its chunk table")
            _check_spans(table, m)
            try:
                stores = (open_store(m.store, folder / "chunks", m.dim), open_store(m.store, folder / "sentences", m.dim))
            except (ValueError, StoreError, OSError) as err:
                raise StaleIndex(f"corrupt index files ({err.__class__.__name__}: {err})") from err
            if stores[0].count() != m.n_chunks or stores[1].count() != m.n_sentences:
                raise StaleIndex("the chunk table disagrees with the vectors")
            self._table, self._stats, self._stores = table, stats, stores
            return self

    @property
    def table(self) -> Table:
        return self.load()._table  # type: ignore[return-value]

    @property
    def stats(self) -> TermStats:
        return self.load()._stats  # type: ignore[return-value]

    @property
    def chunk_store(self) -> VectorStore:
        return self.load()._stores[0]  # type: ignore[index]

    @property
    def sentence_store(self) -> VectorStore:
        return self.load()._stores[1]  # type: ignore[index]

    @property
    def loaded(self) -> bool:
        return self._stores is not None

    def close(self) -> None:
        for store in self._stores or ():
            if hasattr(store, "close"):
                store.close()

    def drop_if_unsaved(self) -> None:
        """A segment made in memory and merged before it was saved: free its stores' rows (on a
        server they would otherwise stay as a collection nothing names)."""
        if self.folder is None and self._stores is not None:
            for store in self._stores:
                store.drop()
            self.close()


def make_segment(
    documents: list[Document], embedder: Encoder, settings: Settings, kind: str, first_chunk: int, first_sentence: int, progress: bool, dim: int | None = None
) -> Segment:
    """Chunk `documents` (ids from the given first ones), embed their chunks and sentences, and
    count their terms: a new segment in memory.

    Embeds in batches of EMBED_BATCH; with `progress`, a bar counts chunks (chunks/s) and shows
    files done and files/s.
    """
    chunks: list[Chunk] = []
    sentences: list[Sentence] = []
    chunk_sentences: list[list[int]] = []
    per_doc: list[tuple[int, int]] = []
    for doc in documents:
        doc_chunks, doc_sentences = chunk_document(
            doc.doc_id, doc.text, settings.chunk_size, settings.chunk_overlap, embedder.count_tokens, first_chunk + len(chunks)
        )
        base = first_sentence + len(sentences)
        doc_sentences = [s.model_copy(update={"sentence_id": base + n}) for n, s in enumerate(doc_sentences)]
        chunk_sentences += [[s.sentence_id for s in doc_sentences if s.start < c.end and s.end > c.start] for c in doc_chunks]
        chunks.extend(doc_chunks)
        sentences.extend(doc_sentences)
        per_doc.append((len(doc_chunks), len(doc_sentences)))
    if chunks or sentences:
        chunk_vectors, sentence_vectors = _embed_documents(embedder, documents, chunks, sentences, per_doc, progress)
    else:
        chunk_vectors = sentence_vectors = np.zeros((0, dim if dim is not None else embedder.dim), dtype=np.float32)
    table = Table(documents=documents, chunks=chunks, sentences=sentences, chunk_sentences=chunk_sentences)
    stats = TermStats.of([c.text for c in chunks], [s.text for s in sentences])
    return Segment.new(kind, int(chunk_vectors.shape[1]), table, stats, chunk_vectors, sentence_vectors, first_chunk, first_sentence)


def _embed_documents(embedder, documents, chunks, sentences, per_doc, progress) -> tuple[np.ndarray, np.ndarray]:
    texts = [c.text for c in chunks] + [s.text for s in sentences]
    if not progress or not texts:
        vectors = embedder.encode(texts) if texts else np.zeros((0, embedder.dim), dtype=np.float32)
        return vectors[: len(chunks)], vectors[len(chunks) :]
    from tqdm import tqdm

    # Texts in file order (each file's chunks, then its sentences) so "files done" is true.
    order: list[int] = []
    ends: list[int] = []  # position in `order` where each file ends
    c0 = s0 = 0
    for n_c, n_s in per_doc:
        order += list(range(c0, c0 + n_c)) + [len(chunks) + s0 + i for i in range(n_s)]
        ends.append(len(order))
        c0, s0 = c0 + n_c, s0 + n_s
    out = np.zeros((len(texts), embedder.dim), dtype=np.float32)
    done_files, start = 0, time.perf_counter()
    with tqdm(total=len(chunks), desc=f"Embedding {len(documents)} files", unit="chunk") as bar:
        for i in range(0, len(order), EMBED_BATCH):
            part = order[i : i + EMBED_BATCH]
            out[part] = embedder.encode([texts[j] for j in part])
            bar.update(sum(1 for j in part if j < len(chunks)))
            while done_files < len(ends) and ends[done_files] <= i + len(part):
                done_files += 1
            bar.set_postfix_str(f"{done_files}/{len(documents)} files, {done_files / max(time.perf_counter() - start, 1e-9):.1f} files/s")
    return out[: len(chunks)], out[len(chunks) :]


def live_rows(table: Table, gone: set[str]) -> tuple[np.ndarray, np.ndarray]:
    """Which of a segment's chunk and sentence rows belong to documents not in `gone`: two boolean masks."""
    if not gone:
        return np.ones(len(table.chunks), dtype=bool), np.ones(len(table.sentences), dtype=bool)
    chunks = np.fromiter((c.doc_id not in gone for c in table.chunks), dtype=bool, count=len(table.chunks))
    sentences = np.fromiter((s.doc_id not in gone for s in table.sentences), dtype=bool, count=len(table.sentences))
    return chunks, sentences


def merge_segments(parts: list[Segment], removed: list[set[str]], kind: str, dim: int) -> Segment:
    """One new segment with the live rows of `parts` (adjacent, in id order): tables, statistics
    and vectors copied, nothing embedded again."""
    documents, chunks, sentences, chunk_sentences, stats = [], [], [], [], []
    chunk_vectors, sentence_vectors = [], []
    for seg, gone in zip(parts, removed):
        t = seg.table
        keep_c, keep_s = live_rows(t, gone)
        documents += [d for d in t.documents if d.doc_id not in gone]
        kept_chunks = [c for c, k in zip(t.chunks, keep_c) if k]
        kept_sentences = [s for s, k in zip(t.sentences, keep_s) if k]
        chunks += kept_chunks
        sentences += kept_sentences
        chunk_sentences += [sids for sids, k in zip(t.chunk_sentences, keep_c) if k]
        stats.append(seg.stats.rows(np.flatnonzero(keep_c), np.flatnonzero(keep_s)))
        chunk_vectors.append(seg.chunk_store.get(np.asarray([c.chunk_id for c in kept_chunks], dtype=np.int64)))
        sentence_vectors.append(seg.sentence_store.get(np.asarray([s.sentence_id for s in kept_sentences], dtype=np.int64)))
    table = Table(documents=documents, chunks=chunks, sentences=sentences, chunk_sentences=chunk_sentences)
    return Segment.new(
        kind, dim, table, TermStats.concat(stats), np.concatenate(chunk_vectors), np.concatenate(sentence_vectors),
        parts[0].meta.first_chunk_id, parts[0].meta.first_sentence_id,
    )


def _check_spans(table: Table, meta: SegmentMeta) -> None:
    """Every chunk and sentence must quote its document at its offsets, with ids increasing
    from the segment's first ones: a table from elsewhere would cite text that is not where it says."""
    texts = {d.doc_id: d.text for d in table.documents}
    for kind, rows, id_of, first in (
        ("chunk", table.chunks, lambda r: r.chunk_id, meta.first_chunk_id),
        ("sentence", table.sentences, lambda r: r.sentence_id, meta.first_sentence_id),
    ):
        last = first - 1
        for row in rows:
            doc = texts.get(row.doc_id)
            if not last < id_of(row) or doc is None or doc[row.start : row.end] != row.text:
                raise StaleIndex(f"the chunk table disagrees with its documents ({kind} {id_of(row)} of {row.doc_id})")
            last = id_of(row)


def _checked(path: Path) -> bool:
    """Files a segment hashes: all but a database folder's internals (Milvus Lite rewrites them)."""
    return not any(part.endswith(".db") for part in path.parts[:-1])


def write_atomic(path: Path, text: str) -> None:
    """Write a file whole or not at all: a temporary file renamed over it."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def fsync_dir(path: Path) -> None:
    for file in [path, *path.iterdir()] if path.is_dir() else [path]:
        try:
            fd = os.open(file, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass
