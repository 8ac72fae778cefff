"""The index: document/chunk/sentence tables + a manifest + two vector stores; build, add, remove, atomically.

Layout under index/:
    current -> build-<time>-<pid>/    (a symlink, flipped atomically after a complete build)
    build-.../manifest.json          format version, store kind, embedding model, chunk settings, corpus hashes
    build-.../table.json             documents (their text: the only source of offsets), chunks, sentences
    build-.../chunks/, sentences/    the two vector stores, each saved by its store (rag/store/)
    .lock                            held by the one process building

A build writes into a fresh folder and only then flips `current`, so a build that is killed
part-way leaves the previous index untouched and loadable. A build holds an exclusive lock
from creating its folder to the flip, so the clean-up after a build (which removes older
builds and leftovers of killed ones) never deletes a folder that is still being written; the
kernel drops the lock of a killed process, whose folder is then a leftover.

An update (`update_index`: add, replace or remove documents) works the same way: it copies the
live build's stores into a fresh folder, deletes and adds only the rows that change there, and
flips `current`. Chunk and sentence ids are never reused or renumbered (the manifest keeps the
next free ones), so the stores keep their keys. A store on a Milvus server has no files to copy:
its rows change in place, and the table flip is what a reader sees change (see `update_index`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from .chunking import chunk_document
from .config import Settings
from .corpus import Corpus, CorpusProblem, content_key
from .embedding import EmbeddingModel, Encoder, file_sha256
from .store import StoreError, VectorStore, new_store, open_store

DEFAULT_STORE = "faiss"  # a new index's store when settings.store is None
from .types import Chunk, Document, Sentence

log = logging.getLogger(__name__)

FORMAT_VERSION = 3  # v3: stable ids (not positions), next free ids, documents added and removed one by one
CURRENT = "current"
LOCK = ".lock"
STORES = ("chunks", "sentences")
EMBED_BATCH = 64  # texts per embedding call: the progress bar moves at least this often


class Manifest(BaseModel):
    format_version: int
    store: str = Field(description="the vector store kind (rag.store.STORES) that holds the vectors")
    embedding: EmbeddingModel
    dim: int
    chunk_size: int
    chunk_overlap: int
    corpus: dict[str, str] = Field(description="corpus-folder file name -> sha256 of the bytes that were indexed")
    excluded: dict[str, str] = Field({}, description="corpus-folder files removed by `rag remove` -> sha256: not re-added at start")
    n_chunks: int
    n_sentences: int
    next_chunk_id: int = Field(description="ids below this were used once and are never given out again")
    next_sentence_id: int
    files: dict[str, str]  # artefact path in the build -> sha256, to catch a truncated or swapped file
    built_at: float


class Table(BaseModel):
    documents: list[Document]
    chunks: list[Chunk]
    sentences: list[Sentence]
    chunk_sentences: list[list[int]] = Field(description="per chunk, in table order: ids of the sentences it overlaps")


class StaleIndex(Exception):
    """The index on disk cannot be used as-is; the message says why (and so why it is rebuilt)."""


class Index:
    """The tables that map vectors back to source text, and the stores holding the vectors.

    Row ids in the stores are chunk and sentence ids: stable across updates, increasing in table
    order, with gaps where documents were removed. Look rows up by id with `chunk()` and
    `sentence()`. Document texts live here (in the table), so every offset, citation and the
    viewer read them from one place. An Index is never changed once built: an update makes a
    new one, so a question running on this one sees one consistent version.
    """

    def __init__(self, manifest: Manifest, table: Table, chunk_store: VectorStore, sentence_store: VectorStore) -> None:
        self.manifest = manifest
        self.documents = {d.doc_id: d for d in table.documents}
        self.chunks = table.chunks
        self.sentences = table.sentences
        self.chunk_sentences = {c.chunk_id: sids for c, sids in zip(table.chunks, table.chunk_sentences)}
        self._chunks = {c.chunk_id: c for c in table.chunks}
        self._sentences = {s.sentence_id: s for s in table.sentences}
        self.chunk_store = chunk_store
        self.sentence_store = sentence_store

    def chunk(self, chunk_id: int) -> Chunk:
        """The chunk with this id. Raises KeyError if there is none (e.g. removed)."""
        return self._chunks[chunk_id]

    def sentence(self, sentence_id: int) -> Sentence:
        """The sentence with this id. Raises KeyError if there is none."""
        return self._sentences[sentence_id]

    def has_chunk(self, chunk_id: int) -> bool:
        return chunk_id in self._chunks

    def table(self) -> Table:
        return Table(
            documents=list(self.documents.values()),
            chunks=self.chunks,
            sentences=self.sentences,
            chunk_sentences=[self.chunk_sentences[c.chunk_id] for c in self.chunks],
        )

    # -- building -------------------------------------------------------------------------
    @classmethod
    def build(cls, corpus: Corpus, embedder: Encoder, settings: Settings, progress: bool = False) -> "Index":
        """Chunk every document and embed chunks and sentences into new stores of `settings.store`."""
        now = time.time()
        documents = [d.model_copy(update={"added_at": d.added_at or now}) for d in corpus.documents]
        rows = _rows_of(documents, embedder, settings, 0, 0, progress)
        dim = int(rows.chunk_vectors.shape[1])
        kind = settings.store or DEFAULT_STORE
        chunk_store = new_store(kind, dim)
        chunk_store.add(rows.chunk_ids(), rows.chunk_vectors)
        sentence_store = new_store(kind, dim)
        sentence_store.add(rows.sentence_ids(), rows.sentence_vectors)
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            store=kind,
            embedding=embedder.identity(),
            dim=dim,
            chunk_size=settings.chunk_size,
            chunk_overlap=settings.chunk_overlap,
            corpus={Path(d.path).name: d.sha256 for d in documents},
            n_chunks=len(rows.chunks),
            n_sentences=len(rows.sentences),
            next_chunk_id=len(rows.chunks),
            next_sentence_id=len(rows.sentences),
            files={},
            built_at=now,
        )
        table = Table(documents=documents, chunks=rows.chunks, sentences=rows.sentences, chunk_sentences=rows.chunk_sentences)
        return cls(manifest, table, chunk_store, sentence_store)

    # -- saving / loading -----------------------------------------------------------------
    def save(self, index_dir: Path) -> Path:
        """Write a complete build folder, then flip `index_dir/current` to it atomically."""
        with _locked(index_dir):
            return self._save_locked(index_dir, _new_build_dir(index_dir))

    def _save_locked(self, index_dir: Path, build: Path) -> Path:
        """Fill `build`, flip `current` to it, remove older builds. The caller holds the lock."""
        self.chunk_store.save(build / "chunks")
        self.sentence_store.save(build / "sentences")
        (build / "table.json").write_text(self.table().model_dump_json(), encoding="utf-8")
        files = {p.relative_to(build).as_posix(): file_sha256(p) for p in sorted(build.rglob("*")) if p.is_file() and _checked(p)}
        self.manifest = self.manifest.model_copy(update={"files": files})
        (build / "manifest.json").write_text(self.manifest.model_dump_json(indent=2), encoding="utf-8")
        _fsync_dir(build)
        link = index_dir / f".{CURRENT}.tmp-{os.getpid()}"
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(build.name, link)
        os.replace(link, index_dir / CURRENT)  # the atomic step
        _fsync_dir(index_dir)
        _remove_old_builds(index_dir, keep=build.name)
        return build

    @classmethod
    def load(cls, index_dir: Path) -> "Index":
        """Load `index_dir/current`, checking every artefact against the manifest.

        `current` is resolved once, so a build that flips it meanwhile cannot mix two builds.

        Raises:
            StaleIndex: missing, truncated, corrupt or inconsistent files.
        """
        build = (index_dir / CURRENT).resolve()
        manifest, table = _read_build(build)
        try:
            chunk_store = open_store(manifest.store, build / "chunks", manifest.dim)
            sentence_store = open_store(manifest.store, build / "sentences", manifest.dim)
        except (ValueError, StoreError, OSError) as err:
            raise StaleIndex(f"corrupt index files ({err.__class__.__name__}: {err})") from err
        if chunk_store.count() != len(table.chunks) or sentence_store.count() != len(table.sentences):
            raise StaleIndex("the chunk table disagrees with the vectors")
        _check_counts(manifest, table)
        return cls(manifest, table, chunk_store, sentence_store)

    def check_settings(self, embedder: Encoder, settings: Settings) -> None:
        """Raises StaleIndex when the embedding model, the store or the chunk settings changed:
        vectors or chunks made another way cannot be mixed, so that means a full rebuild."""
        m = self.manifest
        model = embedder.identity()
        if m.embedding != model:
            raise StaleIndex(f"built with {m.embedding}, settings use {model}")
        if settings.store is not None and m.store != settings.store:
            raise StaleIndex(
                f"built into a {m.store} store, settings use {settings.store} (`python -m rag migrate --to {settings.store}` moves the vectors without re-embedding)"
            )
        if (m.chunk_size, m.chunk_overlap) != (settings.chunk_size, settings.chunk_overlap):
            raise StaleIndex(
                f"chunk settings changed ({m.chunk_size}/{m.chunk_overlap} -> {settings.chunk_size}/{settings.chunk_overlap})"
            )

    def check_fresh(self, corpus: Corpus, embedder: Encoder, settings: Settings) -> None:
        """Raises StaleIndex when the corpus, the embedding model, the store or the chunk settings changed."""
        self.check_settings(embedder, settings)
        add, remove = self.corpus_changes(corpus)
        if add or remove:
            names = sorted({Path(d.path).name for d in add} | set(remove))
            raise StaleIndex(f"corpus changed: {', '.join(names)}")

    def corpus_changes(self, corpus: Corpus) -> tuple[list[Document], list[str]]:
        """What differs between the corpus folder and what was indexed from it:
        (documents to add or replace, names of corpus files gone). Files the user removed with
        `rag remove` stay out until their content changes."""
        m = self.manifest
        add = [
            d for d in corpus.documents
            if m.corpus.get(Path(d.path).name) != d.sha256 and m.excluded.get(Path(d.path).name) != d.sha256
        ]
        now = {Path(d.path).name for d in corpus.documents}
        return add, sorted(set(m.corpus) - now)


class UpdateReport(BaseModel):
    """What one `update_index` call did, by name."""

    added: list[str] = Field([], description="doc ids added")
    replaced: list[str] = Field([], description="doc ids whose file changed and was indexed again")
    removed: list[str] = Field([], description="doc ids removed")
    unchanged: list[str] = Field([], description="files already indexed with the same bytes")
    problems: list[CorpusProblem] = Field([], description="files not indexed, with the reason")
    seconds: float = 0.0


def update_index(
    settings: Settings,
    embedder: Encoder,
    add: list[Document] = (),  # type: ignore[assignment]
    remove: list[str] = (),  # type: ignore[assignment]
    progress: bool = False,
    forget_corpus_files: list[str] = (),  # type: ignore[assignment]
) -> tuple[Index, UpdateReport]:
    """Add, replace and remove documents without touching the others; atomically.

    Only the documents in `add` are chunked and embedded. A document whose source path is
    already indexed replaces it (or is skipped when its sha256 is the same); one whose text is
    already indexed from another file is a duplicate and is reported, not added. `remove` takes
    doc ids; removing one deletes its vectors and table rows. A removed file from the corpus
    folder is remembered as excluded, so start-up does not add it back.

    The update copies the live build's stores into a new build folder and changes only that
    copy, then flips `current`: a reader sees the old index or the new one, and a crash leaves
    the old one. On a Milvus server (no files) the rows change in place: new ids are added
    before the flip (an old table never names them, so readers skip them), removed ones are
    deleted after it.

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
        live = (index_dir / CURRENT).resolve()
        manifest, table = _read_build(live)
        _check_counts(manifest, table)
        base = Index(manifest, table, _NoStore(), _NoStore())  # the tables only, to plan the change
        base.check_settings(embedder, settings.model_copy(update={"store": None}))
        unknown = [doc_id for doc_id in remove if doc_id not in base.documents]
        if unknown:
            raise KeyError(f"not in the index: {', '.join(unknown)} (see `python -m rag list`)")
        drop: set[str] = set(remove)
        by_path = {_resolved(d.path): d for d in base.documents.values()}
        by_content = {content_key(d.text): d.doc_id for d in base.documents.values()}
        taken = set(base.documents)
        new_docs: list[Document] = []
        now = time.time()
        for doc in add:
            name = Path(doc.path).name
            old = by_path.get(_resolved(doc.path))
            if old is not None and old.doc_id not in drop and old.sha256 == doc.sha256:
                report.unchanged.append(name)
                continue
            owner = by_content.get(content_key(doc.text))
            if owner is not None and owner not in drop and (old is None or owner != old.doc_id):
                report.problems.append(CorpusProblem(name=name, action="skipped", reason=f"duplicate: same content as {owner}"))
                continue
            if old is not None:
                drop.add(old.doc_id)
                report.replaced.append(old.doc_id)
                doc_id = old.doc_id
            else:
                doc_id = _free_id(doc.doc_id, name, taken)
                report.added.append(doc_id)
            taken.add(doc_id)
            by_content[content_key(doc.text)] = doc_id
            new_docs.append(doc.model_copy(update={"doc_id": doc_id, "added_at": now}))
        report.removed = sorted(set(remove))
        if not new_docs and not drop:
            report.seconds = time.perf_counter() - started
            return Index.load(index_dir), report

        build = _new_build_dir(index_dir)  # a kill from here on leaves only this folder behind
        chunk_store = _copy_store(manifest, live / "chunks", build / "chunks")
        sentence_store = _copy_store(manifest, live / "sentences", build / "sentences")
        gone_chunks = np.asarray([c.chunk_id for c in table.chunks if c.doc_id in drop], dtype=np.int64)
        gone_sentences = np.asarray([s.sentence_id for s in table.sentences if s.doc_id in drop], dtype=np.int64)
        in_place = _is_server(chunk_store)
        rows = _rows_of(new_docs, embedder, settings, manifest.next_chunk_id, manifest.next_sentence_id, progress, manifest.dim)
        if in_place:  # leftovers of an update killed before its flip may hold these ids
            chunk_store.delete(rows.chunk_ids())
            sentence_store.delete(rows.sentence_ids())
        else:
            chunk_store.delete(gone_chunks)
            sentence_store.delete(gone_sentences)
        chunk_store.add(rows.chunk_ids(), rows.chunk_vectors)
        sentence_store.add(rows.sentence_ids(), rows.sentence_vectors)

        keep = [c for c in table.chunks if c.doc_id not in drop]
        chunk_sentences = [sids for c, sids in zip(table.chunks, table.chunk_sentences) if c.doc_id not in drop]
        documents = [d for d in table.documents if d.doc_id not in drop]
        replaced = {d.doc_id for d in new_docs}
        corpus, excluded = dict(manifest.corpus), dict(manifest.excluded)
        for doc in (d for d in table.documents if d.doc_id in drop):
            if _in_folder(doc.path, corpus_dir):
                name = Path(doc.path).name
                corpus.pop(name, None)
                if doc.doc_id not in replaced and name not in forget_corpus_files:
                    excluded[name] = doc.sha256
        for doc in new_docs:
            if _in_folder(doc.path, corpus_dir):
                corpus[Path(doc.path).name] = doc.sha256
                excluded.pop(Path(doc.path).name, None)
        new_table = Table(
            documents=documents + new_docs,
            chunks=keep + rows.chunks,
            sentences=[s for s in table.sentences if s.doc_id not in drop] + rows.sentences,
            chunk_sentences=chunk_sentences + rows.chunk_sentences,
        )
        new_manifest = manifest.model_copy(update={
            "corpus": corpus,
            "excluded": excluded,
            "n_chunks": len(new_table.chunks),
            "n_sentences": len(new_table.sentences),
            "next_chunk_id": manifest.next_chunk_id + len(rows.chunks),
            "next_sentence_id": manifest.next_sentence_id + len(rows.sentences),
            "built_at": now,
        })
        index = Index(new_manifest, new_table, chunk_store, sentence_store)
        index._save_locked(index_dir, build)
        if in_place:  # after the flip: the new table no longer names them
            chunk_store.delete(gone_chunks)
            sentence_store.delete(gone_sentences)
    report.seconds = time.perf_counter() - started
    log.info("index: +%d ~%d -%d documents in %.2f s", len(report.added), len(report.replaced), len(report.removed), report.seconds)
    return index, report


def migrate_index(settings: Settings, to: str, progress: bool = False) -> Index:
    """Move the live index's vectors into stores of kind `to` (no re-embedding), atomically.

    Reads every vector from the current stores by id, writes them to new stores in a new build
    folder, and flips `current`; the tables are copied as they are.
    """
    from .store import store_class

    store_class(to)  # fail early on an unknown name
    index_dir = settings.index_dir
    assert index_dir is not None
    with _locked(index_dir):
        old = Index.load(index_dir)
        build = _new_build_dir(index_dir)
        stores = []
        for source, ids in ((old.chunk_store, [c.chunk_id for c in old.chunks]), (old.sentence_store, [s.sentence_id for s in old.sentences])):
            target = new_store(to, old.manifest.dim)
            ids_arr = np.asarray(ids, dtype=np.int64)
            for i in _progress(range(0, len(ids_arr), 10_000), progress, f"copying vectors to {to}"):
                part = ids_arr[i : i + 10_000]
                target.add(part, source.get(part))
            stores.append(target)
        manifest = old.manifest.model_copy(update={"store": to, "built_at": time.time()})
        index = Index(manifest, old.table(), stores[0], stores[1])
        index._save_locked(index_dir, build)
    for store in (old.chunk_store, old.sentence_store):
        if hasattr(store, "close"):
            store.close()
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
            names = sorted({Path(d.path).name for d in add} | set(gone))
            log.warning("index: updating because corpus changed: %s", ", ".join(names))
            gone_ids = [d.doc_id for d in index.documents.values() if Path(d.path).name in gone and _in_folder(d.path, settings.corpus_dir)]
            updated, report = update_index(settings, embedder, add=add, remove=gone_ids, progress=progress, forget_corpus_files=gone)
            for problem in report.problems:
                log.warning("index: %s", problem)
            return updated
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
        build = _new_build_dir(index_dir)  # a kill from here on leaves only this folder behind
        index = Index.build(corpus, embedder, settings, progress=progress)
        index._save_locked(index_dir, build)
    log.info("index: built %d chunks, %d sentences from %d documents", len(index.chunks), len(index.sentences), len(index.documents))
    return index


def _load_fresh(corpus: Corpus, embedder: Encoder, settings: Settings) -> Index:
    index = Index.load(settings.index_dir)  # type: ignore[arg-type]
    index.check_fresh(corpus, embedder, settings)
    return index


class _Rows(BaseModel):
    """New table rows and their vectors, ids already given."""

    model_config = {"arbitrary_types_allowed": True}
    chunks: list[Chunk]
    sentences: list[Sentence]
    chunk_sentences: list[list[int]]
    chunk_vectors: np.ndarray
    sentence_vectors: np.ndarray

    def chunk_ids(self) -> np.ndarray:
        return np.asarray([c.chunk_id for c in self.chunks], dtype=np.int64)

    def sentence_ids(self) -> np.ndarray:
        return np.asarray([s.sentence_id for s in self.sentences], dtype=np.int64)


def _rows_of(
    documents: list[Document], embedder: Encoder, settings: Settings, first_chunk: int, first_sentence: int, progress: bool, dim: int | None = None
) -> _Rows:
    """Chunk `documents` (ids from the given first ones) and embed their chunks and sentences.

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
    if not chunks and not sentences:  # nothing to embed: never load the model for a removal
        empty = np.zeros((0, dim if dim is not None else embedder.dim), dtype=np.float32)
        return _Rows(chunks=[], sentences=[], chunk_sentences=[], chunk_vectors=empty, sentence_vectors=empty)
    chunk_vectors, sentence_vectors = _embed_documents(embedder, documents, chunks, sentences, per_doc, progress)
    return _Rows(chunks=chunks, sentences=sentences, chunk_sentences=chunk_sentences, chunk_vectors=chunk_vectors, sentence_vectors=sentence_vectors)


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


def _progress(iterable, show: bool, desc: str):
    if not show:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc)


def _read_build(build: Path) -> tuple[Manifest, Table]:
    """The manifest and table of a build folder, checked (files against the manifest's hashes,
    spans against their documents); the stores are not opened.

    Raises:
        StaleIndex: missing, truncated, corrupt or inconsistent files.
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
        manifest = Manifest.model_validate(raw)
    except ValidationError as err:
        raise StaleIndex(f"unreadable manifest ({err.__class__.__name__})") from err
    try:
        for name, digest in manifest.files.items():
            path = build / name
            if not path.exists() or file_sha256(path) != digest:
                raise StaleIndex(f"{name} is missing, truncated or changed since the build")
        table = Table.model_validate_json((build / "table.json").read_text(encoding="utf-8"))
    except (ValidationError, ValueError, OSError) as err:
        raise StaleIndex(f"corrupt index files ({err.__class__.__name__}: {err})") from err
    return manifest, table


def _check_counts(manifest: Manifest, table: Table) -> None:
    if (manifest.n_chunks, manifest.n_sentences) != (len(table.chunks), len(table.sentences)):
        raise StaleIndex("the chunk table disagrees with the manifest")
    if len(table.chunk_sentences) != len(table.chunks):
        raise StaleIndex("the chunk -> sentences map disagrees with the chunk table")
    _check_spans(table, manifest)


class _NoStore:
    """Stands in for the stores when only the tables are needed."""


def _copy_store(manifest: Manifest, source: Path, target: Path) -> VectorStore:
    """A private copy of a saved store in `target`, opened: changing it leaves `source` as it was.
    (A server store's folder only names its collection, so the copy is the same rows.)"""
    try:
        shutil.copytree(source, target)
        return open_store(manifest.store, target, manifest.dim)
    except (OSError, StoreError, ValueError) as err:
        raise StaleIndex(f"cannot copy the {source.name} store ({err.__class__.__name__}: {err})") from err


def _is_server(store: VectorStore) -> bool:
    return bool(getattr(store, "is_lite", True) is False)


def _checked(path: Path) -> bool:
    """Files the manifest hashes: all but a database folder's internals (Milvus Lite rewrites them)."""
    return not any(part.endswith(".db") for part in path.parts[:-1])


def _resolved(path: str) -> str:
    try:
        return str(Path(path).resolve())
    except OSError:
        return path


def _in_folder(path: str, folder: Path | None) -> bool:
    return folder is not None and Path(_resolved(path)).parent == Path(folder).resolve()


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


def _fsync_dir(path: Path) -> None:
    for file in [path, *path.iterdir()] if path.is_dir() else [path]:
        try:
            fd = os.open(file, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass


def _check_spans(table: Table, manifest: Manifest) -> None:
    """Every chunk and sentence must quote its document at its offsets, with ids increasing and
    below the next free id: a table from another build would cite text that is not where it says."""
    texts = {d.doc_id: d.text for d in table.documents}
    for kind, rows, id_of, limit in (
        ("chunk", table.chunks, lambda r: r.chunk_id, manifest.next_chunk_id),
        ("sentence", table.sentences, lambda r: r.sentence_id, manifest.next_sentence_id),
    ):
        last = -1
        for row in rows:
            doc = texts.get(row.doc_id)
            if not last < id_of(row) < limit or doc is None or doc[row.start : row.end] != row.text:
                raise StaleIndex(f"the chunk table disagrees with its documents ({kind} {id_of(row)} of {row.doc_id})")
            last = id_of(row)


@contextmanager
def _locked(index_dir: Path) -> Iterator[None]:
    """Exclusive lock on index_dir/.lock for one build; released by the kernel if we are killed."""
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


def _remove_old_builds(index_dir: Path, keep: str) -> None:
    """Delete older builds, leftovers of killed ones and their half-made `current` links.

    Runs under the save lock, so no other save is writing a build folder; the folder
    `current` points at is never removed.
    """
    live = os.path.basename(os.readlink(index_dir / CURRENT)) if (index_dir / CURRENT).is_symlink() else keep
    for path in index_dir.iterdir():
        if path.name.startswith("build-") and path.name not in (keep, live) and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            log.info("index: removed old or unfinished build %s", path.name)
        elif path.name.startswith(f".{CURRENT}.tmp-") and path.is_symlink():
            path.unlink(missing_ok=True)
