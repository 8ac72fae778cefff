"""The Gradio chat: streamed cited answers, a source viewer, follow-ups, saved conversations, and
the `ask` API endpoint.

With a users file (docs/team.md) the page asks for a name and key (Gradio's own login), and every
event answers, lists and shows from that user's collections only: the page's description, the
collection picker, the viewer and the saved conversations are filled per user when the page
loads, never from the whole index. Only admins see and may use "Add documents".
"""

from __future__ import annotations

import html
import logging
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import gradio as gr
from pydantic import BaseModel

from ..config import Settings
from ..answering.followup import rewrite
from ..index.manifest import UpdateReport
from ..ingest import supported_suffixes
from ..pipeline import LLM_FAILED, Pipeline
from ..lexicon import STOPWORDS
from ..text import words
from ..answering.confidence import confidence_label
from ..types import Answer, Citation, Document
from .access import Access, NoCollection
from .admission import Admission, Busy

log = logging.getLogger(__name__)

MAX_TURNS = 8  # turns kept in a session: the chat shown, and the frame for follow-ups
QUOTE_CHARS = 160  # length of the quote shown under an answer
TITLE_CHARS = 60  # length of a title in the page's one-line description
MAX_TOP_K = 20  # the slider's and the API's upper bound (Settings.top_k allows 1..20)
QUEUE_SIZE = 32  # waiting requests beyond this get "queue is full, try again"; 20 users fit
ALL_MINE = "All my collections"  # the picker's first choice: every collection the user may read
LOCAL_USER = "local"  # whose conversations are saved when there are no users
TEAM_TITLE = "Ask your team's documents"

# Example questions for the articles shipped in corpus/. An example is shown only when the
# corpus holds all of its names, so another corpus never gets questions it cannot answer.
EXAMPLES = [
    "How much did Meta offer OpenAI engineers as signing bonuses?",
    "Which Meta researchers did xAI recruit?",
    "Why is Mark Zuckerberg personally recruiting AI researchers?",
    "How much was one AI researcher offered by Meta?",
]
_NAME = re.compile(r"\b[A-Z][\w’']*[A-Za-z]\b")

CSS = """
.rag-answer, .rag-refusal, .rag-streaming, .rag-user { line-height: 1.5; }
.rag-cite-mark { font-size: .8em; vertical-align: super; text-decoration: none; font-weight: 600; padding: 0 1px; }
.rag-sources { list-style: none; margin: .6em 0 0 0 !important; padding: .5em 0 0 0 !important; border-top: 1px solid var(--border-color-primary); }
.rag-sources li { margin: .25em 0 !important; font-size: .9em; }
.rag-sources a { text-decoration: none; color: inherit; display: block; border-radius: 6px; padding: .2em .4em; }
.rag-sources a:hover { background: var(--color-accent-soft); }
.rag-sources b { color: var(--color-accent); }
.rag-quote { color: var(--body-text-color-subdued); }
.rag-searched { font-size: .78em; color: var(--body-text-color-subdued); margin-top: .5em; }
.rag-notice { font-weight: 600; }
.rag-confidence { font-size: .85em; margin-top: .3em; }
.rag-conf-high { color: #2e7d32; } .rag-conf-medium { color: #b26a00; } .rag-conf-low { color: #c62828; }
.rag-quote mark { background: #fff3b0; }
.rag-refusal { border-left: 4px solid #d97706; padding-left: .7em; }
.rag-closest-h { font-size: .85em; margin-top: .5em; color: var(--body-text-color-subdued); }
.rag-waiting { color: var(--body-text-color-subdued); font-style: italic; }
.rag-cursor { animation: rag-blink 1s step-end infinite; }
@keyframes rag-blink { 50% { opacity: 0; } }
.rag-desc { color: var(--body-text-color-subdued); margin-top: -.4em; }
"""

VIEWER_CSS = """
.rag-viewer { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: .8em 1em; background: var(--block-background-fill); }
.rag-doc-title { font-weight: 700; font-size: 1.05em; margin-bottom: .2em; }
.rag-doc-meta { font-size: .8em; color: var(--body-text-color-subdued); margin-bottom: .6em; }
.rag-doc { position: relative; white-space: pre-wrap; overflow-y: auto; height: 62vh; line-height: 1.55; font-size: .92em; padding-right: .5em; }
.rag-doc mark { background: #fde68a; color: #111; padding: 1px 0; border-radius: 2px; }
.rag-empty { color: var(--body-text-color-subdued); padding: 2em 1em; text-align: center; }
"""

# Citation links in chat messages are plain anchors "#rag-cite-<turn>-<n>" (or rag-close- for
# a refusal's closest passages). One document-level listener turns a click on one into a
# `click` event of the viewer, carrying which passage to open; the viewer then scrolls to <mark>.
VIEWER_JS = """
const handler = (e) => {
  const a = e.target.closest && e.target.closest('a[href^="#rag-"]');
  if (!a) return;
  const m = a.getAttribute('href').match(/^#rag-(cite|close)-(\\d+)-(\\d+)$/);
  if (!m) return;
  e.preventDefault();
  e.stopPropagation();
  trigger('click', {kind: m[1], turn: parseInt(m[2]), n: parseInt(m[3])});
};
if (window.__ragCiteHandler) document.removeEventListener('click', window.__ragCiteHandler, true);
window.__ragCiteHandler = handler;
document.addEventListener('click', handler, true);
const scroll = () => {
  const box = element.querySelector('.rag-doc');
  const mark = element.querySelector('.rag-doc mark');
  if (box && mark) box.scrollTop = Math.max(0, mark.offsetTop - box.clientHeight / 3);
};
watch('value', scroll);
scroll();
"""


class Turn(BaseModel):
    """One question and its answer in a session; `id` names it in citation links."""

    id: int
    question: str
    answer: Answer


# -- what the corpus is ------------------------------------------------------------------
def corpus_topics(documents: Sequence[Document], k: int = 4) -> list[str]:
    """The words most titles share (names first), to say what a corpus is about.

    >>> docs = [Document(doc_id=str(i), title=t, text=t, path="", sha256="") for i, t in
    ...         enumerate(["Meta hires AI talent", "Musk lures Meta talent", "Meta and the talent war"])]
    >>> corpus_topics(docs, 2)
    ['Meta', 'talent']
    """
    df: Counter[str] = Counter()
    shown: dict[str, str] = {}
    for doc in documents:
        seen = set()
        for token in re.findall(r"[\w’']+", doc.title):
            base = re.sub(r"['’]s$", "", token)
            key = (words(base) or [""])[0]
            if not key or key in STOPWORDS or len(key) < 2 or key.isdigit() or key in seen:
                continue
            seen.add(key)
            df[key] += 1
            if key not in shown or base[:1].isupper():
                shown[key] = base
    ranked = sorted(df, key=lambda w: (-df[w], not shown[w][:1].isupper(), w))
    return [shown[w] for w in ranked[:k]]


def describe_corpus(documents: Sequence[Document]) -> tuple[str, str]:
    """The page title and a one-line description, both derived from the documents."""
    n = len(documents)
    topics = corpus_topics(documents)
    noun = "article" if n == 1 else "articles"
    title = f"Ask {n} {noun}" + (f" about {', '.join(topics)}" if topics else "")
    titles = "; ".join(f"“{_shorten(d.title, TITLE_CHARS)}”" for d in documents)
    description = f"Cited answers from {n} {noun}, offline: {titles}"
    return title, description


def example_questions(documents: Sequence[Document], k: int = 4) -> list[str]:
    """EXAMPLES whose names all occur in the corpus; else questions built from the titles."""
    text = " ".join(d.text for d in documents)
    fits = [q for q in EXAMPLES if all(name in text for name in _NAME.findall(q)[1:])]
    if fits:
        return fits[:k]
    return [f"What does “{_shorten(d.title, TITLE_CHARS)}” report?" for d in documents[:k]]


# -- rendering (every piece of corpus or model text goes through html.escape) --------------
def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"


def _esc(text: str) -> str:
    """Escaped for HTML, newlines as <br>, so a chat message stays one HTML block (no markdown)."""
    return html.escape(text).replace("\r", "").replace("\n", "<br>")


def _link(kind: str, turn: int, n: int, inner: str, cls: str = "") -> str:
    return f'<a href="#rag-{kind}-{turn}-{n}" class="{cls}">{inner}</a>'


def _quote(c: Citation) -> str:
    """The passage, shortened, escaped; a refusal's related passage shows the reader's span in <mark>."""
    if c.highlight:
        a, b = c.highlight
        before, span, after = c.text[:a], c.text[a:b], c.text[b:]
        room = max(40, QUOTE_CHARS - len(span))
        before = before if len(before) <= room // 2 else "…" + before[-(room // 2):].split(" ", 1)[-1]
        after = _shorten(after, max(10, room - len(before)))
        return f"{_esc(before)}<mark>{_esc(span)}</mark>{_esc(after)}"
    return _esc(_shorten(c.text, QUOTE_CHARS))


def _source_list(kind: str, turn: int, citations: Sequence[Citation]) -> str:
    items = "".join(
        "<li>"
        + _link(kind, turn, c.n, f"<b>[{c.n}]</b> {_esc(_shorten(c.title, 90))}<br>"
                f"<span class=\"rag-quote\">“{_quote(c)}”</span>")
        + "</li>"
        for c in citations
    )
    return f'<ul class="rag-sources">{items}</ul>'


def _confidence(a: Answer) -> str:
    level, words = confidence_label(a.confidence)
    if not level:
        return ""
    what = "that the articles don’t state it" if a.refused else "that this answer is right"
    return f'<div class="rag-confidence rag-conf-{level}" title="calibrated on articles it never saw: of the answers given {a.confidence:.0%}, about {a.confidence:.0%} are right">Confidence {what}: {words}</div>'


def render_answer(turn: Turn, show_sources: bool = True) -> str:
    """An answer as one HTML block: text with clickable [n], its sources, and what was searched."""
    a = turn.answer
    searched = f'<div class="rag-searched">Searched: {_esc(a.searched)}</div>' if a.searched else ""
    if a.refused:
        if not a.closest:  # nothing close: a plain refusal
            return ('<div class="rag-refusal"><div class="rag-notice">The articles don’t cover this question.</div>'
                    f"{_confidence(a)}{searched}</div>")
        closest = ""
        if show_sources:
            closest = ('<div class="rag-closest-h">These passages may be related (the highlighted words are the best guess, not stated as the answer):</div>'
                       + _source_list("close", turn.id, a.closest))
        return ('<div class="rag-refusal"><div class="rag-notice">The articles don’t state this.</div>'
                f"{_confidence(a)}{closest}{searched}</div>")
    numbers = {c.n for c in a.citations}

    def marker(m: re.Match[str]) -> str:
        n = int(m.group(1))
        return _link("cite", turn.id, n, f"[{n}]", "rag-cite-mark") if n in numbers and show_sources else m.group(0)

    body = re.sub(r"\[(\d+)\]", marker, _esc(a.text))
    sources = _source_list("cite", turn.id, a.citations) if a.citations and show_sources else ""
    return f'<div class="rag-answer">{body}{_confidence(a)}{sources}{searched}</div>'


def render_streaming(text: str) -> str:
    if not text.strip():
        return '<div class="rag-streaming rag-waiting">Searching the articles…</div>'
    return f'<div class="rag-streaming">{_esc(text)}<span class="rag-cursor">▌</span></div>'


def render_user(question: str) -> str:
    return f'<div class="rag-user">{_esc(question)}</div>'


def render_messages(turns: Sequence[Turn], show_sources: bool = True) -> list[dict[str, str]]:
    """The chat as Gradio messages, rebuilt from the turns (so settings apply to old answers)."""
    messages = []
    for t in turns:
        messages.append({"role": "user", "content": render_user(t.question)})
        messages.append({"role": "assistant", "content": render_answer(t, show_sources)})
    return messages


def render_source(document: Document | None, citation: Citation | None = None) -> str:
    """The viewer: the whole article, escaped, with the cited passage in <mark>."""
    if document is None:
        return '<div class="rag-viewer"><div class="rag-empty">Click a source under an answer to read it in its article, highlighted.</div></div>'
    text = document.text
    if citation is None:
        body, meta = html.escape(text), document.doc_id
    else:
        s, e = citation.start, citation.end
        body = f"{html.escape(text[:s])}<mark>{html.escape(text[s:e])}</mark>{html.escape(text[e:])}"
        page = (f" · page {citation.page}" if citation.page is not None else "") + (" · read by OCR" if citation.ocr else "")
        meta = f"[{citation.n}] {document.doc_id}{page} · characters {s}–{e}"
    return (f'<div class="rag-viewer"><div class="rag-doc-title">{html.escape(document.title)}</div>'
            f'<div class="rag-doc-meta">{html.escape(meta)}</div><div class="rag-doc">{body}</div></div>')


def llm_failed_notice(reason: str) -> str:
    """The line shown when the LLM could not answer and the passage was quoted instead.

    >>> llm_failed_notice("the LLM failed: cannot connect to http://127.0.0.1:8080/v1: connection refused")
    'The LLM did not answer (cannot connect to http://127.0.0.1:8080/v1: connection refused), so this answer quotes the passage.'
    """
    why = reason.removeprefix(LLM_FAILED).lstrip(": ")
    return f"The LLM did not answer ({why}), so this answer quotes the passage."


def render_upload_report(report: UpdateReport) -> str:
    """What an upload did: each file added, replaced, unchanged, or rejected with its reason."""
    rows = [f"<li>added <b>{html.escape(d)}</b></li>" for d in report.added]
    rows += [f"<li>replaced <b>{html.escape(d)}</b></li>" for d in report.replaced]
    rows += [f"<li>unchanged <b>{html.escape(d)}</b> (already indexed)</li>" for d in report.unchanged]
    rows += [
        f'<li class="rag-rejected">rejected <b>{html.escape(p.name)}</b>: {html.escape(p.reason)}</li>'
        for p in report.problems if p.action == "skipped"
    ]
    return f'<ul class="rag-upload-report">{"".join(rows)}</ul><div>Indexed in {report.seconds:.1f} s.</div>'


def answer_json(answer: Answer) -> dict[str, Any]:
    """The structured form the API returns: text, refused, citations, closest, searched, ...

    (No key may be called "path": gradio_client takes such a dict for a file to download.)
    """
    return answer.model_dump(mode="json")


# -- the app -----------------------------------------------------------------------------
def build(pipeline: Pipeline, admission: Admission | None = None, users: Any = None, history: Any = None) -> gr.Blocks:
    """The Blocks app over a loaded pipeline (call pipeline.warm_up() first to load it).

    `admission`: the places shared with the /v1 API (`launch` passes one to both); None: its
    own, from the settings. Up to its limit questions are answered at once. `users`
    (rag.serve.users.Users): each event is answered as the logged-in user (serve the app with
    `auth=users.check_password`); None: one reader of everything. `history`
    (rag.serve.history.History): conversations are saved per user.
    """
    admission = admission or Admission.from_settings(pipeline.settings)
    default_k = pipeline.settings.top_k
    if users is None:  # one reader: the page may describe the whole corpus
        documents = list(pipeline.index.documents.values())
        page_title, description = describe_corpus(documents)
        examples = [{"text": q} for q in example_questions(documents)]
    else:  # described per user when the page loads (see `on_load`)
        page_title, description, examples = TEAM_TITLE, "", []

    def access_of(request: gr.Request | None) -> Access:
        """The reader of this event: the logged-in user as the users file says now (a removed
        user reads nothing), or everyone without users."""
        if users is None:
            return Access.everyone()
        name = getattr(request, "username", None)
        user = users.get(name) if name else None
        if user is None:
            return Access(user=name or "", collections=frozenset(), admin=False)
        return Access.of(user.name, user.collections, user.admin)

    def scope_of(access: Access, collection: str | None) -> frozenset[str] | None:
        choice = None if collection in (None, "", ALL_MINE) else collection
        return access.scope(choice, known=pipeline.index.collection_counts())

    def owner(access: Access) -> str:
        return access.user or LOCAL_USER

    def on_load(request: gr.Request) -> tuple:
        """Fill the page for this user: description, collection picker, uploads (admins),
        saved conversations."""
        access = access_of(request)
        readable = access.visible(pipeline.index.collection_counts())
        if users is None:
            header = gr.skip()
        else:
            docs = list(pipeline.documents(access.collections).values())
            title, desc = describe_corpus(docs) if docs else ("No documents you can read yet", "Ask an admin to give you a collection.")
            who = f"Signed in as {access.user}" + (" (admin)" if access.admin else "")
            header = f"## {html.escape(title)}\n<div class='rag-desc'>{html.escape(desc)}</div><div class='rag-desc'>{html.escape(who)}</div>"
        picker = gr.Dropdown(choices=[ALL_MINE] + readable, value=ALL_MINE, visible=len(readable) > 1)
        return header, picker, gr.Accordion(visible=access.admin), gr.Dropdown(choices=readable or ["default"], value=(readable or ["default"])[0]), conversation_choices(access, None)

    def conversation_choices(access: Access, selected: str | None):
        if history is None:
            return gr.Dropdown(choices=[], value=None, visible=False)
        items = [(f"{c.title} ({c.messages // 2})", c.id) for c in history.conversations(owner(access))]
        return gr.Dropdown(choices=items, value=selected if any(v == selected for _, v in items) else None, visible=True)

    def respond(message: str, turns: list[Turn], top_k: float, show_sources: bool, collection: str | None,
                conversation: str | None, request: gr.Request) -> Iterator[tuple]:
        question = " ".join((message or "").split())
        access = access_of(request)
        if not question:
            gr.Warning("Type a question about the articles first.")
            return
        try:
            collections = scope_of(access, collection)
        except NoCollection as err:
            gr.Warning(str(err))
            return
        previous = [t.answer.searched or t.question for t in turns]
        searched = rewrite(question, previous)
        shown = render_messages(turns, show_sources) + [
            {"role": "user", "content": render_user(question)},
            {"role": "assistant", "content": render_streaming("")},
        ]
        streamed = ""
        keep = gr.skip()
        try:
            with admission.enter():  # a client that leaves closes this generator: the place is freed
                yield "", shown, turns, keep
                stream = pipeline.stream(question, top_k=int(top_k), searched=searched, quick=admission.quick_reason, collections=collections)
                for piece in stream:
                    streamed += piece
                    shown[-1] = {"role": "assistant", "content": render_streaming(streamed)}
                    yield "", shown, turns, keep
        except Busy as err:
            gr.Warning(str(err))
            yield message, render_messages(turns, show_sources), turns, keep
            return
        except ValueError as err:  # the question failed validation (too long, ...)
            gr.Warning(str(err))
            yield message, render_messages(turns, show_sources), turns, keep
            return
        except Exception as err:  # keep the chat usable, and say what failed
            log.exception("answering %r failed", question)
            yield message, render_messages(turns, show_sources), turns, keep
            raise gr.Error(f"Answering failed: {err}") from err
        turn = Turn(id=(turns[-1].id + 1) if turns else 1, question=question, answer=stream.answer)
        if turn.answer.route == "extractive" and turn.answer.reason.startswith(LLM_FAILED):
            gr.Warning(llm_failed_notice(turn.answer.reason))
        turns = (list(turns) + [turn])[-MAX_TURNS:]
        if history is not None:
            conversation = save_turn(access, conversation, turn)
            keep = conversation_choices(access, conversation)
        yield "", render_messages(turns, show_sources), turns, keep

    def save_turn(access: Access, conversation: str | None, turn: Turn) -> str | None:
        """Append the turn to the user's conversation (a new one for a new chat); None if saving failed."""
        try:
            if conversation:
                try:
                    history.append(owner(access), conversation, "user", turn.question)
                except KeyError:  # deleted meanwhile (another tab): start again
                    conversation = None
            if not conversation:
                conversation = history.start(owner(access), turn.question)
                history.append(owner(access), conversation, "user", turn.question)
            history.append(owner(access), conversation, "assistant", turn.answer.text, {"answer": turn.answer.model_dump(mode="json")})
            return conversation
        except Exception:  # the answer was given; a history that cannot be written must not take it away
            log.exception("saving the conversation failed")
            gr.Warning("This answer could not be saved to your history.")
            return conversation

    def open_conversation(conversation: str | None, show_sources: bool, request: gr.Request) -> tuple:
        if history is None or not conversation:
            return gr.skip(), gr.skip()
        try:
            messages = history.messages(owner(access_of(request)), conversation)
        except KeyError:
            gr.Warning("That conversation is gone.")
            return gr.skip(), gr.skip()
        turns, question = [], ""
        for m in messages:
            if m.role == "user":
                question = m.content
            elif m.meta and "answer" in m.meta:
                try:
                    turns.append(Turn(id=len(turns) + 1, question=question, answer=Answer.model_validate(m.meta["answer"])))
                except ValueError:  # saved by another version: skip it
                    continue
        turns = turns[-MAX_TURNS:]
        return render_messages(turns, show_sources), turns

    def delete_conversation(conversation: str | None, request: gr.Request) -> tuple:
        access = access_of(request)
        if history is not None and conversation:
            try:
                history.delete(owner(access), conversation)
            except KeyError:
                pass
        return [], [], "", render_source(None), conversation_choices(access, None)

    def new_chat(request: gr.Request) -> tuple:
        return [], [], "", render_source(None), conversation_choices(access_of(request), None)

    def open_source(turns: list[Turn], evt: gr.EventData, request: gr.Request) -> str:
        data = getattr(evt, "_data", None) or {}
        turn = next((t for t in turns if t.id == data.get("turn")), None)
        if turn is None:
            gr.Warning("That answer is no longer in the chat history.")
            return gr.skip()
        pool = turn.answer.closest if data.get("kind") == "close" else turn.answer.citations
        citation = next((c for c in pool if c.n == data.get("n")), None)
        if citation is None:
            return gr.skip()
        document = pipeline.documents(access_of(request).collections).get(citation.doc_id)  # what this user may read now
        if document is None:
            gr.Warning("That document is not in the collections you can read (or was removed).")
            return gr.skip()
        return render_source(document, citation)

    def upload(files: list[Any] | None, collection: str | None, request: gr.Request, progress=gr.Progress()) -> str:
        """Index the dropped files into the chosen collection (admins only); the next question can cite them."""
        if not files:
            return ""
        if not access_of(request).admin:
            raise gr.Error("Only an admin can add documents.")
        try:
            from ..index.corpus import check_collection

            collection = check_collection((collection or "default").strip())
        except ValueError as err:
            raise gr.Error(str(err)) from None
        uploads = [(Path(f), Path(getattr(f, "orig_name", None) or f).name) for f in files]
        progress(0, desc="Reading files")

        def on_file(n: int, name: str) -> None:
            progress(n / (len(uploads) + 1), desc=f"Reading {name}")

        try:
            report = pipeline.add_uploads(uploads, on_file=on_file, collection=collection)
        except Exception as err:  # keep the app usable and say what failed
            log.exception("upload failed")
            raise gr.Error(f"Adding the files failed: {err}") from err
        progress(1, desc="Indexed")
        return render_upload_report(report)

    def toggle_sources(turns: list[Turn], show_sources: bool) -> tuple:
        return render_messages(turns, show_sources), gr.Column(visible=show_sources)

    def ask(question: str, history: list[str] | None = None, top_k: int | None = None, collection: str | None = None,
            request: gr.Request = None) -> dict[str, Any]:
        """Answer one question from the articles, with citations as structured data.

        Args:
            question: the question, or a follow-up when `history` is given.
            history: earlier standalone questions, oldest first; a follow-up such as
                "and what about Google?" is rewritten against the last one.
            top_k: passages retrieved (default from the settings).
            collection: answer from this one of your collections only (default: all of them).

        Returns:
            The Answer as a dict: text (with [n] markers), refused, route, searched,
            citations and closest (n, doc_id, title, text, start, end, score), timings.
        """
        if top_k is not None and not 1 <= top_k <= MAX_TOP_K:
            raise gr.Error(f"top_k must be between 1 and {MAX_TOP_K}, not {top_k}.")
        searched = rewrite(question, list(history or [])[-MAX_TURNS:])
        try:
            collections = scope_of(access_of(request), collection)
            with admission.enter():
                return answer_json(
                    pipeline.answer(question, top_k=top_k, searched=searched or None, quick=admission.quick_reason, collections=collections)
                )
        except (Busy, ValueError, NoCollection) as err:
            raise gr.Error(str(err)) from err

    with gr.Blocks(title=page_title, fill_width=True) as demo:
        header = gr.Markdown(
            f"## {html.escape(page_title)}\n<div class='rag-desc'>{html.escape(description)}</div>", latex_delimiters=[], elem_id="rag-header"
        )
        turns = gr.State([])
        conversation = gr.State(None)
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=380):
                chatbot = gr.Chatbot(
                    elem_id="rag-chat",
                    label="Chat",
                    height="68vh",
                    placeholder="**Ask a question about the articles.** Answers cite their sources; click one to read it in context.",
                    examples=examples,
                    sanitize_html=True,
                    latex_delimiters=[],
                    feedback_options=None,
                    buttons=[],
                    autoscroll=True,
                )
                with gr.Row():
                    box = gr.Textbox(
                        elem_id="rag-question", show_label=False, scale=8, autofocus=True,
                        placeholder="Ask about the articles, or follow up: “and what about Google?”",
                        max_lines=4, submit_btn=False,
                    )
                    send = gr.Button("Ask", variant="primary", scale=1, min_width=80, elem_id="rag-ask")
                with gr.Row():
                    clear_btn = gr.Button("New chat", size="sm", elem_id="rag-clear")
                    picker = gr.Dropdown([ALL_MINE], value=ALL_MINE, label="Collection", elem_id="rag-collection", visible=False, scale=2)
                with gr.Row():
                    saved = gr.Dropdown([], label="Your conversations", elem_id="rag-conversations", visible=False, scale=4)
                    delete_btn = gr.Button("Delete conversation", size="sm", elem_id="rag-delete", scale=1)
                with gr.Accordion("Add documents", open=False, visible=users is None) as adding:
                    target = gr.Dropdown(["default"], value="default", label="Into collection", allow_custom_value=True, elem_id="rag-target")
                    files = gr.File(
                        label=f"Drop files here ({', '.join(supported_suffixes())})", file_count="multiple",
                        elem_id="rag-upload", type="filepath",
                    )
                    upload_status = gr.HTML("", elem_id="rag-upload-status")
                with gr.Accordion("Settings", open=False):
                    top_k = gr.Slider(1, MAX_TOP_K, value=default_k, step=1, label="Passages retrieved (top-k)", elem_id="rag-topk")
                    show_sources = gr.Checkbox(True, label="Show sources", elem_id="rag-show-sources")
            with gr.Column(scale=2, min_width=320, elem_id="rag-viewer-col") as viewer_col:
                viewer = gr.HTML(
                    render_source(None), elem_id="rag-viewer", js_on_load=VIEWER_JS, css_template=VIEWER_CSS,
                    label="Source", show_label=True, container=True,
                )

        llm = dict(concurrency_limit=admission.limit, concurrency_id="llm")  # the models batch or share themselves
        ask_inputs = [box, turns, top_k, show_sources, picker, conversation]
        ask_outputs = [box, chatbot, turns, saved]
        box.submit(respond, ask_inputs, ask_outputs, api_visibility="private", **llm)
        send.click(respond, ask_inputs, ask_outputs, api_visibility="private", **llm)
        chatbot.example_select(_example_text, None, box, api_visibility="private", queue=False).then(
            respond, ask_inputs, ask_outputs, api_visibility="private", **llm
        )
        viewer.click(open_source, turns, viewer, api_visibility="private", queue=False)
        files.upload(upload, [files, target], upload_status, api_name="upload", concurrency_limit=1, concurrency_id="index")
        show_sources.change(toggle_sources, [turns, show_sources], [chatbot, viewer_col], api_visibility="private", queue=False)
        fresh = [chatbot, turns, box, viewer, saved]
        clear_btn.click(new_chat, None, fresh, api_visibility="private", queue=False)
        chatbot.clear(new_chat, None, fresh, api_visibility="private", queue=False)
        delete_btn.click(delete_conversation, saved, fresh, api_visibility="private", queue=False)
        saved.input(open_conversation, [saved, show_sources], [chatbot, turns], api_visibility="private", queue=False)
        saved.change(lambda value: value, saved, conversation, api_visibility="private", queue=False)
        demo.load(on_load, None, [header, picker, adding, target, saved], api_visibility="private", queue=False)
        gr.api(ask, api_name="ask", **llm)
    return demo


def _example_text(evt: gr.SelectData) -> str:
    return evt.value["text"] if isinstance(evt.value, dict) else str(evt.value)


def launch(host: str = "127.0.0.1", port: int = 7860) -> None:
    """Load the models and index (so the first user waits for nothing), then serve the chat and the API.

    Raises:
        UsersFileError: the users file is damaged or readable by others (checked before any model loads).
    """
    from .history import History
    from .users import Users

    settings = Settings()
    users = Users.open(settings.users_file)  # None without a file; a bad one stops the start here
    history = History.from_settings(settings)
    pipeline = Pipeline(settings)
    log.info("warming up: loading the index and models")
    pipeline.warm_up()
    admission = Admission.from_settings(pipeline.settings)  # one limit for the chat and /v1 together
    demo = build(pipeline, admission, users=users, history=history)
    demo.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
    who = f"{len(users.list())} users from {settings.users_file}" if users is not None else "no users file: one user, everything readable"
    print(f"rag chat UI ready on http://{host}:{port} (OpenAI-compatible API at /v1, MCP at /mcp/; {who})", flush=True)
    from .api import serve

    login = dict(auth=users.check_password, auth_message="Sign in with your user name and the key `rag users add` printed.") if users is not None else {}
    serve(
        pipeline, demo, host=host, port=port, api_key=pipeline.settings.api_key, admission=admission, users=users,
        css=CSS, show_error=True, footer_links=["api"], **login,
    )
