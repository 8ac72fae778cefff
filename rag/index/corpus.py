"""Load the articles in corpus/: one Document per readable file (its converter picked by suffix), problems reported by name."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from ..ingest import ConversionError, converter_for, supported_suffixes
from ..types import DEFAULT_COLLECTION, Document

if TYPE_CHECKING:
    from ..config import Settings

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
    unchanged: list[str] = Field([], description="file names not converted again: their bytes are what the index already holds")

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


def safe_file_name(name: str) -> str:
    """A file name that stays inside the folder it is saved in: the last path component only
    (either slash), no leading dots, no control characters; "upload" if nothing is left.

    >>> safe_file_name("../../etc/passwd"), safe_file_name("a/.x.pdf"), safe_file_name("..")
    ('passwd', 'x.pdf', 'upload')
    """
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip().lstrip(".").strip()
    return name[:200] or "upload"


COLLECTION_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def check_collection(name: str) -> str:
    """A collection name as given, if it is one: 1-64 letters, digits, dots, dashes or underscores,
    not only dots (it names a folder of corpus/).

    >>> check_collection("hr"), check_collection("team-2.docs")
    ('hr', 'team-2.docs')

    Raises:
        ValueError: it is not.
    """
    if not isinstance(name, str) or not COLLECTION_NAME.fullmatch(name) or not name.strip("."):
        raise ValueError(f"{name!r} is not a collection name: use 1-64 letters, digits, '.', '-' or '_'.")
    return name


def corpus_files(corpus_dir: Path) -> list[Path]:
    """Every file (and link, even a dangling one) directly in the folder or in one of its
    subfolders (a collection each), sorted; hidden files and folders, and folders deeper down,
    are ignored."""
    if not corpus_dir.is_dir():
        return []
    found = []
    for p in sorted(corpus_dir.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            if COLLECTION_NAME.fullmatch(p.name):
                found += [f for f in sorted(p.iterdir()) if (f.is_file() or f.is_symlink()) and not f.name.startswith(".")]
            else:
                log.warning("corpus: folder %r ignored: not a collection name (letters, digits, '.', '-', '_')", p.name)
        elif p.is_file() or p.is_symlink():
            found.append(p)
    return found


def collection_of(path: Path | str, corpus_dir: Path | None) -> str | None:
    """The collection of a file of the corpus folder (its subfolder, or DEFAULT_COLLECTION for
    a file directly in it); None for a file elsewhere.

    >>> collection_of("/c/hr/a.pdf", Path("/c")), collection_of("/c/a.pdf", Path("/c")), collection_of("/x/a.pdf", Path("/c"))
    ('hr', 'default', None)
    """
    if corpus_dir is None:
        return None
    parent, root = Path(_resolved(path)).parent, Path(_resolved(corpus_dir))
    if parent == root:
        return DEFAULT_COLLECTION
    if parent.parent == root:
        return parent.name
    return None


def corpus_name(path: Path | str, collection: str) -> str:
    """How the manifest names a corpus-folder file: its name, under its collection's folder
    unless it is in the default one.

    >>> corpus_name("/c/hr/a.pdf", "hr"), corpus_name("/c/a.pdf", "default")
    ('hr/a.pdf', 'a.pdf')
    """
    name = Path(path).name
    return name if collection == DEFAULT_COLLECTION else f"{collection}/{name}"


def in_collection(doc: Document, collection: str) -> Document:
    """`doc` in `collection`; outside the default one its id starts with the collection's name,
    so two collections never compete for an id (and an id says nothing of another collection)."""
    doc_id = doc.doc_id if collection == DEFAULT_COLLECTION else f"{collection}/{doc.doc_id}"
    return doc.model_copy(update={"collection": check_collection(collection), "doc_id": doc_id})


def _resolved(path: Path | str) -> str:
    try:
        return str(Path(path).resolve())
    except OSError:
        return str(path)


def content_key(text: str) -> str:
    """What makes two documents copies: their words, whatever the line endings or spacing."""
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()


def read_document(path: Path, max_file_bytes: int, settings: "Settings | None" = None) -> tuple[Document | None, list[CorpusProblem]]:
    """One file through its converter (picked by suffix): the Document, or None and the reason.

    Never raises for a bad file: unsupported type, over the size limit, unreadable, damaged,
    encrypted, empty or without text each come back as a CorpusProblem naming the file, so one
    bad file never stops the others. Repairs (e.g. decoding with replacement, a page OCR could
    not read in time) come back too. `settings` reach the converters that use them (OCR's
    limits); without them those read Settings() from the environment.
    """
    name = path.name
    try:
        converter = converter_for(path, settings)
    except ConversionError as err:
        return None, [CorpusProblem(name=name, action="skipped", reason=str(err))]
    try:
        size = path.stat().st_size
        if size > max_file_bytes:
            return None, [CorpusProblem(name=name, action="skipped", reason=f"{size} bytes is over the {max_file_bytes}-byte limit")]
        data = path.read_bytes()
    except OSError as err:  # vanished, unreadable, a dangling link
        return None, [CorpusProblem(name=name, action="skipped", reason=f"unreadable ({err.strerror or err})")]
    try:
        extracted = converter.convert(data, path)
    except ConversionError as err:
        return None, [CorpusProblem(name=name, action="skipped", reason=str(err))]
    problems = [CorpusProblem(name=name, action=r.action, reason=r.reason) for r in extracted.repairs]
    if not extracted.text.strip():
        return None, problems + [CorpusProblem(name=name, action="skipped", reason="empty or whitespace only")]
    doc = Document(
        doc_id=path.stem,
        title=extracted.title or title_of(extracted.text, path.stem),
        text=extracted.text,
        path=str(path),
        sha256=hashlib.sha256(data).hexdigest(),
        pages=extracted.pages,
        ocr_pages=extracted.ocr_pages,
    )
    return doc, problems


def read_into(
    path: Path, max_file_bytes: int, collection: str | None, corpus_dir: Path | None, settings: "Settings | None" = None
) -> tuple[Document | None, list[CorpusProblem]]:
    """`read_document`, in its collection: a file of the corpus folder is in its folder's
    collection (asking for another one is a problem, since the folder says who may read it);
    any other file is in `collection`, or the default one."""
    folder = collection_of(path, corpus_dir)
    if folder is not None and collection is not None and collection != folder:
        return None, [CorpusProblem(name=path.name, action="skipped", reason=f"it is in the corpus folder's {folder!r} collection, not {collection!r}: move the file instead")]
    doc, problems = read_document(path, max_file_bytes, settings)
    return (None if doc is None else in_collection(doc, folder or collection or DEFAULT_COLLECTION)), problems


def load_corpus(
    corpus_dir: Path, max_file_bytes: int = 5_000_000, indexed: dict[str, str] | None = None, settings: "Settings | None" = None
) -> Corpus:
    """Read the corpus folder.

    Nothing is skipped silently: every file that is not indexed unchanged gets a CorpusProblem,
    which is also logged. Offsets of chunks refer to `Document.text`, the converter's text.

    Args:
        indexed: file name -> sha256 of the bytes the index holds for it. A file whose bytes
            still hash to that is only hashed, not converted (a start over thousands of PDFs
            reads them, it does not parse them); its name goes to `Corpus.unchanged`.
        settings: for the converters that use them (OCR's limits); see `read_document`.

    Raises:
        EmptyCorpusError: the folder is missing or holds no usable document.
    """
    documents: list[Document] = []
    problems: list[CorpusProblem] = []
    unchanged: list[str] = []
    seen: dict[tuple[str, str], str] = {}  # (collection, normalised content) -> first file name holding it
    for path in corpus_files(corpus_dir):
        collection = DEFAULT_COLLECTION if path.parent == corpus_dir else path.parent.name
        name = corpus_name(path, collection)
        if indexed and name in indexed and _sha256(path) == indexed[name]:
            unchanged.append(name)
            continue
        doc, found = read_document(path, max_file_bytes, settings)
        problems += found
        if doc is None:
            continue
        doc = in_collection(doc, collection)
        # A copy saved with other line endings, a BOM or trailing blank lines is still a copy
        # (within a collection: the same text in two collections is two documents, read by different people).
        key = (collection, content_key(doc.text))
        if key in seen:
            problems.append(CorpusProblem(name=name, action="deduplicated", reason=f"same content as {seen[key]}"))
            continue
        seen[key] = name
        documents.append(doc)
    documents = _unique_ids(documents, problems)
    for problem in problems:
        log.warning("corpus: %s", problem)
    if not documents and not unchanged:
        raise EmptyCorpusError(
            f"No usable documents in {corpus_dir}: add articles there ({', '.join(supported_suffixes())})"
            + (f" (problems: {'; '.join(map(str, problems))})" if problems else "")
        )
    return Corpus(documents=documents, problems=problems, unchanged=unchanged)


def _sha256(path: Path) -> str | None:
    """The file's sha256, read in blocks; None if it cannot be read (it is then converted, and
    that reports why)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


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
            name = corpus_name(doc.path, doc.collection)
            problems.append(
                CorpusProblem(name=name, action=f"indexed as {name!r}", reason=f"id {doc.doc_id!r} is taken by {Path(owner.path).name}")
            )
            doc = doc.model_copy(update={"doc_id": name})
        out.append(doc)
    return out


def files_under(paths: list[Path]) -> tuple[list[Path], list]:
    """The files named, and those inside the folders named (recursively, hidden ones skipped),
    sorted, each once; plus a CorpusProblem for each path that does not exist."""
    found: dict[str, Path] = {}
    problems = []
    for path in paths:
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                rel = file.relative_to(path).parts
                if (file.is_file() or file.is_symlink()) and not any(part.startswith(".") for part in rel):
                    found.setdefault(str(file.resolve()), file)
        elif path.is_file():
            found.setdefault(str(path.resolve()), path)
        else:
            problems.append(CorpusProblem(name=str(path), action="skipped", reason="no such file or folder"))
    return sorted(found.values()), problems
