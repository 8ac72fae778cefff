"""The openai backend: hostile fake servers (pure protocol logic) and the real llama.cpp server."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import SecretStr

from rag.llm import LLMError, ModelSettings, make_generator
from rag.llm.openai import OpenAIGenerator
from rag.answering.prompt import SYSTEM

from conftest import packaged_gguf

KEY = "sk-right-key-1234"
FLOOD_TOKENS = 30_000
MESSAGES = [{"role": "user", "content": "Say hello."}]


# -- a tiny hostile server: one behaviour per URL prefix, e.g. http://host:port/hang/v1 -------
def _chunk(content: str | None = None, finish: str | None = None, role: str | None = None) -> bytes:
    delta = {k: v for k, v in (("role", role), ("content", content)) if v is not None}
    body = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "fake",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


class Hostile(BaseHTTPRequestHandler):
    counts: dict[str, int] = {}
    sent: dict[str, int] = {}
    bodies: dict[str, list[dict]] = {}
    now: dict[str, int] = {}  # requests in flight, per case
    most: dict[str, int] = {}  # the most in flight at once, per case
    lock = threading.Lock()

    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def _start_sse(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        case = self.path.split("/")[1]
        if case == "hang":
            time.sleep(5)
            return
        if self.path.endswith("/models"):
            self._json(200, {"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "me"}]})
        elif case == "slots" and self.path.endswith("/props"):  # llama.cpp's server says how many it decodes at once
            self._json(200, {"total_slots": 3})
        else:
            self._json(404, {"error": {"message": "no such route"}})

    def do_POST(self) -> None:
        case = self.path.split("/")[1]
        Hostile.counts[case] = Hostile.counts.get(case, 0) + 1
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        Hostile.bodies.setdefault(case, []).append(body)
        w = self.wfile.write
        if case == "ok":
            self._start_sse()
            for piece in ["", "Hello", " world", ".", "\nignored"]:
                w(_chunk(piece, role="assistant" if piece == "" else None))
                self.wfile.flush()
            w(_chunk(finish="stop") + b"data: [DONE]\n\n")
        elif case == "hang":
            time.sleep(5)
        elif case in ("slots", "parallel"):  # counts requests in flight at once, each held a while
            with Hostile.lock:
                Hostile.now[case] = Hostile.now.get(case, 0) + 1
                Hostile.most[case] = max(Hostile.most.get(case, 0), Hostile.now[case])
            time.sleep(0.3)
            with Hostile.lock:
                Hostile.now[case] -= 1
            self._start_sse()
            w(_chunk("Slot") + _chunk(finish="stop") + b"data: [DONE]\n\n")
        elif case == "hang_mid":
            self._start_sse()
            w(_chunk("Hel"))
            self.wfile.flush()
            time.sleep(5)
        elif case == "malformed":
            self._start_sse()
            w(b"data: {this is not json}\n\n")
        elif case == "broken_line":
            self._start_sse()
            w(_chunk("Hello"))
            w(b'data: {"choices": [{"delta": {"content": " wor\n\n')
        elif case == "not_sse":
            self._json(200, {"choices": [{"message": {"role": "assistant", "content": "Hi"}}]})
        elif case == "wrong_shape":
            self._start_sse()
            w(b'data: {"choices": "nope"}\n\n')
        elif case == "empty":
            self._start_sse()
            w(_chunk("", role="assistant") + _chunk(finish="stop") + b"data: [DONE]\n\n")
        elif case == "flood":
            self._start_sse()
            sent = 0
            try:
                for _ in range(FLOOD_TOKENS):
                    w(_chunk(" tok"))
                    sent += 1
                w(_chunk(finish="stop") + b"data: [DONE]\n\n")
            except OSError:  # the client hung up: what we want
                pass
            finally:
                Hostile.sent["flood"] = sent
        elif case == "auth":
            if self.headers.get("Authorization") != f"Bearer {KEY}":
                got = self.headers.get("Authorization", "").removeprefix("Bearer ")
                self._json(401, {"error": {"message": f"Incorrect API key provided: {got}", "code": "invalid_api_key"}})
                return
            self._start_sse()
            w(_chunk("Authorised") + _chunk(finish="stop") + b"data: [DONE]\n\n")
        elif case == "flaky":  # 503 twice, then a good answer
            if Hostile.counts[case] <= 2:
                self._json(503, {"error": {"message": "loading model"}})
                return
            self._start_sse()
            w(_chunk("Recovered") + _chunk(finish="stop") + b"data: [DONE]\n\n")
        elif case == "down500":
            self._json(500, {"error": {"message": "out of memory"}})
        elif case == "bad_request":
            self._json(400, {"error": {"message": "context length exceeded"}})
        elif case == "error_event":
            self._start_sse()
            w(_chunk("Par") + b'data: {"error": {"message": "the model crashed"}}\n\n')
        elif case == "cut_off":  # llama_cpp.server interrupted by another request: [DONE], no finish_reason
            self._start_sse()
            w(_chunk("Meta offered") + b"data: [DONE]\n\n")
        elif case == "ignores_stop":
            self._start_sse()
            w(_chunk("one line") + _chunk(" and\nanother") + b"data: [DONE]\n\n")
        elif case == "strict":  # api.openai.com-like: unknown fields are an error
            if "repeat_penalty" in body:
                self._json(400, {"error": {"message": "Unrecognized request argument supplied: repeat_penalty"}})
                return
            self._start_sse()
            w(_chunk("Plain") + _chunk(finish="stop") + b"data: [DONE]\n\n")
        elif case == "drop":  # chunked HTTP/1.1, as real servers stream; dies mid-answer
            self.protocol_version = "HTTP/1.1"
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            data = _chunk("Half")
            w(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        else:
            self._json(404, {"error": {"message": "unknown case"}})


@pytest.fixture(scope="module")
def hostile() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def gen(base: str, case: str, timeout_s: float = 5.0, key: str | None = None, model: str | None = "fake-model") -> OpenAIGenerator:
    return OpenAIGenerator(
        ModelSettings(backend="openai", url=f"{base}/{case}/v1", model=model, timeout_s=timeout_s,
                      api_key=SecretStr(key) if key else None)
    )


def test_registry_builds_the_openai_backend():
    g = make_generator(ModelSettings(backend="openai", url="http://127.0.0.1:9/v1", model="m"))
    assert isinstance(g, OpenAIGenerator)


def test_missing_or_bad_url_is_a_clear_error_when_used():
    # building never fails (a pipeline without its LLM still answers); using it says what to set
    unset = OpenAIGenerator(ModelSettings(backend="openai"))
    for call in (unset.warm_up, lambda: unset.generate(MESSAGES, 8)):
        with pytest.raises(LLMError, match="^the openai backend needs a server URL: set RAG_LLM_URL"):
            call()
    with pytest.raises(LLMError, match="^RAG_LLM_URL must start with http:// or https://"):
        OpenAIGenerator(ModelSettings(backend="openai", url="127.0.0.1:8080/v1")).warm_up()


def test_streams_pieces_and_cuts_at_the_stop_string(hostile):
    pieces: list[str] = []
    g = gen(hostile, "ok").generate(MESSAGES, 48, on_token=pieces.append)
    assert g.text == "Hello world."
    assert pieces == ["Hello", " world", "."]
    assert g.finish_reason == "stop"
    assert g.new_tokens == 4  # the piece holding the stop string was generated too
    assert 0 < g.first_token_s <= g.total_s


def test_the_request_is_greedy_and_bounded(hostile):
    gen(hostile, "ok").generate(MESSAGES, 7, stop=("\n", "END"))
    body = Hostile.bodies["ok"][-1]
    assert body["messages"] == MESSAGES and body["model"] == "fake-model" and body["stream"] is True
    assert (body["temperature"], body["max_tokens"], body["stop"], body["repeat_penalty"]) == (0.0, 7, ["\n", "END"], 1.0)


def test_a_strict_server_gets_plain_openai_requests(hostile):
    g = gen(hostile, "strict")
    assert g.generate(MESSAGES, 8).text == "Plain"
    assert g.generate(MESSAGES, 8).text == "Plain"
    assert [("repeat_penalty" in b) for b in Hostile.bodies["strict"]] == [True, False, False]


def test_a_server_that_ignores_stop_is_cut_here(hostile):
    pieces: list[str] = []
    g = gen(hostile, "ignores_stop").generate(MESSAGES, 48, on_token=pieces.append)
    assert g.text == "one line and"
    assert "".join(pieces) == "one line and"


def test_hanging_server_times_out_within_the_budget(hostile):
    t = time.perf_counter()
    with pytest.raises(LLMError) as err:
        gen(hostile, "hang", timeout_s=1).generate(MESSAGES, 48)
    assert time.perf_counter() - t < 2.5
    assert str(err.value) == f"{hostile}/hang/v1 timed out after 1 s"


def test_hang_after_some_text_returns_it_as_timeout(hostile):
    t = time.perf_counter()
    g = gen(hostile, "hang_mid", timeout_s=1).generate(MESSAGES, 48)
    assert time.perf_counter() - t < 2.5
    assert (g.text, g.finish_reason) == ("Hel", "timeout")


@pytest.mark.parametrize(
    "case, why",
    [
        ("malformed", "a stream event is not valid JSON"),
        ("broken_line", "a stream event is not valid JSON"),
        ("wrong_shape", "a stream event is not a chat completion chunk"),
        ("not_sse", "the stream held no events"),
    ],
)
def test_malformed_responses_are_one_clear_line(hostile, case, why):
    with pytest.raises(LLMError) as err:
        gen(hostile, case).generate(MESSAGES, 48)
    message = str(err.value)
    assert message.startswith(f"malformed response from {hostile}/{case}/v1: {why}")
    assert "\n" not in message


def test_an_answer_cut_off_without_finish_reason_is_an_error(hostile):
    with pytest.raises(LLMError, match=r"/cut_off/v1 ended the answer without a finish_reason \(cut off mid-answer\)$"):
        gen(hostile, "cut_off").generate(MESSAGES, 48)


def test_empty_answer_is_returned_empty(hostile):
    g = gen(hostile, "empty").generate(MESSAGES, 48)
    assert (g.text, g.new_tokens, g.finish_reason) == ("", 0, "stop")


def test_a_flood_of_tokens_is_cut_at_max_new_tokens(hostile):
    pieces: list[str] = []
    t = time.perf_counter()
    g = gen(hostile, "flood").generate(MESSAGES, 48, on_token=pieces.append)
    assert time.perf_counter() - t < 3
    assert g.finish_reason == "length"
    assert g.new_tokens == 48
    assert g.text == " tok" * 48
    assert "".join(pieces) == g.text
    deadline = time.monotonic() + 5  # the stream is closed, so the server stops writing
    while "flood" not in Hostile.sent and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Hostile.sent.get("flood", FLOOD_TOKENS) < FLOOD_TOKENS


def test_wrong_api_key_is_401_and_never_shown(hostile, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "sk-wrong-key-9876"
    g = gen(hostile, "auth", key=wrong)
    with pytest.raises(LLMError) as err:
        g.generate(MESSAGES, 48)
    assert str(err.value) == f"{hostile}/auth/v1 said 401 Unauthorized: check RAG_LLM_API_KEY"
    assert Hostile.counts["auth"] == 1  # a 4xx is not retried
    assert wrong not in repr(g) and wrong not in caplog.text and wrong not in repr(g.settings)
    assert gen(hostile, "auth", key=KEY).generate(MESSAGES, 48).text == "Authorised"


def test_5xx_is_retried_with_backoff_then_succeeds(hostile):
    t = time.perf_counter()
    g = gen(hostile, "flaky").generate(MESSAGES, 48)
    assert g.text == "Recovered"
    assert Hostile.counts["flaky"] == 3
    assert time.perf_counter() - t >= 0.5 * 0.75 + 1.0 * 0.75  # two backoffs


def test_5xx_that_persists_says_so_after_bounded_retries(hostile):
    with pytest.raises(LLMError) as err:
        gen(hostile, "down500").generate(MESSAGES, 48)
    assert str(err.value) == f"{hostile}/down500/v1 said 500 Internal Server Error: out of memory"
    assert Hostile.counts["down500"] == 3


def test_4xx_carries_the_server_reason(hostile):
    with pytest.raises(LLMError, match=r"said 400 Bad Request: context length exceeded$"):
        gen(hostile, "bad_request").generate(MESSAGES, 48)


def test_an_error_event_inside_the_stream(hostile):
    with pytest.raises(LLMError, match=r"/error_event/v1 reported an error: the model crashed$"):
        gen(hostile, "error_event").generate(MESSAGES, 48)


def test_connection_dropped_mid_answer(hostile):
    with pytest.raises(LLMError, match=r"^lost the connection to .*/drop/v1 mid-answer$"):
        gen(hostile, "drop").generate(MESSAGES, 48)


def test_nothing_listening_is_connection_refused():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    t = time.perf_counter()
    with pytest.raises(LLMError) as err:
        OpenAIGenerator(ModelSettings(backend="openai", url=url, model="m", timeout_s=5)).generate(MESSAGES, 8)
    assert str(err.value) == f"cannot connect to {url}: connection refused"
    assert time.perf_counter() - t < 5  # retried twice with backoff, within the budget


def test_a_server_that_is_down_is_skipped_for_a_while(monkeypatch):
    """After a failed connection, questions fail at once with the same line instead of each
    waiting for retries; after DOWN_PAUSE_S the next one tries the server again."""
    import rag.llm.openai as backend

    monkeypatch.setattr(backend, "DOWN_PAUSE_S", 1.0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    g = OpenAIGenerator(ModelSettings(backend="openai", url=url, model="m", timeout_s=5))
    with pytest.raises(LLMError):
        g.warm_up()
    opened = []
    real_open = backend.OpenAIGenerator._open
    monkeypatch.setattr(backend.OpenAIGenerator, "_open", lambda self, *a: opened.append(1) or real_open(self, *a))
    t = time.perf_counter()
    with pytest.raises(LLMError) as err:
        g.generate(MESSAGES, 8)
    assert time.perf_counter() - t < 0.1 and not opened
    assert str(err.value) == f"cannot connect to {url}: connection refused"
    time.sleep(1.0)
    with pytest.raises(LLMError, match="connection refused"):
        g.generate(MESSAGES, 8)
    assert opened  # the pause was over: it tried the server again


def test_a_slow_or_refusing_server_is_not_skipped(hostile):
    for case in ("hang", "bad_request"):
        g = gen(hostile, case, timeout_s=1)
        with pytest.raises(LLMError):
            g.generate(MESSAGES, 8)
        before = Hostile.counts[case]
        with pytest.raises(LLMError):
            g.generate(MESSAGES, 8)
        assert Hostile.counts[case] == before + 1, case  # asked the server again


def test_credentials_in_the_url_are_never_shown():
    g = OpenAIGenerator(ModelSettings(backend="openai", url="http://bob:pw123@127.0.0.1:9/v1", model="m", timeout_s=2))
    with pytest.raises(LLMError) as err:
        g.generate(MESSAGES, 8)
    assert "pw123" not in str(err.value) and "pw123" not in repr(g)


def test_warm_up_lists_models_and_picks_the_first(hostile):
    g = gen(hostile, "ok", model=None)
    g.warm_up()
    assert g._model_name == "fake-model"
    with pytest.raises(LLMError, match=r"^.*/hang/v1 timed out after 1 s$"):
        gen(hostile, "hang", timeout_s=1).warm_up()


def test_count_tokens_is_an_estimate():
    g = OpenAIGenerator(ModelSettings(backend="openai", url="http://127.0.0.1:9/v1"))
    assert g.count_tokens([{"role": "user", "content": "x" * 400}]) == 104


# -- the real llama.cpp server ----------------------------------------------------------------
RAG_PROMPT = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "Passages:\n[1] Meta offered OpenAI engineers signing bonuses of up to $100 million, "
                                "according to Sam Altman.\n[2] xAI recruited several Meta researchers.\n\n"
                                "Question: How much did Meta offer OpenAI engineers as signing bonuses?"},
]
LONG_PROMPT = [{"role": "user", "content": "List the planets of the solar system, one per line."}]


@pytest.fixture(scope="module")
def in_process(llama_cpp_installed):
    from llama_cpp import Llama

    return Llama(model_path=str(packaged_gguf()), n_ctx=2048, n_threads=2, verbose=False)


@pytest.mark.slow
@pytest.mark.parametrize("messages, stop", [(RAG_PROMPT, ("\n",)), (LONG_PROMPT, ())], ids=["rag-prompt", "48-tokens"])
def test_real_llama_cpp_server_streams_the_in_process_answer(llama_server, in_process, messages, stop):
    g = OpenAIGenerator(ModelSettings(backend="openai", url=llama_server, model=None, timeout_s=60))
    g.warm_up()
    pieces: list[str] = []
    served = g.generate(messages, 48, stop=stop, on_token=pieces.append)
    assert served.text.strip()
    assert len(pieces) > 3 and "".join(pieces) == served.text  # piece by piece, as they arrive
    local = in_process.create_chat_completion(messages, max_tokens=48, temperature=0.0, stop=list(stop) or None)
    assert served.text == local["choices"][0]["message"]["content"]  # greedy, same model: same words


@pytest.mark.slow
def test_real_server_cuts_at_max_new_tokens(llama_server):
    g = OpenAIGenerator(ModelSettings(backend="openai", url=llama_server, model=None, timeout_s=60))
    out = g.generate(LONG_PROMPT, 5, stop=())
    assert (out.new_tokens, out.finish_reason) == (5, "length")


@pytest.mark.slow
def test_real_server_with_any_model_name_answers(llama_server):
    # llama.cpp serves its one model whatever the name; other servers' 404 is covered above.
    g = OpenAIGenerator(ModelSettings(backend="openai", url=llama_server, model="no-such-model", timeout_s=60))
    assert g.generate(RAG_PROMPT, 8).text.strip()


def test_requests_in_flight_are_bounded_by_parallel_or_the_servers_slots(hostile):
    """RAG_LLM_PARALLEL bounds how many requests are sent at once; unset, a server that reports
    its slots (llama.cpp's /props) gets that many, and one that reports nothing gets 4."""
    from concurrent.futures import ThreadPoolExecutor

    import rag.llm.openai as backend

    two = OpenAIGenerator(ModelSettings(backend="openai", url=f"{hostile}/parallel/v1", model="fake-model", parallel=2))
    learned = gen(hostile, "slots")
    learned.warm_up()
    silent = gen(hostile, "ok")
    silent.warm_up()
    assert (two.parallel, learned.parallel, silent.parallel) == (2, 3, backend.DEFAULT_PARALLEL)
    for g in (two, learned):
        with ThreadPoolExecutor(max_workers=8) as pool:
            texts = [r.text for r in pool.map(lambda _: g.generate(MESSAGES, 8), range(8))]
        assert texts == ["Slot"] * 8 and g.in_flight == 0
    assert Hostile.most["parallel"] == two.peak == 2
    assert Hostile.most["slots"] == learned.peak == 3
