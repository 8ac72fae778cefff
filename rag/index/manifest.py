"""The index: immutable segments (tables, vectors, BM25 statistics) plus a manifest naming them.

Layout under index/:
    current -> build-<time>-<pid>/     a symlink, flipped atomically when an update is complete
    build-.../manifest.json           format, store kind, embedding model, chunk settings, the
                                      corpus files' hashes, every document (a catalogue), the
                                      segments in id order and the documents removed from each
    segments/<name>/segment.json      one segment: its counts, id range and files' sha256
    segments/<name>/table.json        its documents (their text: the only source of offsets),
                                      chunks, sentences and chunk -> sentences map
    segments/<name>/terms.json, *_tf.npz   its BM25 statistics (rag/index/bm25.py)
    segments/<name>/chunks/, sentences/    its two vector stores, each saved by its store kind
    .lock                             held by the one process changing the index

A segment is written once and never changed, like a Lucene segment. Adding documents writes a
new segment holding only them; removing one records its doc id in the manifest, and its rows
are left out of every view, search and BM25 count from then on. So an update costs the new
documents' embedding plus a manifest, not a copy of the index. Small segments are merged as they
pile up (each new one is merged into the one before while it is at least half that one's
size, which keeps about log2(n) segments), and a segment is rewritten without its removed
documents once they are a fifth of it; both copy vectors and statistics, and never re-embed.
An update does such work itself only up to `inline_merge_chunks`, so adding a file stays
quick; a bigger merge (about once per doubling of the index) is `compact_index`, its own
change, which the app runs in the background and `rag add` right after the add.

Every change writes its segments (segment.json last), then a new build folder with the
manifest, and only then flips `current`; all under an exclusive lock. A kill at any
point leaves the previous manifest and its segments untouched; the next change removes what
the killed one left (old builds and segments no manifest names).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from .bm25 import Lexicon
from ..config import Settings
from .corpus import Corpus, CorpusProblem, collection_of, content_key, corpus_name
from .embedding import EmbeddingModel, Encoder
from .furniture import furniture
from .segment import Segment, StaleIndex, Table, fsync_dir, live_rows, make_segment, merge_segments, write_atomic
from ..store.segments import SegmentedStore
from ..text import ANALYSER_VERSION
from ..types import DEFAULT_COLLECTION, Chunk, Document, Sentence

if TYPE_CHECKING:
    from .scope import IndexView

__all__ = [
    "CURRENT", "Index", "Manifest", "Segment", "StaleIndex", "Table", "UpdateReport",
    "compact_index", "ensure_index", "indexed_files", "migrate_index", "update_index",
]

log = logging.getLogger(__name__)

DEFAULT_STORE = "faiss"  # a new index's store when settings.store is None
FORMAT_VERSION = 4  # of the manifest; v4: segments (rag/index/segment.py); v3: one table and store pair per build
CURRENT = "current"
LOCK = ".lock"
SEGMENTS = "segments"
STORES = ("chunks", "sentences")
MERGE_RATIO = 0.5  # merge the newest segment into the one before while it is at least this share of it
COMPACT_SHARE = 0.2  # rewrite a segment without its removed documents once they are this share of its chunks
VIEWS = 16  # collection scopes (rag/index/scope.py) kept per index version
COMPACT_SMALL = 2_000  # ... or at once, when it is this small (a cheap rewrite; exact BM25 statistics sooner)


class DocEntry(BaseModel):
    """A document as the manifest lists it: enough to plan an update and list the index
    without reading any segment."""

    doc_id: str
    title: str
    path: str
    sha256: str
    content: str = Field(description="content_key of its text: a copy under another name is a duplicate")
    added_at: float
    segment: str
    chunks: int
    sentences: int
    pages: int = 0
    collection: str = DEFAULT_COLLECTION


class SegmentRef(BaseModel):
    name: str
    removed: list[str] = Field([], description="doc ids of this segment that are no longer in the index")
    removed_chunks: int = Field(0, description="their chunks: when a fifth of the segment, it is rewritten without them")


class Manifest(BaseModel):
    format_version: int
    store: str = Field(description="the vector store kind (rag.store.STORES) that holds the vectors")
    embedding: EmbeddingModel
    dim: int
    chunk_size: int
    chunk_overlap: int
    analyser: int = Field(1, description="version of the BM25 analyser (rag.text.ANALYSER_VERSION) that counted the segments' terms")
    corpus: dict[str, str] = Field(description="corpus-folder file name -> sha256 of the bytes that were indexed")
    excluded: dict[str, str] = Field({}, description="corpus-folder files removed by `rag remove` -> sha256: not re-added at start")
    n_chunks: int
    n_sentences: int
    next_chunk_id: int = Field(description="ids below this were used once and are never given out again")
    next_sentence_id: int
    segments: list[SegmentRef]
    documents: list[DocEntry] = Field(description="the live documents, in table order")
    retired: list[str] = Field([], description="segments of the previous version this one no longer names, kept on disk until the next change when their store serves from outside this process's memory")
    built_at: float


class Index:
    """A version of the index: the manifest and its segments, seen as one set of tables and stores.

    Row ids in the stores are chunk and sentence ids: stable across updates, increasing in table
    order, with gaps where documents were removed. Look rows up by id with `chunk()` and
    `sentence()`. Document texts live here (in the tables), so every offset, citation and the
    viewer read them from one place. An Index is never changed: an update makes a new one
    (sharing the unchanged segments), so a question running on this one sees one version.
    """

    def __init__(self, manifest: Manifest, segments: list[Segment]) -> None:
        if [s.name for s in segments] != [r.name for r in manifest.segments]:
            raise ValueError("the segments must be the manifest's, in its order")
        self.manifest = manifest
        self.segments = segments
        self._removed = [set(r.removed) for r in manifest.segments]
        self.build: str | None = None  # the build folder this version was loaded from or saved to
        self._scopes: dict[frozenset[str], "IndexView"] = {}
        self._scopes_lock = threading.Lock()

    # -- the views (computed on first use) ------------------------------------------------
    def _live(self):
        """Per segment: (segment, removed doc ids, live chunk rows mask, live sentence rows mask)."""
        for seg, gone in zip(self.segments, self._removed):
            yield seg, gone, *live_rows(seg.table, gone)

    @cached_property
    def _views(self):
        documents: dict[str, Document] = {}
        chunks: list[Chunk] = []
        sentences: list[Sentence] = []
        chunk_sentences: dict[int, list[int]] = {}
        masks = []
        for seg, gone, live_chunks, live_sentences in self._live():
            t = seg.table
            documents.update((d.doc_id, d) for d in t.documents if d.doc_id not in gone)
            if gone:
                chunks += [c for c, keep in zip(t.chunks, live_chunks) if keep]
                sentences += [s for s, keep in zip(t.sentences, live_sentences) if keep]
                chunk_sentences.update((c.chunk_id, sids) for c, sids, keep in zip(t.chunks, t.chunk_sentences, live_chunks) if keep)
            else:
                chunks += t.chunks
                sentences += t.sentences
                chunk_sentences.update((c.chunk_id, sids) for c, sids in zip(t.chunks, t.chunk_sentences))
            masks.append((seg, t, live_chunks, live_sentences))
        return documents, chunks, sentences, chunk_sentences, masks

    @property
    def documents(self) -> dict[str, Document]:
        return self._views[0]

    @property
    def chunks(self) -> list[Chunk]:
        return self._views[1]

    @property
    def sentences(self) -> list[Sentence]:
        return self._views[2]

    @property
    def chunk_sentences(self) -> dict[int, list[int]]:
        return self._views[3]

    @cached_property
    def _chunks(self) -> dict[int, Chunk]:
        return {c.chunk_id: c for c in self.chunks}

    @cached_property
    def _sentences(self) -> dict[int, Sentence]:
        return {s.sentence_id: s for s in self.sentences}

    def chunk(self, chunk_id: int) -> Chunk:
        """The chunk with this id. Raises KeyError if there is none (e.g. removed)."""
        return self._chunks[chunk_id]

    def sentence(self, sentence_id: int) -> Sentence:
        """The sentence with this id. Raises KeyError if there is none."""
        return self._sentences[sentence_id]

    def has_chunk(self, chunk_id: int) -> bool:
        return chunk_id in self._chunks

    @cached_property
    def chunk_store(self) -> SegmentedStore:
        return self._store(0)

    @cached_property
    def sentence_store(self) -> SegmentedStore:
        return self._store(1)

    def _store(self, which: int) -> SegmentedStore:
        stores, firsts, removed = [], [], []
        for seg, t, live_chunks, live_sentences in self._views[4]:
            if which == 0:
                stores.append(seg.chunk_store)
                firsts.append(seg.meta.first_chunk_id)
                removed.append(np.asarray([c.chunk_id for c, keep in zip(t.chunks, live_chunks) if not keep], dtype=np.int64))
            else:
                stores.append(seg.sentence_store)
                firsts.append(seg.meta.first_sentence_id)
                removed.append(np.asarray([s.sentence_id for s, keep in zip(t.sentences, live_sentences) if not keep], dtype=np.int64))
        return SegmentedStore(stores, firsts, removed, self.manifest.dim)

    @cached_property
    def lexicon(self) -> Lexicon:
        """BM25 over the live chunks and IDF over the live sentences, from the segments' statistics."""
        parts = []
        for seg, t, live_chunks, live_sentences in self._views[4]:
            parts.append((seg.stats, np.asarray([c.chunk_id for c in t.chunks], dtype=np.int64), live_chunks, live_sentences))
        return Lexicon(parts)

    @cached_property
    def furniture(self) -> set[int]:
        """Ids of the live sentences that are page furniture (rag/index/furniture.py): text that
        recurs across documents in different surroundings, never evidence."""
        return furniture(self.sentences)

    def table(self) -> Table:
        return Table(
            documents=list(self.documents.values()),
            chunks=self.chunks,
            sentences=self.sentences,
            chunk_sentences=[self.chunk_sentences[c.chunk_id] for c in self.chunks],
        )

    def within(self, collections) -> "IndexView":
        """This index as a reader of `collections` sees it (rag/index/scope.py); the last
        VIEWS scopes are kept, since a server's users share a few collection sets."""
        from .scope import IndexView

        key = frozenset(collections)
        with self._scopes_lock:
            view = self._scopes.pop(key, None) or IndexView(self, key)
            self._scopes[key] = view
            while len(self._scopes) > VIEWS:
                self._scopes.pop(next(iter(self._scopes)))
        return view

    def collection_counts(self) -> dict[str, tuple[int, int]]:
        """Collection -> (documents, chunks), from the manifest (counted once: an Index never changes)."""
        return dict(self._collection_counts)

    @cached_property
    def _collection_counts(self) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        for d in self.manifest.documents:
            docs, chunks = out.get(d.collection, (0, 0))
            out[d.collection] = (docs + 1, chunks + d.chunks)
        return dict(sorted(out.items()))

    def merge_due(self) -> bool:
        """Whether `compact_index` has merges or rewrites to do (from the manifest and the
        segments' headers; nothing is read)."""
        return _due(self.segments, self.manifest.segments)

    def close(self) -> None:
        """Release the stores' connections (a Milvus Lite server); FAISS stores hold none."""
        for seg in self.segments:
            seg.close()

    def prepare(self) -> "Index":
        """Compute every view, store and the BM25 lexicon now (what the first question would)."""
        self._chunks, self._sentences, self.chunk_store, self.sentence_store, self.lexicon, self.furniture  # noqa: B018
        return self

    def check(self) -> "Index":
        """Read every segment and check it and the manifest agree. Raises StaleIndex if not."""
        for seg in self.segments:
            seg.load()
        catalogue = {d.doc_id: d for d in self.manifest.documents}
        if set(catalogue) != set(self.documents):
            raise StaleIndex("the manifest's documents disagree with its segments")
        if (self.manifest.n_chunks, self.manifest.n_sentences) != (len(self.chunks), len(self.sentences)):
            raise StaleIndex("the chunk table disagrees with the manifest")
        if self.chunk_store.count() != len(self.chunks) or self.sentence_store.count() != len(self.sentences):
            raise StaleIndex("the chunk table disagrees with the vectors")
        return self

    # -- building -------------------------------------------------------------------------
    @classmethod
    def build(cls, corpus: Corpus, embedder: Encoder, settings: Settings, progress: bool = False) -> "Index":
        """Chunk and embed every document into one new segment of `settings.store` (not saved yet)."""
        now = time.time()
        documents = [d.model_copy(update={"added_at": d.added_at or now}) for d in corpus.documents]
        kind = settings.store or DEFAULT_STORE
        segment = make_segment(documents, embedder, settings, kind, 0, 0, progress)
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            store=kind,
            embedding=embedder.identity(),
            dim=segment.meta.dim,
            chunk_size=settings.chunk_size,
            chunk_overlap=settings.chunk_overlap,
            analyser=ANALYSER_VERSION,
            corpus={corpus_name(d.path, d.collection): d.sha256 for d in documents},
            n_chunks=segment.meta.n_chunks,
            n_sentences=segment.meta.n_sentences,
            next_chunk_id=segment.meta.n_chunks,
            next_sentence_id=segment.meta.n_sentences,
            segments=[SegmentRef(name=segment.name)],
            documents=_entries(segment),
            built_at=now,
        )
        return cls(manifest, [segment])

    # -- saving / loading -----------------------------------------------------------------
    def save(self, index_dir: Path) -> Path:
        """Write the segments not yet on disk and a build folder with the manifest, then flip
        `index_dir/current` to it atomically."""
        with _locked(index_dir):
            return self._save_locked(index_dir)

    def _save_locked(self, index_dir: Path) -> Path:
        """The caller holds the lock."""
        build = _new_build_dir(index_dir)  # a kill from here on leaves only leftovers
        for seg in self.segments:
            if seg.folder is None:
                seg.save(index_dir / SEGMENTS)
        self.manifest = self.manifest.model_copy(update={"retired": _retired(index_dir, self.manifest)})
        write_atomic(build / "manifest.json", self.manifest.model_dump_json(indent=1))
        fsync_dir(build)
        link = index_dir / f".{CURRENT}.tmp-{os.getpid()}"
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(build.name, link)
        os.replace(link, index_dir / CURRENT)  # the atomic step
        fsync_dir(index_dir)
        _remove_unused(index_dir, keep=build.name, manifest=self.manifest)
        self.build = build.name
        return build

    @classmethod
    def load(cls, index_dir: Path, reuse: "Index | None" = None, lazy: bool = False) -> "Index":
        """Open `index_dir/current`: the manifest, and its segments (those of `reuse` that are
        the same are shared, not read again). Unless `lazy`, every segment is read and checked now.

        `current` is resolved once, so a build that flips it meanwhile cannot mix two builds.

        Raises:
            StaleIndex: missing, truncated, corrupt or inconsistent files.
        """
        build = (index_dir / CURRENT).resolve()
        manifest = _read_manifest(build)
        known = {s.name: s for s in reuse.segments} if reuse is not None and reuse.manifest.store == manifest.store else {}
        segments = [known.get(ref.name) or Segment.open(index_dir / SEGMENTS / ref.name, manifest.store, manifest.dim) for ref in manifest.segments]
        index = cls(manifest, segments)
        index.build = build.name
        return index if lazy else index.check()

    def check_settings(self, embedder: Encoder, settings: Settings) -> None:
        """Raises StaleIndex when the embedding model, the store or the chunk settings changed:
        vectors or chunks made another way cannot be mixed, so that means a full rebuild."""
        _check_settings(self.manifest, embedder, settings)

    def check_fresh(self, corpus: Corpus, embedder: Encoder, settings: Settings) -> None:
        """Raises StaleIndex when the corpus, the embedding model, the store or the chunk settings changed."""
        self.check_settings(embedder, settings)
        add, remove = self.corpus_changes(corpus)
        if add or remove:
            names = sorted({corpus_name(d.path, d.collection) for d in add} | set(remove))
            raise StaleIndex(f"corpus changed: {', '.join(names)}")

    def corpus_changes(self, corpus: Corpus) -> tuple[list[Document], list[str]]:
        """What differs between the corpus folder and what was indexed from it:
        (documents to add or replace, names of corpus files gone). Files the user removed with
        `rag remove` stay out until their content changes."""
        m = self.manifest
        add = [
            d for d in corpus.documents
            if m.corpus.get(corpus_name(d.path, d.collection)) != d.sha256 and m.excluded.get(corpus_name(d.path, d.collection)) != d.sha256
        ]
        now = {corpus_name(d.path, d.collection) for d in corpus.documents} | set(corpus.unchanged)
        return add, sorted(set(m.corpus) - now)


def _check_settings(m: Manifest, embedder: Encoder, settings: Settings) -> None:
    model = embedder.identity()
    if m.embedding != model:
        raise StaleIndex(f"built with {m.embedding}, settings use {model}")
    if settings.store is not None and m.store != settings.store:
        raise StaleIndex(
            f"built into a {m.store} store, settings use {settings.store} (`python -m rag migrate --to {settings.store}` moves the vectors without re-embedding)"
        )
    if m.analyser != ANALYSER_VERSION:
        raise StaleIndex(f"the BM25 analyser changed (v{m.analyser} -> v{ANALYSER_VERSION})")
    if (m.chunk_size, m.chunk_overlap) != (settings.chunk_size, settings.chunk_overlap):
        raise StaleIndex(f"chunk settings changed ({m.chunk_size}/{m.chunk_overlap} -> {settings.chunk_size}/{settings.chunk_overlap})")


class UpdateReport(BaseModel):
    """What one `update_index` call did, by name."""

    added: list[str] = Field([], description="doc ids added")
    replaced: list[str] = Field([], description="doc ids whose file changed and was indexed again")
    removed: list[str] = Field([], description="doc ids removed")
    unchanged: list[str] = Field([], description="files already indexed with the same bytes")
    problems: list[CorpusProblem] = Field([], description="files not indexed, with the reason")
    merged: int = Field(0, description="segments merged or rewritten by this update")
    merge_due: bool = Field(False, description="a bigger merge or rewrite was left for `compact_index`")
    seconds: float = 0.0


def update_index(
    settings: Settings,
    embedder: Encoder,
    add: list[Document] = (),  # type: ignore[assignment]
    remove: list[str] = (),  # type: ignore[assignment]
    progress: bool = False,
    forget_corpus_files: list[str] = (),  # type: ignore[assignment]
    base: Index | None = None,
) -> tuple[Index, UpdateReport]:
    """Add, replace and remove documents without touching the others; atomically.

    Only the documents in `add` are chunked and embedded, into one new segment. A document whose
    source path is already indexed replaces it (or is skipped when its sha256 is the same); one
    whose text is already indexed from another file is a duplicate and is reported, not added.
    `remove` takes doc ids; a removed document's rows leave every search at once. A removed file
    from the corpus folder is remembered as excluded, so start-up does not add it back.

    The plan is made from the manifest alone; old segments are read only to be merged. `base`,
    an Index of this folder already in memory (the app's), lends its loaded segments, so the
    returned Index is ready at once; without it, the returned Index reads its segments on first
    use.

    Raises:
        StaleIndex: there is no usable index, or it was built with other settings (rebuild it).
        KeyError: a doc id in `remove` is not in the index.
    """
    assert settings.index_dir is not None
    started = time.perf_counter()
    index_dir = settings.index_dir
    corpus_dir = settings.corpus_dir.resolve() if settings.corpus_dir else None
    report = UpdateReport()
    with _locked(index_dir):
        old = Index.load(index_dir, reuse=base, lazy=True)
        manifest = old.manifest
        _check_settings(manifest, embedder, settings.model_copy(update={"store": None}))
        catalogue = {d.doc_id: d for d in manifest.documents}
        unknown = [doc_id for doc_id in remove if doc_id not in catalogue]
        if unknown:
            raise KeyError(f"not in the index: {', '.join(unknown)} (see `python -m rag list`)")
        drop: set[str] = set(remove)
        by_path = {_resolved(d.path): d for d in catalogue.values()}
        by_content = {(d.collection, d.content): d.doc_id for d in catalogue.values()}  # a copy in another collection is its own document
        taken = set(catalogue)
        new_docs: list[Document] = []
        now = time.time()
        for doc in add:
            name = corpus_name(doc.path, doc.collection)
            prior = by_path.get(_resolved(doc.path))
            if prior is not None and prior.doc_id not in drop and prior.sha256 == doc.sha256:
                report.unchanged.append(name)
                continue
            owner = by_content.get((doc.collection, content_key(doc.text)))
            if owner is not None and owner not in drop and (prior is None or owner != prior.doc_id):
                report.problems.append(CorpusProblem(name=name, action="skipped", reason=f"duplicate: same content as {owner}"))
                continue
            if prior is not None and prior.collection != doc.collection:  # moved to another collection: a new document
                drop.add(prior.doc_id)
                report.removed.append(prior.doc_id)
                prior = None
            if prior is not None:
                drop.add(prior.doc_id)
                report.replaced.append(prior.doc_id)
                doc_id = prior.doc_id
            else:
                doc_id = _free_id(doc.doc_id, name, taken)
                report.added.append(doc_id)
            taken.add(doc_id)
            by_content[(doc.collection, content_key(doc.text))] = doc_id
            new_docs.append(doc.model_copy(update={"doc_id": doc_id, "added_at": now}))
        report.removed = sorted(set(remove) | set(report.removed))
        if not new_docs and not drop:
            report.seconds = time.perf_counter() - started
            return (old if base is None else old.check()), report

        # Removed and replaced documents: recorded against their segments.
        refs = [r.model_copy(deep=True) for r in manifest.segments]
        by_name = {r.name: r for r in refs}
        for doc_id in drop:
            entry = catalogue[doc_id]
            by_name[entry.segment].removed.append(doc_id)
            by_name[entry.segment].removed_chunks += entry.chunks
        segments = list(old.segments)
        added_chunks = added_sentences = 0
        if new_docs:
            segment = make_segment(new_docs, embedder, settings, manifest.store, manifest.next_chunk_id, manifest.next_sentence_id, progress, manifest.dim)
            segments.append(segment)
            refs.append(SegmentRef(name=segment.name))
            added_chunks, added_sentences = segment.meta.n_chunks, segment.meta.n_sentences
        segments, refs, report.merged = _tidy(segments, refs, manifest.store, manifest.dim, settings.inline_merge_chunks)
        report.merge_due = _due(segments, refs)
        documents = _catalogue([d for d in manifest.documents if d.doc_id not in drop], segments, refs)

        corpus, excluded = dict(manifest.corpus), dict(manifest.excluded)
        replaced = {d.doc_id for d in new_docs}
        for doc_id in drop:
            entry = catalogue[doc_id]
            if collection_of(entry.path, corpus_dir) == entry.collection:
                name = corpus_name(entry.path, entry.collection)
                corpus.pop(name, None)
                if doc_id not in replaced and name not in forget_corpus_files:
                    excluded[name] = entry.sha256
        for doc in new_docs:
            if collection_of(doc.path, corpus_dir) == doc.collection:
                name = corpus_name(doc.path, doc.collection)
                corpus[name] = doc.sha256
                excluded.pop(name, None)
        new_manifest = manifest.model_copy(update={
            "corpus": corpus,
            "excluded": excluded,
            "n_chunks": sum(e.chunks for e in documents),
            "n_sentences": sum(e.sentences for e in documents),
            "next_chunk_id": manifest.next_chunk_id + added_chunks,
            "next_sentence_id": manifest.next_sentence_id + added_sentences,
            "segments": refs,
            "documents": documents,
            "built_at": now,
        })
        index = Index(new_manifest, segments)
        index._save_locked(index_dir)
    report.seconds = time.perf_counter() - started
    log.info("index: +%d ~%d -%d documents in %.2f s (%d segments merged)", len(report.added), len(report.replaced), len(report.removed), report.seconds, report.merged)
    return index, report


def _tidy(segments: list[Segment], refs: list[SegmentRef], kind: str, dim: int, limit: int | None = None) -> tuple[list[Segment], list[SegmentRef], int]:
    """Drop emptied segments, rewrite ones with many removed rows, merge the newest into the one
    before while it is at least MERGE_RATIO of its size; with `limit`, only rewrites and merges
    of up to that many live chunks (the rest stay due, see `_due`). Returns (segments, refs,
    rewrites)."""
    rewrites = 0
    out_s: list[Segment] = []
    out_r: list[SegmentRef] = []
    for seg, ref in zip(segments, refs):
        live = seg.meta.n_chunks - ref.removed_chunks
        if ref.removed and live <= 0 and not _has_live_documents(seg, ref):
            rewrites += 1  # nothing left in it: dropped, nothing to copy
            continue
        if _needs_rewrite(seg, ref) and (limit is None or live <= limit):
            rewritten = merge_segments([seg], [set(ref.removed)], kind, dim)
            seg.drop_if_unsaved()
            seg, ref = rewritten, SegmentRef(name=rewritten.name)
            rewrites += 1
        out_s.append(seg)
        out_r.append(ref)
    while _merge_due(out_s, out_r) and (limit is None or _live(out_s[-2], out_r[-2]) + _live(out_s[-1], out_r[-1]) <= limit):
        merged = merge_segments(out_s[-2:], [set(r.removed) for r in out_r[-2:]], kind, dim)
        for part in out_s[-2:]:
            part.drop_if_unsaved()
        out_s[-2:], out_r[-2:] = [merged], [SegmentRef(name=merged.name)]
        rewrites += 1
    return out_s, out_r, rewrites


def _live(seg: Segment, ref: SegmentRef) -> int:
    return seg.meta.n_chunks - ref.removed_chunks


def _needs_rewrite(seg: Segment, ref: SegmentRef) -> bool:
    return bool(ref.removed) and (ref.removed_chunks >= COMPACT_SHARE * seg.meta.n_chunks or seg.meta.n_chunks <= COMPACT_SMALL)


def _merge_due(segments: list[Segment], refs: list[SegmentRef]) -> bool:
    return len(segments) >= 2 and _live(segments[-1], refs[-1]) >= MERGE_RATIO * _live(segments[-2], refs[-2])


def _due(segments: list[Segment], refs: list[SegmentRef]) -> bool:
    """Whether `compact_index` has work: a rewrite or merge left for being over the inline limit."""
    return _merge_due(segments, refs) or any(_needs_rewrite(s, r) for s, r in zip(segments, refs))


def _catalogue(kept: list[DocEntry], segments: list[Segment], refs: list[SegmentRef]) -> list[DocEntry]:
    """The manifest's documents after a change: the kept entries, with those of new, merged or
    rewritten segments (not saved yet) read from their tables; in segment order."""
    entries = {d.doc_id: d for d in kept}
    for seg, ref in zip(segments, refs):
        if seg.folder is None:
            gone = set(ref.removed)
            entries.update((e.doc_id, e) for e in _entries(seg) if e.doc_id not in gone)
    order = {s.name: n for n, s in enumerate(segments)}
    return sorted(entries.values(), key=lambda e: order[e.segment])  # stable: table order within a segment


def compact_index(settings: Settings, base: Index | None = None) -> tuple[Index, UpdateReport]:
    """Do the merges and rewrites that updates left for being over `inline_merge_chunks`,
    atomically, as one more change (no embedding). The app runs it in the background after an
    update that left work, `rag add` right after its update; until it runs, questions search a
    few more segments, nothing else differs.

    Raises:
        StaleIndex: there is no usable index.
    """
    assert settings.index_dir is not None
    started = time.perf_counter()
    report = UpdateReport()
    with _locked(settings.index_dir):
        old = Index.load(settings.index_dir, reuse=base, lazy=True)
        m = old.manifest
        segments, refs, report.merged = _tidy(list(old.segments), [r.model_copy(deep=True) for r in m.segments], m.store, m.dim)
        if not report.merged:
            report.seconds = time.perf_counter() - started
            return old, report
        manifest = m.model_copy(update={"segments": refs, "documents": _catalogue(m.documents, segments, refs), "built_at": time.time()})
        index = Index(manifest, segments)
        index._save_locked(settings.index_dir)
    report.seconds = time.perf_counter() - started
    log.info("index: %d segments merged or rewritten in %.2f s", report.merged, report.seconds)
    return index, report


def _has_live_documents(seg: Segment, ref: SegmentRef) -> bool:
    return seg.meta.n_documents > len(set(ref.removed))


def _entries(segment: Segment) -> list[DocEntry]:
    """The catalogue entries of a segment's documents."""
    t = segment.table
    n_chunks: dict[str, int] = {}
    n_sentences: dict[str, int] = {}
    for c in t.chunks:
        n_chunks[c.doc_id] = n_chunks.get(c.doc_id, 0) + 1
    for s in t.sentences:
        n_sentences[s.doc_id] = n_sentences.get(s.doc_id, 0) + 1
    return [
        DocEntry(
            doc_id=d.doc_id, title=d.title, path=d.path, sha256=d.sha256, content=content_key(d.text), added_at=d.added_at,
            segment=segment.name, chunks=n_chunks.get(d.doc_id, 0), sentences=n_sentences.get(d.doc_id, 0), pages=len(d.pages),
            collection=d.collection,
        )
        for d in t.documents
    ]


def migrate_index(settings: Settings, to: str, progress: bool = False) -> Index:
    """Move the live index's vectors into stores of kind `to` (no re-embedding), atomically.

    Each segment is copied into a new one of kind `to` (tables and statistics as they are,
    vectors read by id), then a new manifest names them and `current` flips.
    """
    from ..store import store_class

    store_class(to)  # fail early on an unknown name
    index_dir = settings.index_dir
    assert index_dir is not None
    with _locked(index_dir):
        old = Index.load(index_dir)
        segments, refs = [], []
        for seg, ref in _progress(list(zip(old.segments, old.manifest.segments)), progress, f"copying segments to {to}"):
            moved = merge_segments([seg], [set(ref.removed)], to, old.manifest.dim)
            segments.append(moved)
            refs.append(SegmentRef(name=moved.name))
        names = {s.name: m.name for s, m in zip(old.segments, segments)}
        documents = [d.model_copy(update={"segment": names[d.segment]}) for d in old.manifest.documents]
        manifest = old.manifest.model_copy(update={"store": to, "segments": refs, "documents": documents, "built_at": time.time()})
        index = Index(manifest, segments)
        index._save_locked(index_dir)
    for seg in old.segments:
        seg.close()
    return index


def ensure_index(corpus: Corpus, embedder: Encoder, settings: Settings, rebuild: bool = False, progress: bool = False) -> Index:
    """Load the index; bring it up to date with the corpus folder; rebuild only when it must.

    Files added, changed or removed in the corpus folder are an incremental update (only those
    are embedded). Another embedding model, chunk setting, index format or a damaged index is a
    full rebuild, and the log says why. A rebuild holds the index lock from creating its build
    folder to flipping `current`, so two processes never build at once: the second waits,
    then uses the first one's index.
    """
    assert settings.index_dir is not None
    index_dir = settings.index_dir
    if not rebuild:
        try:
            index = Index.load(index_dir)
            index.check_settings(embedder, settings)
            add, gone = index.corpus_changes(corpus)
            if not add and not gone:
                return index
            names = sorted({corpus_name(d.path, d.collection) for d in add} | set(gone))
            log.warning("index: updating because corpus changed: %s", ", ".join(names))
            gone_ids = [
                d.doc_id for d in index.manifest.documents
                if corpus_name(d.path, d.collection) in gone and collection_of(d.path, settings.corpus_dir) == d.collection
            ]
            updated, report = update_index(settings, embedder, add=add, remove=gone_ids, progress=progress, forget_corpus_files=gone, base=index)
            for problem in report.problems:
                log.warning("index: %s", problem)
            return updated.check()
        except StaleIndex as why:
            log.warning("index: rebuilding because %s", why)
    else:
        log.info("index: rebuilding on request")
    with _locked(index_dir):
        if not rebuild:
            try:  # another process may have rebuilt it while we waited for the lock
                return _load_fresh(corpus, embedder, settings)
            except StaleIndex:
                pass
        if corpus.unchanged:  # files skipped as already indexed: a rebuild needs their text
            from .corpus import load_corpus

            corpus = load_corpus(settings.corpus_dir, settings.max_file_bytes, settings=settings)  # type: ignore[arg-type]
        index = Index.build(corpus, embedder, settings, progress=progress)
        index._save_locked(index_dir)
    log.info("index: built %d chunks, %d sentences from %d documents", len(index.chunks), len(index.sentences), len(index.documents))
    return index


def indexed_files(index_dir: Path | None) -> dict[str, str]:
    """Corpus-folder file name -> sha256 of what the live index holds for it (or keeps out
    after `rag remove`), from the manifest alone; empty when there is no usable index. For
    `load_corpus(indexed=...)`, so a start does not convert files again that did not change."""
    if index_dir is None:
        return {}
    try:
        m = _read_manifest((index_dir / CURRENT).resolve())
    except (StaleIndex, OSError):
        return {}
    return {**m.excluded, **m.corpus}


def _load_fresh(corpus: Corpus, embedder: Encoder, settings: Settings) -> Index:
    index = Index.load(settings.index_dir)  # type: ignore[arg-type]
    index.check_fresh(corpus, embedder, settings)
    return index


def _progress(iterable, show: bool, desc: str):
    if not show:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc)


def _read_manifest(build: Path) -> Manifest:
    """The manifest of a build folder, checked.

    Raises:
        StaleIndex: missing, unreadable or of another format.
    """
    if not (build / "manifest.json").exists():
        raise StaleIndex(f"no index at {build}")
    try:
        raw = json.loads((build / "manifest.json").read_text(encoding="utf-8"))
    except (ValueError, OSError) as err:
        raise StaleIndex(f"unreadable manifest ({err.__class__.__name__})") from err
    version = raw.get("format_version") if isinstance(raw, dict) else None
    if version != FORMAT_VERSION:
        raise StaleIndex(f"index format v{version}, this code reads v{FORMAT_VERSION}")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as err:
        raise StaleIndex(f"unreadable manifest ({err.__class__.__name__})") from err


def _resolved(path: str) -> str:
    try:
        return str(Path(path).resolve())
    except OSError:
        return path



def _free_id(wanted: str, name: str, taken: set[str]) -> str:
    """`wanted` (the file's stem) if free, else the file name, else the name with -2, -3 ...

    >>> _free_id("a", "a.md", {"a"})
    'a.md'
    >>> _free_id("a", "a.md", {"a", "a.md"})
    'a.md-2'
    """
    for candidate in (wanted, name):
        if candidate not in taken:
            return candidate
    n = 2
    while f"{name}-{n}" in taken:
        n += 1
    return f"{name}-{n}"


def _new_build_dir(index_dir: Path) -> Path:
    build = index_dir / f"build-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    build.mkdir()
    return build


@contextmanager
def _locked(index_dir: Path) -> Iterator[None]:
    """Exclusive lock on index_dir/.lock for one change; released by the kernel if we are killed."""
    index_dir.mkdir(parents=True, exist_ok=True)
    with open(index_dir / LOCK, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("index: waiting for another build of %s to finish", index_dir)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _remove_unused(index_dir: Path, keep: str, manifest: Manifest) -> None:
    """Delete older builds, leftovers of killed ones, their half-made `current` links, and the
    segments the live manifest does not name (merged away, removed, or half-written by a killed
    change; a server store's collection is dropped with its segment).

    Runs under the lock, so no other change is writing; what `current` points at is kept.
    """
    live = os.path.basename(os.readlink(index_dir / CURRENT)) if (index_dir / CURRENT).is_symlink() else keep
    for path in index_dir.iterdir():
        if path.name.startswith("build-") and path.name not in (keep, live) and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            log.info("index: removed old or unfinished build %s", path.name)
        elif path.name.startswith(f".{CURRENT}.tmp-") and path.is_symlink():
            path.unlink(missing_ok=True)
    if live != keep:  # another build is live (cannot happen under the lock): keep every segment
        return
    named = {r.name for r in manifest.segments} | set(manifest.retired)
    segments_dir = index_dir / SEGMENTS
    for path in segments_dir.iterdir() if segments_dir.is_dir() else ():
        if path.name in named or not path.is_dir():
            continue
        for sub in STORES:
            _discard_store(manifest.store, path / sub)
        shutil.rmtree(path, ignore_errors=True)
        log.info("index: removed unused segment %s", path.name)


def _retired(index_dir: Path, manifest: Manifest) -> list[str]:
    """Segments the live version names and `manifest` does not, when they must outlive it.

    A FAISS store is read whole into memory, so a process still answering from the previous
    version never reads its segment's files again: they can go at once. A Milvus store serves
    its rows from a server (or a Lite folder's server), so a process that has not yet switched
    to the new version would find its collections gone; those segments stay one change longer
    (the app switches at its next question, see Pipeline.retriever).
    """
    from ..store import store_class

    if getattr(store_class(manifest.store), "in_memory", False):
        return []
    try:
        live = _read_manifest((index_dir / CURRENT).resolve())
    except StaleIndex:
        return []
    if live.store != manifest.store:
        return []
    named = {r.name for r in manifest.segments}
    return [r.name for r in live.segments if r.name not in named]


def _discard_store(kind: str, path: Path) -> None:
    """Free what a saved store holds outside its folder (a server collection); never raises."""
    from ..store import store_class

    try:
        store_class(kind).discard(path)
    except Exception as err:  # a server that is down must not stop the clean-up
        log.warning("index: could not discard the %s store at %s: %s", kind, path, err)
