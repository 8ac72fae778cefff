"""LLM backend for any OpenAI-compatible server (llama.cpp server, Ollama, vLLM, LM Studio, ...).

Selected with `RAG_LLM_BACKEND=openai`, `RAG_LLM_URL=http://127.0.0.1:8080/v1` and optionally
`RAG_LLM_MODEL` and `RAG_LLM_API_KEY`. It streams `/chat/completions` through the official
`openai` client, greedy (temperature 0), and turns every failure into one `LLMError` line that
names the URL and the reason. The API key is never logged, shown in a repr or put in a message.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

from .base import Generation, LLMError, Message, ModelSettings, OnToken

log = logging.getLogger(__name__)

INSTALL_HINT = "the openai package is not installed; run: pip install openai"
NO_KEY = "none"  # sent when RAG_LLM_API_KEY is unset: the client needs some string, local servers ignore it
CONNECT_TIMEOUT_S = 5.0  # a server on the LAN accepts a connection in milliseconds; longer means it is not there
RETRIES = 2  # extra attempts after a connection error or a 5xx, before the first token only
# After the server could not be reached (connection error, timeout or 5xx after the retries),
# questions skip it for this long and are answered without it at once, instead of each waiting
# up to timeout_s for a machine that is off; then the next question tries again.
DOWN_PAUSE_S = 15.0
BACKOFF_S = 0.5  # first retry delay; doubles each time, with up to 25 % jitter
DEFAULT_PARALLEL = 4  # requests in flight when neither RAG_LLM_PARALLEL nor the server says how many it runs
CHARS_PER_TOKEN = 4  # count_tokens() estimate: English text averages ~4 characters per token
MAX_CHARS_PER_PIECE = 64  # a streamed piece longer than this counts as several tokens (hostile servers)
# Greedy as the in-process backends decode: llama.cpp servers otherwise penalise repeated tokens,
# and the same GGUF answered differently over HTTP (tests/test_llm_openai.py, "48-tokens"). Not an
# OpenAI field: a server that rejects it gets the request again without it.
GREEDY_EXTRA = {"repeat_penalty": 1.0}
_END = object()
_DROPPED = "the server closed the connection mid-answer"


def public_url(url: str) -> str:
    """The URL without any user:password part, safe to show.

    >>> public_url("http://bob:secret@10.0.0.5:8080/v1/")
    'http://10.0.0.5:8080/v1'
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


class OpenAIGenerator:
    """Greedy chat completions from an OpenAI-compatible server, streamed piece by piece.

    Every call is bounded by `model.timeout_s` in total: connecting, waiting for the first
    token, and reading the rest. Connection errors and 5xx answers are retried with backoff
    while time is left and before any text has arrived; anything else fails at once. A server
    that could not be reached is left alone for DOWN_PAUSE_S, so the pipeline's quoted answers
    come at once meanwhile.

    Building one checks nothing and never fails; `warm_up()` and `generate()` raise LLMError
    with what to fix (RAG_LLM_URL missing, the server unreachable, a wrong key, ...).
    """

    def __init__(self, model: ModelSettings) -> None:
        # Nothing is checked here: a pipeline builds its generator before it knows whether the
        # LLM is needed, and a missing URL must not stop the extractive answers. warm_up() and
        # generate() say what is wrong.
        self.settings = model
        self.url = public_url(model.url) if model.url else ""
        self._model_name = model.model
        self._client = None
        self._lock = threading.Lock()
        self._extra = dict(GREEDY_EXTRA)
        self._down: tuple[float, str] | None = None  # (until when, why): the server failed to connect
        self._slots: threading.BoundedSemaphore | None = None  # requests in flight at once (`parallel`)
        self.parallel = model.parallel or 0  # 0 until known: the setting, the server's slot count, or DEFAULT_PARALLEL
        self.in_flight = 0
        self.peak = 0  # the most requests in flight at once (for measurements)

    def _check_url(self) -> None:
        """Raises LLMError naming the setting to fix when the URL is missing or not http(s)."""
        if not self.settings.url:
            raise LLMError("the openai backend needs a server URL: set RAG_LLM_URL, e.g. http://127.0.0.1:8080/v1")
        if urlsplit(self.settings.url).scheme not in ("http", "https"):
            raise LLMError(f"RAG_LLM_URL must start with http:// or https://, not {self.url!r}")

    def _check_up(self) -> None:
        """Fail at once, with the last reason, while a server that could not be reached is left alone."""
        down = self._down
        if down is not None:
            if time.monotonic() < down[0]:
                raise LLMError(down[1])
            self._down = None

    def _mark_down(self, why: str) -> None:
        self._down = (time.monotonic() + DOWN_PAUSE_S, why)

    def __repr__(self) -> str:
        return f"OpenAIGenerator(url={self.url!r}, model={self._model_name!r})"

    # -- setup ---------------------------------------------------------------------------
    @property
    def client(self):
        with self._lock:
            if self._client is None:
                try:
                    import openai
                except ImportError as err:
                    raise ImportError(INSTALL_HINT) from err
                key = self.settings.api_key.get_secret_value() if self.settings.api_key else ""
                # max_retries=0: the client would also retry timeouts and 429s, which would blow
                # the time budget; _open() retries connection errors and 5xx itself.
                self._client = openai.OpenAI(base_url=self.settings.url, api_key=key or NO_KEY, max_retries=0)
            return self._client

    def _timeout(self, seconds: float):
        import openai

        seconds = max(seconds, 0.001)
        return openai.Timeout(seconds, connect=min(CONNECT_TIMEOUT_S, seconds))

    def warm_up(self) -> None:
        """Ask the server for its models once, so a wrong URL or key fails now with a clear line.

        When no model name is set, the server's first listed model is used.

        Raises:
            LLMError: the server cannot be reached or refuses; the message says which and why.
        """
        self._check_url()
        self._check_up()
        try:
            page = self.client.models.list(timeout=self._timeout(self.settings.timeout_s))
            names = [m.id for m in page.data if isinstance(getattr(m, "id", None), str)]
        except Exception as err:
            why = self._explain(err)
            if _unreachable(err):
                self._mark_down(why)
            raise LLMError(why) from None
        if not self.parallel:
            self.parallel = self._server_slots() or DEFAULT_PARALLEL
            log.info("%s: up to %d requests in flight", self.url, self.parallel)
        with self._lock:
            if self._model_name is None:
                if not names:
                    raise LLMError(f"{self.url} lists no models: set RAG_LLM_MODEL to the model to use")
                self._model_name = names[0]
            elif names and self._model_name not in names:
                log.warning("%s does not list model %r (it lists %s); trying it anyway", self.url, self._model_name, names[:5])

    def _server_slots(self) -> int:
        """How many requests the server decodes at once, if it says: llama.cpp's server reports
        `total_slots` at /props (its `--parallel`); others report nothing (0)."""
        import httpx

        root = self.settings.url.rstrip("/").removesuffix("/v1")
        key = self.settings.api_key.get_secret_value() if self.settings.api_key else ""
        try:
            r = httpx.get(f"{root}/props", timeout=CONNECT_TIMEOUT_S, headers={"Authorization": f"Bearer {key}"} if key else None)
            slots = r.json().get("total_slots") if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            return 0
        return slots if isinstance(slots, int) and 1 <= slots <= 64 else 0

    def _slot(self) -> threading.BoundedSemaphore:
        """The slots, made on first use: as many as warm_up() learned, else the setting or DEFAULT_PARALLEL."""
        with self._lock:
            if self._slots is None:
                self.parallel = self.parallel or DEFAULT_PARALLEL
                self._slots = threading.BoundedSemaphore(self.parallel)
            return self._slots

    def count_tokens(self, messages: list[Message]) -> int:
        """An estimate (~4 characters per token plus a few per message): a server cannot count for us."""
        chars = sum(len(m.get("content") or "") for m in messages)
        return chars // CHARS_PER_TOKEN + 4 * len(messages)

    # -- generation ----------------------------------------------------------------------
    def generate(
        self,
        messages: list[Message],
        max_new_tokens: int,
        stop: Sequence[str] = ("\n",),
        on_token: OnToken | None = None,
    ) -> Generation:
        """Stream a greedy answer; stop at a stop string, after `max_new_tokens` pieces or at the deadline.

        Text that arrived before the deadline is returned with finish_reason "timeout"; an empty
        answer is returned as empty text (the caller decides what that means).

        Raises:
            LLMError: no answer could be had (unreachable, refused, timed out before any text,
                malformed stream); one line naming the URL and why.
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, not {max_new_tokens}")
        self._check_url()
        self._check_up()
        self.client  # imports openai (~1 s) outside the timed budget, once
        if self._model_name is None:
            self.warm_up()
        # At most `parallel` requests in flight; the time limit runs from when this one is sent,
        # not while it waits for a slot behind others (each bounded by timeout_s).
        with self._slot():
            with self._lock:
                self.in_flight += 1
                self.peak = max(self.peak, self.in_flight)
            try:
                return self._generate(messages, max_new_tokens, stop, on_token)
            finally:
                with self._lock:
                    self.in_flight -= 1

    def _generate(self, messages: list[Message], max_new_tokens: int, stop: Sequence[str], on_token: OnToken | None) -> Generation:
        started = time.perf_counter()
        deadline = started + self.settings.timeout_s
        stream = self._open(messages, max_new_tokens, list(stop), deadline)
        chunks: queue.Queue = queue.Queue(maxsize=256)
        cancel = threading.Event()
        threading.Thread(target=_pump, args=(stream, chunks, cancel), daemon=True, name="rag-openai-stream").start()

        cut = _StopCutter(stop, on_token)
        pieces = 0
        events = 0
        first = 0.0
        finish = "stop"
        finished = False  # a finish_reason arrived
        usage = None
        try:
            while True:
                try:
                    item = chunks.get(timeout=max(0.0, deadline - time.perf_counter()))
                except queue.Empty:
                    if not cut.text:
                        raise LLMError(f"{self.url} timed out after {self.settings.timeout_s:g} s") from None
                    finish = "timeout"
                    break
                if item is _END:
                    if not events:
                        raise LLMError(f"malformed response from {self.url}: the stream held no events (not an OpenAI-compatible server?)")
                    if not finished:
                        # An OpenAI stream's last choice carries a finish_reason. Without one the
                        # answer was cut off: llama_cpp.server does that to a running answer when
                        # another request arrives, unless started with --interrupt_requests False.
                        raise LLMError(f"{self.url} ended the answer without a finish_reason (cut off mid-answer)")
                    break
                if isinstance(item, BaseException):
                    raise LLMError(self._explain(item)) from None
                events += 1
                text, reason, usage = _parse_chunk(item, usage)
                if text is None:
                    raise LLMError(f"malformed response from {self.url}: a stream event is not a chat completion chunk")
                if text:
                    if not first:
                        first = time.perf_counter() - started
                    pieces += max(1, -(-len(text) // MAX_CHARS_PER_PIECE))
                    if cut.feed(text[: max_new_tokens * MAX_CHARS_PER_PIECE]):
                        finish = "stop"
                        break
                    if pieces >= max_new_tokens:
                        finish = "length"
                        break
                if reason:
                    finished = True
                    finish = "length" if reason == "length" else "stop"
        finally:
            cancel.set()  # the pump closes the stream at its next event (or its read timeout)
        cut.flush()
        total = time.perf_counter() - started
        prompt_tokens = usage.get("prompt_tokens") if usage else None
        return Generation(
            text=cut.text,
            prompt_tokens=prompt_tokens if isinstance(prompt_tokens, int) else self.count_tokens(messages),
            new_tokens=min(pieces, max_new_tokens),
            first_token_s=first or total,
            total_s=total,
            finish_reason=finish,
        )

    def _open(self, messages: list[Message], max_new_tokens: int, stop: list[str], deadline: float):
        """Start the streamed request, retrying connection errors and 5xx with backoff while time is left."""
        import openai

        attempt = 0
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise LLMError(f"{self.url} timed out after {self.settings.timeout_s:g} s")
            try:
                return self.client.chat.completions.create(
                    model=self._model_name or "",
                    messages=messages,  # type: ignore[arg-type]
                    max_tokens=max_new_tokens,
                    temperature=0.0,
                    stop=stop or None,
                    stream=True,
                    timeout=self._timeout(remaining),
                    extra_body=self._extra or None,
                )
            except openai.OpenAIError as err:
                if self._extra and isinstance(err, openai.APIStatusError) and err.status_code in (400, 422) and any(
                    k in str(_server_message(err)) for k in self._extra
                ):
                    log.info("%s rejects %s; sending plain OpenAI requests from now on", self.url, sorted(self._extra))
                    self._extra = {}
                    continue
                retryable = (isinstance(err, openai.APIConnectionError) and not isinstance(err, openai.APITimeoutError)) or (
                    isinstance(err, openai.APIStatusError) and err.status_code >= 500
                )
                delay = BACKOFF_S * 2**attempt * (1 - 0.25 * random.random())
                if not retryable or attempt >= RETRIES or time.perf_counter() + delay >= deadline:
                    why = self._explain(err)
                    if _unreachable(err):
                        self._mark_down(why)
                    raise LLMError(why) from None
                log.info("%s: %s; retrying in %.1f s", self.url, self._explain(err), delay)
                attempt += 1
                time.sleep(delay)

    def _explain(self, err: BaseException) -> str:
        """One line naming the URL and what went wrong, with the API key scrubbed from any server text."""
        import openai

        url = self.url
        if isinstance(err, LLMError):
            return str(err)
        if isinstance(err, openai.APITimeoutError):
            return f"{url} timed out after {self.settings.timeout_s:g} s"
        if isinstance(err, openai.APIConnectionError):
            why = _root_cause(err)
            return f"lost the connection to {url} mid-answer" if why == _DROPPED else f"cannot connect to {url}: {why}"
        if isinstance(err, openai.APIStatusError):
            status = err.response.status_code
            phrase = getattr(err.response, "reason_phrase", "") or ""
            line = f"{url} said {status} {phrase}".rstrip()
            hint = {401: "check RAG_LLM_API_KEY", 403: "check RAG_LLM_API_KEY", 404: f"check RAG_LLM_URL and RAG_LLM_MODEL ({self._model_name!r})"}
            detail = hint.get(status) or self._scrub(_server_message(err))
            return f"{line}: {detail}" if detail else line
        if isinstance(err, openai.APIError):  # an error event inside the stream
            return f"{url} reported an error: {self._scrub(_server_message(err)) or 'no message'}"
        if isinstance(err, (json.JSONDecodeError, UnicodeDecodeError)):
            return f"malformed response from {url}: a stream event is not valid JSON"
        if isinstance(err, ImportError):
            return str(err)
        return f"malformed response from {url}: {type(err).__name__}"

    def _scrub(self, text: str) -> str:
        text = " ".join(str(text).split())[:200]
        key = self.settings.api_key.get_secret_value() if self.settings.api_key else ""
        return text.replace(key, "***") if key else text


def _pump(stream, chunks: queue.Queue, cancel: threading.Event) -> None:
    """Read the stream on its own thread, so the caller can stop waiting at its deadline."""
    try:
        for chunk in stream:
            if cancel.is_set():
                break
            _put(chunks, chunk, cancel)
        else:
            _put(chunks, _END, cancel)
    except BaseException as err:  # handed to the caller, which turns it into an LLMError
        _put(chunks, err, cancel)
    finally:
        try:
            stream.close()
        except Exception:  # pragma: no cover - closing a broken connection
            pass


def _put(chunks: queue.Queue, item: object, cancel: threading.Event) -> None:
    while not cancel.is_set():
        try:
            chunks.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _parse_chunk(chunk, usage: dict | None) -> tuple[str | None, str | None, dict | None]:
    """(content piece, finish_reason, usage) of one stream chunk; piece None when malformed."""
    u = getattr(chunk, "usage", None)
    if u is not None:
        usage = {k: getattr(u, k, None) for k in ("prompt_tokens", "completion_tokens")}
    choices = getattr(chunk, "choices", None)
    if choices is None and u is not None:
        return "", None, usage
    if not isinstance(choices, list):
        return None, None, usage
    if not choices:  # e.g. the usage-only last chunk
        return "", None, usage
    choice = choices[0]
    delta = getattr(choice, "delta", None)
    content = getattr(delta, "content", None) if delta is not None else None
    if content is not None and not isinstance(content, str):
        return None, None, usage
    reason = getattr(choice, "finish_reason", None)
    return content or "", reason if isinstance(reason, str) else None, usage


class _StopCutter:
    """Accumulates pieces, cuts at the first stop string, and forwards only text before it.

    Servers are asked to stop themselves; this also holds for one that ignores `stop`. A
    piece that could be the start of a stop string is held back until it is decided.

    >>> seen = []
    >>> c = _StopCutter(["\\n"], seen.append)
    >>> c.feed("Hello"), c.feed(" world\\nmore"), c.text, seen
    (False, True, 'Hello world', ['Hello', ' world'])
    """

    def __init__(self, stop: Sequence[str], on_token: OnToken | None) -> None:
        self.stop = [s for s in stop if s]
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.on_token = on_token
        self.buffer = ""
        self.sent = 0
        self.done = False

    @property
    def text(self) -> str:
        """The answer so far: up to the stop string once cut, else everything received."""
        return self.buffer[: self.sent] if self.done else self.buffer

    def feed(self, piece: str) -> bool:
        """Add a piece; True when a stop string was reached (the text ends before it)."""
        self.buffer += piece
        hits = [i for i in (self.buffer.find(s, max(0, self.sent - self.hold)) for s in self.stop) if i >= 0]
        if hits:
            self._emit(min(hits))
            self.done = True
            return True
        self._emit(len(self.buffer) - self.hold)
        return False

    def flush(self) -> None:
        if not self.done:
            self._emit(len(self.buffer))
            self.done = True

    def _emit(self, upto: int) -> None:
        if upto > self.sent:
            piece = self.buffer[self.sent : upto]
            self.sent = upto
            if self.on_token is not None:
                self.on_token(piece)


def _unreachable(err: BaseException) -> bool:
    """Whether the server is not there (or not working) at all, rather than slow or refusing this request."""
    import httpx
    import openai

    if isinstance(err, openai.APITimeoutError):  # a slow answer is not a missing server; a slow connect is
        return any(isinstance(e, httpx.ConnectTimeout) for e in _causes(err))
    return isinstance(err, openai.APIConnectionError) or (isinstance(err, openai.APIStatusError) and err.status_code >= 500)


def _causes(err: BaseException) -> list[BaseException]:
    out = []
    seen: BaseException | None = err
    while seen is not None and len(out) < 20:
        out.append(seen)
        seen = seen.__cause__ or seen.__context__
    return out


def _root_cause(err: BaseException) -> str:
    """The innermost reason of a connection error, in words: "connection refused", ..."""
    seen = err
    while seen.__cause__ is not None or seen.__context__ is not None:
        seen = seen.__cause__ or seen.__context__  # type: ignore[assignment]
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
    text = " ".join(str(seen).split())
    low = text.lower()
    if "connection refused" in low or "errno 111" in low:
        return "connection refused"
    if "name or service not known" in low or "nodename nor servname" in low or "temporary failure in name resolution" in low:
        return "host name not found"
    if "incomplete" in low or "peer closed" in low or "disconnected" in low:
        return _DROPPED
    return text[:200] or type(seen).__name__


def _server_message(err) -> str:
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if isinstance(message, str):
            return message
    return getattr(err, "message", "") or ""
