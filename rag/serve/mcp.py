"""rag as a Model Context Protocol server, for desktop assistants, IDEs and agent frameworks.

- `python -m rag mcp` speaks MCP over stdio (what a desktop client launches);
- `python -m rag serve` also serves it over streamable HTTP at `/mcp`, behind the same keys as `/v1`.

Built on the official SDK (`mcp`, its `MCPServer`). Tools: `ask` (a cited answer, or a refusal),
`search` (passages, no LLM) and `list_documents`; each document's stored text is a resource,
`rag://documents/{doc_id}` (the id percent-encoded), so a client can open a citation at its
offsets. Every call is answered as one reader (`Access`): over HTTP the user whose key the request
carries; over stdio everyone, or with a users file the user whose key `RAG_MCP_KEY` holds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote

import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError

from ..types import Answer, Citation, Document
from .access import Access, NoCollection
from .admission import Admission, Busy

log = logging.getLogger(__name__)

DOC_URI = "rag://documents/{doc_id}"
MAX_SEARCH_K = 20

INSTRUCTIONS = """rag answers questions from a fixed set of documents (the user's own files), with citations
to verbatim passages. Use `ask` for a question about those documents: its `answer` is short and
cited, `citations` hold the exact passages with their document id, title, offsets and page.
When `refused` is true the documents do not state the answer: tell the user so, do not answer from
your own knowledge as if it came from their documents; `closest` may hold passages that are
related but do not state it. `confidence` is a calibrated probability that the answer (or the
refusal) is right. Use `search` to see passages without an answer, `list_documents` to see what
is there, and read `rag://documents/{doc_id}` to open a whole document."""

ASK = """Answer a question from the user's documents, with citations to verbatim passages.

Returns `answer` (one or two sentences with [n] markers), `refused`, `span` (the exact words
found), `confidence`, `reason`, `citations` and `closest`. If `refused` is true the documents do
not contain the answer: say that, and do not fill it in from general knowledge. `collection`
narrows the question to one of the caller's collections."""

SEARCH = """The passages of the user's documents that best match `query`, best first, with document
id, title, the verbatim text, its character offsets and page, and scores. No answer is written:
use it to browse or to check what the documents hold on a subject."""

LIST = """The documents the caller may read: id, title, collection, pages and the resource URI of each."""


def citation_json(c: Citation) -> dict[str, Any]:
    return {
        "n": c.n, "doc_id": c.doc_id, "title": c.title, "text": c.text, "start": c.start, "end": c.end,
        "page": c.page, "uri": document_uri(c.doc_id),
    }


def answer_json(a: Answer) -> dict[str, Any]:
    return {
        "answer": a.text, "refused": a.refused, "span": a.span, "confidence": a.confidence, "reason": a.reason,
        "route": a.route, "citations": [citation_json(c) for c in a.citations], "closest": [citation_json(c) for c in a.closest],
    }


def document_uri(doc_id: str) -> str:
    """The resource URI of a document (its id percent-encoded: ids of collections hold a slash).

    >>> document_uri("hr/policy 2024")
    'rag://documents/hr%2Fpolicy%202024'
    """
    return DOC_URI.format(doc_id=quote(doc_id, safe=""))


def page_of(document: Document, offset: int) -> int | None:
    """The 1-based page holding character `offset`, or None for an unpaged document."""
    if not document.pages:
        return None
    return sum(1 for start in document.pages if start <= offset) or 1


def build_server(pipeline: Any, access_of: Callable[[Context], Access], admission: Admission | None = None) -> MCPServer:
    """The MCP server over a loaded pipeline (call its warm_up() first).

    Args:
        access_of: the reader of a call, from its context (its request's key over HTTP).
        admission: the places shared with the UI and /v1 (`rag serve`); None: its own.
    """
    from ..config import Settings

    admission = admission or Admission.from_settings(getattr(pipeline, "settings", None) or Settings())
    server = MCPServer(name="rag", instructions=INSTRUCTIONS)

    def scope(ctx: Context, collection: str | None) -> tuple[Access, frozenset[str] | None]:
        access = access_of(ctx)
        try:
            return access, access.scope(collection, known=pipeline.index.collection_counts())
        except NoCollection as err:
            raise ToolError(str(err)) from None

    @server.tool(description=ASK)
    async def ask(question: str, ctx: Context, collection: str | None = None) -> dict[str, Any]:
        _, collections = scope(ctx, collection)

        def run() -> Answer:
            with admission.enter():
                return pipeline.answer(question, quick=admission.quick_reason, collections=collections)

        try:
            return answer_json(await anyio.to_thread.run_sync(run))
        except (ValueError, Busy) as err:  # empty, too long, odd input; or the server is full
            raise ToolError(str(err)) from None

    @server.tool(description=SEARCH)
    async def search(query: str, ctx: Context, k: int = 5, collection: str | None = None) -> dict[str, Any]:
        from ..pipeline import clean_question

        _, collections = scope(ctx, collection)
        if not 1 <= k <= MAX_SEARCH_K:
            raise ToolError(f"k must be between 1 and {MAX_SEARCH_K}, not {k}.")
        try:
            query = clean_question(query, pipeline.settings.max_question_chars)
        except ValueError as err:
            raise ToolError(str(err)) from None

        def run() -> list[dict[str, Any]]:
            retriever = pipeline.retriever
            if collections is not None:
                retriever = retriever.within(collections)
            documents = retriever.index.documents
            out = []
            for hit in retriever.search(query, k):
                c, doc = hit.chunk, documents[hit.chunk.doc_id]
                out.append({
                    "doc_id": c.doc_id, "title": doc.title, "collection": doc.collection, "text": c.text, "start": c.start,
                    "end": c.end, "page": page_of(doc, c.start), "uri": document_uri(c.doc_id), "score": round(hit.score, 6),
                    "dense": round(hit.dense, 4), "bm25": round(hit.bm25, 4), "rerank": None if hit.rerank is None else round(hit.rerank, 4),
                })
            return out

        return {"passages": await anyio.to_thread.run_sync(run)}

    @server.tool(description=LIST)
    async def list_documents(ctx: Context, collection: str | None = None) -> dict[str, Any]:
        _, collections = scope(ctx, collection)
        docs = pipeline.documents(collections)
        return {"documents": [
            {"doc_id": d.doc_id, "title": d.title, "collection": d.collection, "pages": len(d.pages), "chars": len(d.text), "uri": document_uri(d.doc_id)}
            for d in sorted(docs.values(), key=lambda d: d.doc_id)
        ]}

    @server.resource(DOC_URI, name="document", description="A document's text as indexed: citations' offsets point into it.", mime_type="text/plain")
    async def document(doc_id: str, ctx: Context) -> str:
        access = access_of(ctx)
        found = pipeline.documents(access.collections).get(unquote(doc_id))
        if found is None:  # the same for one that exists in a collection the caller cannot read
            raise ResourceNotFoundError(f"No document {unquote(doc_id)!r} that you can read.")
        return found.text

    return server


def stdio_access(users: Any) -> Access:
    """Who a stdio server answers as: everyone without users; with them, the user whose key
    `RAG_MCP_KEY` holds.

    Raises:
        ValueError: there are users and RAG_MCP_KEY is missing or not a user's key.
    """
    if users is None:
        return Access.everyone()
    user = users.authenticate(os.environ.get("RAG_MCP_KEY", ""))
    if user is None:
        raise ValueError("there is a users file: set RAG_MCP_KEY to a user's key (`rag users add`) to serve MCP over stdio")
    return Access.of(user.name, user.collections, user.admin)


def run_stdio() -> None:
    """`python -m rag mcp`: load everything, then serve MCP on stdin/stdout until the client closes it.

    Nothing but MCP messages may reach stdout: logs go to stderr.
    """
    from ..config import Settings
    from ..pipeline import Pipeline
    from .users import Users

    settings = Settings()
    access = stdio_access(Users.open(settings.users_file))
    pipeline = Pipeline(settings)
    with contextlib.redirect_stdout(sys.stderr):  # a library's print must not corrupt the protocol
        pipeline.warm_up()
    server = build_server(pipeline, lambda ctx: access)
    server.run("stdio")


def http_access(users: Any, api_key: Any) -> Callable[[Context], Access]:
    """The reader of an HTTP call, from its bearer key (already checked by `require_key` at the
    door; a key revoked in between reads nothing)."""

    def access_of(ctx: Context) -> Access:
        if users is None:
            return Access.everyone()
        access = Access.of_bearer(users, (ctx.headers or {}).get("authorization"))
        return access if access is not None else Access(user="", collections=frozenset(), admin=False)

    return access_of
