"""The index: document/chunk/sentence tables + a manifest + two vector stores; build, save, load, atomically.

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
"""

from __future__ import annotations

import fcntl
import hashlib
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
from .corpus import Corpus
from .embedding import EmbeddingModel, Encoder
from .store import StoreError, VectorStore, new_store, open_store
from .types import Chunk, Document, Sentence

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # v2: vector stores in folders, store kind and embedding identity, chunk -> sentences map
CURRENT = "current"
LOCK = ".lock"
STORES = ("chunks", "sentences")


class Manifest(BaseModel):
    format_version: int
    store: str = Field(description="the vector store kind (rag.store.STORES) that holds the vectors")
    embedding: EmbeddingModel
    dim: int
    chunk_size: int
    chunk_overlap: int
    corpus: dict[str, str]  # file name -> sha256 of its bytes
    n_chunks: int
    n_sentences: int
    files: dict[str, str]  # artefact path in the build -> sha256, to catch a truncated or swapped file
    built_at: float


class Table(BaseModel):
    documents: list[Document]
    chunks: list[Chunk]
    sentences: list[Sentence]
    chunk_sentences: list[list[int]] = Field(description="chunk id -> ids of the sentences it overlaps, in order")


class StaleIndex(Exception):
    """The index on disk cannot be used as-is; the message says why (and so why it is rebuilt)."""


class Index:
    """The tables that map vectors back to source text, and the stores holding the vectors.

    Row ids in the stores are chunk and sentence ids. Document texts live here (in the table),
    so every offset, citation and the viewer read them from one place.
    """

    def __init__(self, manifest: Manifest, table: Table, chunk_store: VectorStore, sentence_store: VectorStore) -> None:
        self.manifest = manifest
        self.documents = {d.doc_id: d for d in table.documents}
        self.chunks = table.chunks
        self.sentences = table.sentences
        self.chunk_sentences = table.chunk_sentences
        self.chunk_store = chunk_store
        self.sentence_store = sentence_store

    # -- building -------------------------------------------------------------------------
    @classmethod
    def build(cls, corpus: Corpus, embedder: Encoder, settings: Settings, progress: bool = False) -> "Index":
        """Chunk every document and embed chunks and sentences into new stores of `settings.store`."""
        chunks: list[Chunk] = []
        sentences: list[Sentence] = []
        chunk_sentences: list[list[int]] = []
        for doc in corpus.documents:
            doc_chunks, doc_sentences = chunk_document(
                doc.doc_id, doc.text, settings.chunk_size, settings.chunk_overlap, embedder.count_tokens, len(chunks)
            )
            doc_sentences = [s.model_copy(update={"sentence_id": len(sentences) + n}) for n, s in enumerate(doc_sentences)]
            chunk_sentences += [[s.sentence_id for s in doc_sentences if s.start < c.end and s.end > c.start] for c in doc_chunks]
            chunks.extend(doc_chunks)
            sentences.extend(doc_sentences)
        texts = [c.text for c in chunks] + [s.text for s in sentences]
        vectors = _embed(embedder, texts, progress)
        dim = int(vectors.shape[1])
        chunk_store = new_store(settings.store, dim)
        chunk_store.add(np.arange(len(chunks), dtype=np.int64), vectors[: len(chunks)])
        sentence_store = new_store(settings.store, dim)
        sentence_store.add(np.arange(len(sentences), dtype=np.int64), vectors[len(chunks) :])
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            store=settings.store,
            embedding=embedder.identity(),
            dim=dim,
            chunk_size=settings.chunk_size,
            chunk_overlap=settings.chunk_overlap,
            corpus={Path(d.path).name: d.sha256 for d in corpus.documents},
            n_chunks=len(chunks),
            n_sentences=len(sentences),
            files={},
            built_at=time.time(),
        )
        table = Table(documents=corpus.documents, chunks=chunks, sentences=sentences, chunk_sentences=chunk_sentences)
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
        table = Table(
            documents=list(self.documents.values()), chunks=self.chunks, sentences=self.sentences, chunk_sentences=self.chunk_sentences
        )
        (build / "table.json").write_text(table.model_dump_json(), encoding="utf-8")
        files = {p.relative_to(build).as_posix(): _sha256(p) for p in sorted(build.rglob("*")) if p.is_file()}
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
        if not (build / "manifest.json").exists():
            raise StaleIndex(f"no index at {index_dir / CURRENT}")
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
                if not path.exists() or _sha256(path) != digest:
                    raise StaleIndex(f"{name} is missing, truncated or changed since the build")
            table = Table.model_validate_json((build / "table.json").read_text(encoding="utf-8"))
            chunk_store = open_store(manifest.store, build / "chunks", manifest.dim)
            sentence_store = open_store(manifest.store, build / "sentences", manifest.dim)
        except (ValidationError, ValueError, StoreError, OSError) as err:
            raise StaleIndex(f"corrupt index files ({err.__class__.__name__}: {err})") from err
        if chunk_store.count() != len(table.chunks) or sentence_store.count() != len(table.sentences):
            raise StaleIndex("the chunk table disagrees with the vectors")
        if (manifest.n_chunks, manifest.n_sentences) != (len(table.chunks), len(table.sentences)):
            raise StaleIndex("the chunk table disagrees with the manifest")
        if len(table.chunk_sentences) != len(table.chunks):
            raise StaleIndex("the chunk -> sentences map disagrees with the chunk table")
        _check_spans(table)
        return cls(manifest, table, chunk_store, sentence_store)

    def check_fresh(self, corpus: Corpus, embedder: Encoder, settings: Settings) -> None:
        """Raises StaleIndex when the corpus, the embedding model, the store or the chunk settings changed."""
        m = self.manifest
        model = embedder.identity()
        if m.embedding != model:
            raise StaleIndex(f"built with {m.embedding}, settings use {model}")
        if m.store != settings.store:
            raise StaleIndex(f"built into a {m.store} store, settings use {settings.store}")
        if (m.chunk_size, m.chunk_overlap) != (settings.chunk_size, settings.chunk_overlap):
            raise StaleIndex(
                f"chunk settings changed ({m.chunk_size}/{m.chunk_overlap} -> {settings.chunk_size}/{settings.chunk_overlap})"
            )
        now = {Path(d.path).name: d.sha256 for d in corpus.documents}
        if now != m.corpus:
            changed = sorted(set(now.items()) ^ set(m.corpus.items()))
            names = sorted({name for name, _ in changed})
            raise StaleIndex(f"corpus changed: {', '.join(names)}")


def ensure_index(corpus: Corpus, embedder: Encoder, settings: Settings, rebuild: bool = False, progress: bool = False) -> Index:
    """Load the index if it matches corpus and settings; otherwise rebuild it (and say why).

    A rebuild holds the index lock from creating its build folder to flipping `current`, so
    two processes never build at once: the second waits, then uses the first one's index.
    """
    assert settings.index_dir is not None
    index_dir = settings.index_dir
    if not rebuild:
        try:
            return _load_fresh(corpus, embedder, settings)
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


def _new_build_dir(index_dir: Path) -> Path:
    build = index_dir / f"build-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    build.mkdir()
    return build


def _embed(embedder: Encoder, texts: list[str], progress: bool) -> np.ndarray:
    if not progress:
        return embedder.encode(texts)
    from tqdm import tqdm

    parts = []
    with tqdm(total=len(texts), desc="Embedding chunks and sentences", unit="text") as bar:
        for i in range(0, len(texts), 32):
            parts.append(embedder.encode(texts[i : i + 32]))
            bar.update(len(texts[i : i + 32]))
    return np.concatenate(parts) if parts else embedder.encode([])


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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


def _check_spans(table: Table) -> None:
    """Every chunk and sentence must quote its document at its offsets, with ids in order:
    a table from another build would cite text that is not where it says."""
    texts = {d.doc_id: d.text for d in table.documents}
    for kind, rows, id_of in (
        ("chunk", table.chunks, lambda r: r.chunk_id),
        ("sentence", table.sentences, lambda r: r.sentence_id),
    ):
        for n, row in enumerate(rows):
            doc = texts.get(row.doc_id)
            if id_of(row) != n or doc is None or doc[row.start : row.end] != row.text:
                raise StaleIndex(f"the chunk table disagrees with its documents ({kind} {n} of {row.doc_id})")


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
