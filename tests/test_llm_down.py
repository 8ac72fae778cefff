"""When the LLM cannot answer: start anyway, quote the passage, and say which server failed and why.

Fast tier: the real openai backend against a port where nothing listens (and a fake LLM that
fails mid-answer), over the tiny corpus and the hash embedder. Slow: the real app, UI and API,
started with its LLM server down.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Sequence

import pytest
from fastapi.testclient import TestClient

from conftest import make_settings, running_app, TINY_CORPUS
from fakes import ScriptedReader
from rag.serve.api import create_app
from rag.llm import Generation, LLMError, Message, OnToken
from rag.pipeline import LLM_FAILED, Pipeline
from rag.serve.ui import llm_failed_notice

PAINT = "How much was paid by the council for the new paint?"
PAINT_SENTENCE = "The council paid 4,000 dollars for the new paint."
MOUNTAIN = "What is the tallest mountain in Europe?"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def down_url() -> str:
    return f"http://127.0.0.1:{closed_port()}/v1"


@pytest.fixture
def make_pipeline(tmp_path, hash_embedder):
    """make(generator=None, reader=None, **settings): the tiny corpus and the hash embedder; the
    LLM built from settings unless given; a scripted reader, or none (the sentence route)."""

    def make(generator=None, reader: ScriptedReader | None = None, **overrides) -> Pipeline:
        root = tmp_path / f"p{len(list(tmp_path.iterdir()))}"
        (root / "corpus").mkdir(parents=True)
        for name, text in TINY_CORPUS.items():
            (root / "corpus" / name).write_text(text, encoding="utf-8")
        if reader is None:
            overrides.setdefault("use_reader", False)
        overrides.setdefault("reranker", "none")  # the fast tier loads no model (conftest)
        return Pipeline(make_settings(root, **overrides), embedder=hash_embedder, generator=generator, reader=reader)

    return make


@pytest.mark.parametrize(
    "reader, text",
    [(None, f"{PAINT_SENTENCE} [1]"), (ScriptedReader("4,000 dollars"), "4,000 dollars. [1]")],
    ids=["sentence-quoted", "reader-span-as-found"],
)
def test_unreachable_server_starts_and_answers_without_it(make_pipeline, down_url, caplog, reader, text):
    p = make_pipeline(reader=reader, llm_backend="openai", llm_url=down_url, llm_model="any", llm_timeout_s=5)
    caplog.set_level(logging.ERROR, logger="rag.pipeline")
    p.warm_up()  # logs, does not raise
    (record,) = [r for r in caplog.records if r.name == "rag.pipeline"]
    line = record.getMessage()
    assert line == f"{LLM_FAILED}: cannot connect to {down_url}: connection refused; answers quote the passages until it is back"
    assert "\n" not in line

    t = time.perf_counter()
    a = p.answer(PAINT)
    assert time.perf_counter() - t < 2  # the server just failed: not asked again for a while
    assert (a.route, a.refused) == ("extractive", False)
    assert a.reason == f"{LLM_FAILED}: cannot connect to {down_url}: connection refused"
    assert a.text == text
    (c,) = a.citations
    assert p.index.documents[c.doc_id].text[c.start : c.end] == c.text == PAINT_SENTENCE
    assert "generate" in a.timings

    refused = p.answer(MOUNTAIN)  # the gate or the policy needs no LLM: an honest refusal, as always
    assert refused.refused and LLM_FAILED not in refused.reason
    assert refused.reason.startswith("no passage is close")  # the gate is the floor under the policy too


def test_a_missing_server_url_says_which_setting_to_fix(make_pipeline, caplog):
    p = make_pipeline(llm_backend="openai")
    caplog.set_level(logging.ERROR, logger="rag.pipeline")
    p.warm_up()
    assert "set RAG_LLM_URL" in caplog.text
    a = p.answer(PAINT)
    assert a.route == "extractive" and a.reason.startswith(f"{LLM_FAILED}: the openai backend needs a server URL: set RAG_LLM_URL")


class FailsMidAnswer:
    """Streams a few words, then the connection drops."""

    def warm_up(self) -> None:
        pass

    def count_tokens(self, messages: list[Message]) -> int:
        return 1

    def generate(self, messages: list[Message], max_new_tokens: int, stop: Sequence[str] = ("\n",), on_token: OnToken | None = None) -> Generation:
        if on_token:
            on_token("The council ")
        raise LLMError("lost the connection to http://10.0.0.5:8080/v1 mid-answer")


def test_a_failure_mid_stream_ends_in_the_quoted_answer(make_pipeline):
    p = make_pipeline(generator=FailsMidAnswer())
    stream = p.stream(PAINT)
    assert list(stream) == ["The council "]  # what the UI showed while it streamed ...
    a = stream.answer  # ... is replaced by the checked answer, which says why
    assert a.route == "extractive" and a.text == f"{PAINT_SENTENCE} [1]"
    assert a.reason == f"{LLM_FAILED}: lost the connection to http://10.0.0.5:8080/v1 mid-answer"


def test_the_api_answers_with_the_llm_down(make_pipeline, down_url):
    p = make_pipeline(llm_backend="openai", llm_url=down_url, llm_model="any", llm_timeout_s=5)
    p.warm_up()
    api = TestClient(create_app(p))
    r = api.post("/v1/chat/completions", json={"model": "rag", "messages": [{"role": "user", "content": PAINT}]})
    assert r.status_code == 200
    body = r.json()
    assert body["choices"][0]["message"]["content"] == f"{PAINT_SENTENCE} [1]"
    assert body["citations"][0]["text"] == PAINT_SENTENCE
    assert body["rag"]["route"] == "extractive" and down_url in body["rag"]["reason"]


def test_the_ui_notice_names_the_server_and_the_reason():
    notice = llm_failed_notice(f"{LLM_FAILED}: http://127.0.0.1:8080/v1 timed out after 20 s")
    assert notice == "The LLM did not answer (http://127.0.0.1:8080/v1 timed out after 20 s), so this answer quotes the passage."


# -- the real app, its LLM server down ------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.browser
def test_real_app_with_its_llm_server_down_stays_usable(tmp_path, pipeline, chromium, monkeypatch):
    """`rag serve` with RAG_LLM_BACKEND=openai and nothing at RAG_LLM_URL: it starts; in the
    browser a question gets the quoted, cited answer and a notice naming the server and why;
    the UI's /ask and the OpenAI-compatible API answer the same way."""
    from gradio_client import Client
    from openai import OpenAI

    pipeline.index  # built once per session; the app starts from a copy
    down = f"http://127.0.0.1:{closed_port()}/v1"
    monkeypatch.setenv("RAG_LLM_BACKEND", "openai")
    monkeypatch.setenv("RAG_LLM_URL", down)
    monkeypatch.setenv("RAG_LLM_TIMEOUT_S", "5")
    question = "How much did Meta offer OpenAI engineers as signing bonuses?"
    with running_app(tmp_path, index_from=pipeline.settings.index_dir) as app:
        page = chromium.new_page()
        try:
            page.goto(app.url)
            page.fill("#rag-question textarea", question)
            page.click("#rag-ask")
            page.get_by_text(llm_failed_notice(f"{LLM_FAILED}: cannot connect to {down}: connection refused")).wait_for(timeout=60_000)
            answer = page.wait_for_selector("#rag-chat .rag-answer", timeout=60_000)
            assert "[1]" in answer.inner_text()
            page.fill("#rag-question textarea", "and what about xAI?")  # still usable: the next question works
            page.click("#rag-ask")
            page.wait_for_function("() => document.querySelectorAll('#rag-chat .rag-answer, #rag-chat .rag-refusal').length === 2",
                                   timeout=60_000)
        finally:
            page.close()
        result = Client(app.url, verbose=False, analytics_enabled=False, download_files=False).predict(
            question=question, api_name="/ask"
        )
        assert result["route"] == "extractive" and not result["refused"] and result["citations"]
        assert result["reason"] == f"{LLM_FAILED}: cannot connect to {down}: connection refused"
        for c in result["citations"]:
            assert pipeline.index.documents[c["doc_id"]].text[c["start"] : c["end"]] == c["text"]

        client = OpenAI(base_url=f"{app.url}/v1", api_key="none", timeout=60, max_retries=0)
        chunks = list(client.chat.completions.create(model="rag", messages=[{"role": "user", "content": question}], stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        assert text == result["text"]
        assert chunks[-1].model_extra["rag"]["reason"] == result["reason"]
        log = (tmp_path / "app.log").read_text()
        assert f"{LLM_FAILED}: cannot connect to {down}: connection refused" in log  # the one line at start
