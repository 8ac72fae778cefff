"""Build, save and load the on-disk index: FAISS vectors + chunk/sentence tables + manifest.

Layout under index/:
    current -> build-<time>-<pid>/    (a symlink, flipped atomically after a complete build)
    build-.../manifest.json          format version, models, chunk settings, corpus hashes
    build-.../chunks.faiss, sentences.faiss, table.json
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

import faiss
import numpy as np
from pydantic import BaseModel, ValidationError

from .chunking import chunk_document
from .config import Settings
from .corpus import Corpus
from .embedding import Embedder
from .types import Chunk, Document, Sentence

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CURRENT = "current"
LOCK = ".lock"


class Manifest(BaseModel):
    format_version: int
    embedding_model: str
    dim: int
    chunk_size: int
    chunk_overlap: int
    corpus: dict[str, str]  # file name -> sha256 of its bytes
    n_chunks: int
    n_sentences: int
    files: dict[str, str]  # artefact name -> sha256, to catch a truncated or swapped file
    built_at: float


class Table(BaseModel):
    documents: list[Document]
    chunks: list[Chunk]
    sentences: list[Sentence]


class StaleIndex(Exception):
    """The index on disk cannot be used as-is; the message says why (and so why it is rebuilt)."""


class Index:
    """Vectors for chunks and sentences, and the tables that map rows back to source text."""

    def __init__(
        self, manifest: Manifest, table: Table, chunk_vectors: faiss.Index, sentence_vectors: faiss.Index
    ) -> None:
        self.manifest = manifest
        self.documents = {d.doc_id: d for d in table.documents}
        self.chunks = table.chunks
        self.sentences = table.sentences
        self.chunk_vectors = chunk_vectors
        self.sentence_vectors = sentence_vectors

    # -- building -------------------------------------------------------------------------
    @classmethod
    def build(cls, corpus: Corpus, embedder: Embedder, settings: Settings, progress: bool = False) -> "Index":
        """Chunk every document and embed chunks and sentences."""
        chunks: list[Chunk] = []
        sentences: list[Sentence] = []
        for doc in corpus.documents:
            doc_chunks, doc_sentences = chunk_document(
                doc.doc_id, doc.text, settings.chunk_size, settings.chunk_overlap, embedder.count_tokens, len(chunks)
            )
            chunks.extend(doc_chunks)
            for s in doc_sentences:
                sentences.append(s.model_copy(update={"sentence_id": len(sentences)}))
        texts = [c.text for c in chunks] + [s.text for s in sentences]
        vectors = _embed(embedder, texts, progress)
        chunk_vectors = _flat_ip(vectors[: len(chunks)])
        sentence_vectors = _flat_ip(vectors[len(chunks) :])
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            embedding_model=embedder.name,
            dim=int(vectors.shape[1]),
            chunk_size=settings.chunk_size,
            chunk_overlap=settings.chunk_overlap,
            corpus={Path(d.path).name: d.sha256 for d in corpus.documents},
            n_chunks=len(chunks),
            n_sentences=len(sentences),
            files={},
            built_at=time.time(),
        )
        return cls(manifest, Table(documents=corpus.documents, chunks=chunks, sentences=sentences), chunk_vectors, sentence_vectors)

    # -- saving / loading -----------------------------------------------------------------
    def save(self, index_dir: Path) -> Path:
        """Write a complete build folder, then flip `index_dir/current` to it atomically."""
        with _locked(index_dir):
            return self._save_locked(index_dir, _new_build_dir(index_dir))

    def _save_locked(self, index_dir: Path, build: Path) -> Path:
        """Fill `build`, flip `current` to it, remove older builds. The caller holds the lock."""
        faiss.write_index(self.chunk_vectors, str(build / "chunks.faiss"))
        faiss.write_index(self.sentence_vectors, str(build / "sentences.faiss"))
        table = Table(documents=list(self.documents.values()), chunks=self.chunks, sentences=self.sentences)
        (build / "table.json").write_text(table.model_dump_json(), encoding="utf-8")
        files = {name: _sha256(build / name) for name in ("chunks.faiss", "sentences.faiss", "table.json")}
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
            manifest = Manifest.model_validate_json((build / "manifest.json").read_text(encoding="utf-8"))
        except (ValidationError, ValueError, OSError) as err:
            raise StaleIndex(f"unreadable manifest ({err.__class__.__name__})") from err
        if manifest.format_version != FORMAT_VERSION:
            raise StaleIndex(f"index format v{manifest.format_version}, this code reads v{FORMAT_VERSION}")
        try:
            for name, digest in manifest.files.items():
                path = build / name
                if not path.exists() or _sha256(path) != digest:
                    raise StaleIndex(f"{name} is missing, truncated or changed since the build")
            table = Table.model_validate_json((build / "table.json").read_text(encoding="utf-8"))
            chunk_vectors = faiss.read_index(str(build / "chunks.faiss"))
            sentence_vectors = faiss.read_index(str(build / "sentences.faiss"))
        except (ValidationError, ValueError, RuntimeError, OSError) as err:
            raise StaleIndex(f"corrupt index files ({err.__class__.__name__}: {err})") from err
        if chunk_vectors.ntotal != len(table.chunks) or sentence_vectors.ntotal != len(table.sentences):
            raise StaleIndex("the chunk table disagrees with the vectors")
        if (manifest.n_chunks, manifest.n_sentences) != (len(table.chunks), len(table.sentences)):
            raise StaleIndex("the chunk table disagrees with the manifest")
        _check_spans(table)
        if chunk_vectors.d != manifest.dim or sentence_vectors.d != manifest.dim:
            raise StaleIndex("vector size differs from the manifest")
        return cls(manifest, table, chunk_vectors, sentence_vectors)

    def check_fresh(self, corpus: Corpus, embedder: Embedder, settings: Settings) -> None:
        """Raises StaleIndex when the corpus, the embedding model or the chunk settings changed."""
        m = self.manifest
        if m.embedding_model != embedder.name:
            raise StaleIndex(f"built with {m.embedding_model}, settings use {embedder.name}")
        if (m.chunk_size, m.chunk_overlap) != (settings.chunk_size, settings.chunk_overlap):
            raise StaleIndex(
                f"chunk settings changed ({m.chunk_size}/{m.chunk_overlap} -> {settings.chunk_size}/{settings.chunk_overlap})"
            )
        now = {Path(d.path).name: d.sha256 for d in corpus.documents}
        if now != m.corpus:
            changed = sorted(set(now.items()) ^ set(m.corpus.items()))
            names = sorted({name for name, _ in changed})
            raise StaleIndex(f"corpus changed: {', '.join(names)}")


def ensure_index(corpus: Corpus, embedder: Embedder, settings: Settings, rebuild: bool = False, progress: bool = False) -> Index:
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


def _load_fresh(corpus: Corpus, embedder: Embedder, settings: Settings) -> Index:
    index = Index.load(settings.index_dir)  # type: ignore[arg-type]
    index.check_fresh(corpus, embedder, settings)
    return index


def _new_build_dir(index_dir: Path) -> Path:
    build = index_dir / f"build-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    build.mkdir()
    return build


def _embed(embedder: Embedder, texts: list[str], progress: bool) -> np.ndarray:
    if not progress:
        return embedder.encode(texts)
    from tqdm import tqdm

    parts = []
    with tqdm(total=len(texts), desc="Embedding chunks and sentences", unit="text") as bar:
        for i in range(0, len(texts), 32):
            parts.append(embedder.encode(texts[i : i + 32]))
            bar.update(len(texts[i : i + 32]))
    return np.concatenate(parts) if parts else embedder.encode([])


def _flat_ip(vectors: np.ndarray) -> faiss.Index:
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


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
