"""Load the articles in corpus/: one Document per readable file (its converter picked by suffix), problems reported by name."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from pydantic import BaseModel

from .ingest import ConversionError, converter_for, supported_suffixes
from .types import Document

log = logging.getLogger(__name__)

TITLE_MAX_CHARS = 120


class CorpusProblem(BaseModel):
    """A file that was not indexed as-is, and what was done about it."""

    name: str
    action: str  # "skipped", "decoded with replacement", "deduplicated", "indexed as '<name>'"
    reason: str

    def __str__(self) -> str:
        return f"{self.name}: {self.action} ({self.reason})"


class Corpus(BaseModel):
    documents: list[Document]
    problems: list[CorpusProblem] = []

    def get(self, doc_id: str) -> Document:
        for doc in self.documents:
            if doc.doc_id == doc_id:
                return doc
        raise KeyError(doc_id)


class EmptyCorpusError(RuntimeError):
    """Raised when no usable document is found: there is nothing to answer from."""


def title_of(text: str, fallback: str) -> str:
    """The first non-empty line, shortened for display.

    >>> title_of("\\n  Big news  \\nbody", "x")
    'Big news'
    """
    for line in text.splitlines():
        line = line.strip()
        if line:
            if len(line) > TITLE_MAX_CHARS:
                line = line[: TITLE_MAX_CHARS - 1].rsplit(" ", 1)[0] + "…"
            return line
    return fallback


def corpus_files(corpus_dir: Path) -> list[Path]:
    """Every file (and link, even a dangling one) in the folder, sorted by name; hidden files
    and subfolders are ignored."""
    if not corpus_dir.is_dir():
        return []
    return sorted(p for p in corpus_dir.iterdir() if (p.is_file() or p.is_symlink()) and not p.name.startswith("."))


def load_corpus(corpus_dir: Path, max_file_bytes: int = 5_000_000) -> Corpus:
    """Read the corpus folder.

    Nothing is skipped silently: every file that is not indexed unchanged gets a CorpusProblem,
    which is also logged. Offsets of chunks refer to `Document.text`, the converter's text.

    Raises:
        EmptyCorpusError: the folder is missing or holds no usable document.
    """
    documents: list[Document] = []
    problems: list[CorpusProblem] = []
    seen: dict[str, str] = {}  # normalised content -> first file name holding it
    for path in corpus_files(corpus_dir):
        name = path.name
        try:
            converter = converter_for(path)
        except ConversionError as err:
            problems.append(CorpusProblem(name=name, action="skipped", reason=str(err)))
            continue
        try:
            size = path.stat().st_size
            if size > max_file_bytes:
                problems.append(
                    CorpusProblem(name=name, action="skipped", reason=f"{size} bytes is over the {max_file_bytes}-byte limit")
                )
                continue
            data = path.read_bytes()
        except OSError as err:  # vanished, unreadable, a dangling link: one bad file must not stop the rest
            problems.append(CorpusProblem(name=name, action="skipped", reason=f"unreadable ({err.strerror or err})"))
            continue
        try:
            extracted = converter.convert(data, path)
        except ConversionError as err:  # one bad file, never the batch
            problems.append(CorpusProblem(name=name, action="skipped", reason=str(err)))
            continue
        problems += [CorpusProblem(name=name, action=r.action, reason=r.reason) for r in extracted.repairs]
        text = extracted.text
        if not text.strip():
            problems.append(CorpusProblem(name=name, action="skipped", reason="empty or whitespace only"))
            continue
        # A copy saved with other line endings, a BOM or trailing blank lines is still a copy.
        key = hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()
        if key in seen:
            problems.append(CorpusProblem(name=name, action="deduplicated", reason=f"same content as {seen[key]}"))
            continue
        seen[key] = name
        documents.append(
            Document(
                doc_id=path.stem,
                title=extracted.title or title_of(text, path.stem),
                text=text,
                path=str(path),
                sha256=hashlib.sha256(data).hexdigest(),
                pages=extracted.pages,
            )
        )
    documents = _unique_ids(documents, problems)
    for problem in problems:
        log.warning("corpus: %s", problem)
    if not documents:
        raise EmptyCorpusError(
            f"No usable documents in {corpus_dir}: add articles there ({', '.join(supported_suffixes())})"
            + (f" (problems: {'; '.join(map(str, problems))})" if problems else "")
        )
    return Corpus(documents=documents, problems=problems)


def _unique_ids(documents: list[Document], problems: list[CorpusProblem]) -> list[Document]:
    """"a.txt" and "a.md" are two documents, and a citation must say which: the .txt keeps the
    id "a" (so adding a file never renames an indexed one), the others use their file name."""
    owners: dict[str, Document] = {}
    for doc in sorted(documents, key=lambda d: Path(d.path).suffix.lower() != ".txt"):
        owners.setdefault(doc.doc_id, doc)
    out = []
    for doc in documents:
        owner = owners[doc.doc_id]
        if owner is not doc:
            name = Path(doc.path).name
            problems.append(
                CorpusProblem(name=name, action=f"indexed as {name!r}", reason=f"id {doc.doc_id!r} is taken by {Path(owner.path).name}")
            )
            doc = doc.model_copy(update={"doc_id": name})
        out.append(doc)
    return out
