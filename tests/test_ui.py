"""The chat UI in a real browser against the real app: streaming, citations, viewer, follow-ups."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "corpus"

pytestmark = [pytest.mark.slow, pytest.mark.browser]

QUESTION = "How much did Meta offer OpenAI engineers as signing bonuses?"
ANSWER_TIMEOUT_MS = 120_000
FINAL = "#rag-chat .rag-answer, #rag-chat .rag-refusal"


@pytest.fixture
def page(chromium, app_url):
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(app_url)
    page.wait_for_selector("#rag-question textarea", timeout=60_000)
    yield page
    context.close()
    assert not dialogs, f"a dialog fired: {dialogs}"


def ask(page, question: str, n_before: int = 0) -> float | None:
    """Type and submit a question; wait for its final answer. Returns seconds to first token
    (None if the answer came without streaming, e.g. a refusal decided before generation)."""
    page.fill("#rag-question textarea", question)
    t0 = time.perf_counter()
    page.click("#rag-ask")
    first = page.wait_for_selector(f"#rag-chat .rag-streaming:not(.rag-waiting), {FINAL} >> nth={n_before}", timeout=ANSWER_TIMEOUT_MS)
    ttft = time.perf_counter() - t0 if "rag-streaming" in (first.get_attribute("class") or "") else None
    page.wait_for_function(
        f"n => document.querySelectorAll('{FINAL}').length > n && !document.querySelector('#rag-chat .rag-streaming')",
        arg=n_before,
        timeout=ANSWER_TIMEOUT_MS,
    )
    return ttft


def test_streamed_answer_with_clickable_citation(page, pipeline, tmp_path, capsys):
    ttft = ask(page, QUESTION)
    with capsys.disabled():
        print(f"\n[ui] time from submit to first streamed token in the page: {ttft:.2f} s" if ttft else "\n[ui] answer was not streamed")
    assert ttft is not None, "the answer should stream token by token"

    answer = page.locator("#rag-chat .rag-answer").last
    assert "million" in answer.inner_text().lower()
    sources = answer.locator(".rag-sources a")
    assert sources.count() >= 1
    assert page.locator("#rag-chat .rag-searched").last.inner_text() == f"Searched: {QUESTION}"
    quote = sources.first.locator(".rag-quote").inner_text().strip("“”…")

    sources.first.click()
    mark = page.locator("#rag-viewer .rag-doc mark")
    mark.wait_for(timeout=15_000)
    meta = page.locator("#rag-viewer .rag-doc-meta").inner_text()
    doc_id, start, end = re.search(r"\] (\S+) · characters (\d+)–(\d+)", meta).groups()
    assert mark.inner_text() == pipeline.index.documents[doc_id].text[int(start) : int(end)]  # the stored text, as the app has it
    assert mark.inner_text().startswith(quote)
    page.wait_for_function(
        """() => { const box = document.querySelector('#rag-viewer .rag-doc');
                   const b = box.getBoundingClientRect(), m = box.querySelector('mark').getBoundingClientRect();
                   return m.top >= b.top - 1 && m.top < b.bottom; }""",
        timeout=5_000,
    )  # the passage was scrolled into view

    page.screenshot(path=tmp_path / "ui.png")
    (REPO / "docs").mkdir(exist_ok=True)
    shutil.copy(tmp_path / "ui.png", REPO / "docs" / "ui.png")


def test_followup_is_rewritten_and_shown(page):
    ask(page, "How much did Meta offer one AI researcher?")
    ask(page, "And what about xAI?", n_before=1)
    searched = page.locator("#rag-chat .rag-searched").last.inner_text()
    assert searched == "Searched: How much did xAI offer one AI researcher?"
    assert page.locator("#rag-chat .rag-user").count() == 2


def test_refusal_looks_different(page):
    ask(page, "What is the boiling point of mercury?")
    refusal = page.locator("#rag-chat .rag-refusal").last
    assert "don’t cover" in refusal.locator(".rag-notice").inner_text()
    assert refusal.locator(".rag-cite-mark").count() == 0
    assert page.locator("#rag-chat .rag-answer").count() == 0
    closest = refusal.locator(".rag-sources a")
    if closest.count():  # the nearest passages open in the viewer like citations
        closest.first.click()
        page.locator("#rag-viewer .rag-doc mark").wait_for(timeout=15_000)


def test_start_screen_examples_settings_and_clear(page):
    assert re.match(r"Ask 4 articles", page.title())
    examples = page.locator("#rag-chat button.example")
    assert examples.count() >= 1
    examples.first.click()
    page.wait_for_selector(FINAL, timeout=ANSWER_TIMEOUT_MS)
    page.wait_for_function("() => !document.querySelector('#rag-chat .rag-streaming')", timeout=ANSWER_TIMEOUT_MS)
    assert page.locator("#rag-chat .rag-user").count() == 1

    page.get_by_text("Settings").click()
    page.locator("#rag-show-sources input").uncheck()
    page.wait_for_selector("#rag-viewer-col", state="hidden", timeout=10_000)
    assert page.locator("#rag-chat .rag-sources").count() == 0
    page.locator("#rag-show-sources input").check()
    page.wait_for_selector("#rag-viewer-col", state="visible", timeout=10_000)

    page.click("#rag-clear")
    page.wait_for_function("() => document.querySelectorAll('#rag-chat .rag-user').length === 0", timeout=10_000)
    assert page.locator("#rag-chat button.example").count() >= 1


def test_empty_and_too_long_questions_warn_and_keep_the_chat(page):
    page.click("#rag-ask")
    page.get_by_text("Type a question about the articles first.").wait_for(timeout=10_000)
    page.fill("#rag-question textarea", "x" * 2100)
    page.click("#rag-ask")
    page.get_by_text("The question is 2100 characters long; the limit is 2000.").wait_for(timeout=30_000)
    assert page.locator("#rag-chat .rag-user").count() == 0
    assert len(page.input_value("#rag-question textarea")) == 2100  # given back to edit
