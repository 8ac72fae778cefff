"""The served app under hostile input: HTML or <script> in the corpus and the question is shown
as text and never runs; more requests than the queue holds are refused at once, not left hanging.

The overload test runs on this module's own app: cancelled queue entries may still be worked
off, which would slow the shared app used by test_ui and test_client.
"""

from __future__ import annotations

import pytest

from conftest import running_app

pytestmark = [pytest.mark.slow, pytest.mark.browser]

TITLE = "<script>alert(1)</script> Zebra crossing notes"
RAW_HTML = '<img src=x onerror="alert(2)"> <b>bold</b> <iframe src="javascript:alert(3)"></iframe>'
EVIL = (
    f"{TITLE}\n\n"
    f"The zebra crossing on Elm Street was repainted in 2024 by the town council. {RAW_HTML}\n"
    'The council said the zebra crossing on Elm Street cost 4,000 dollars to repaint. <a href="javascript:alert(4)">click me</a>\n'
)


@pytest.fixture(scope="module")
def evil_app(tmp_path_factory):
    """The app over a corpus with hostile text, answering one question at a time (so that the
    overload test can fill its queue however fast answers come)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAG_MAX_IN_FLIGHT", "1")
        with running_app(tmp_path_factory.mktemp("evil"), extra_docs={"zzz_evil.txt": EVIL}) as app:
            yield app.url


def test_html_in_corpus_and_question_is_shown_as_text(chromium, evil_app, tmp_path):
    page = chromium.new_page(viewport={"width": 1400, "height": 900})
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(evil_app)
    page.wait_for_selector("#rag-question textarea", timeout=60_000)
    assert "<script>alert(1)</script>" in page.locator(".rag-desc").inner_text()  # title derived from the corpus

    page.fill("#rag-question textarea", "How much did the <b>zebra crossing</b> on Elm Street cost? <img src=x onerror=alert(5)>")
    page.click("#rag-ask")
    page.wait_for_selector("#rag-chat .rag-answer, #rag-chat .rag-refusal", timeout=120_000)
    page.wait_for_function("() => !document.querySelector('#rag-chat .rag-streaming')", timeout=120_000)
    assert "<b>zebra crossing</b>" in page.locator("#rag-chat .rag-user").inner_text()

    source = page.locator("#rag-chat .rag-sources a", has_text="Zebra crossing notes").first
    source.click()
    page.locator("#rag-viewer .rag-doc mark").wait_for(timeout=15_000)
    viewer = page.locator("#rag-viewer")
    assert viewer.locator(".rag-doc-title").inner_text() == TITLE
    assert RAW_HTML in viewer.locator(".rag-doc").inner_text()
    for tag in ("script", "img", "iframe"):
        assert page.locator(f"#rag-viewer {tag}, #rag-chat {tag}").count() == 0, tag
    assert page.locator("#rag-viewer .rag-doc b, #rag-chat .rag-user b").count() == 0
    page.screenshot(path=tmp_path / "safety.png")
    page.wait_for_timeout(500)  # give any injected handler a chance to fire
    assert not dialogs, f"a dialog fired: {dialogs}"
    page.close()


@pytest.mark.load
def test_overload_says_busy_instead_of_hanging(evil_app):
    """More requests than are answered at once (1 here) and the queue holds: the extra ones are
    refused at once, not left hanging."""
    import time

    from gradio_client import Client

    from rag.serve.ui import QUEUE_SIZE

    client = Client(evil_app, verbose=False)
    many = 1 + QUEUE_SIZE + 4  # answered at once + waiting + 4 too many
    jobs = [client.submit(question=f"How much did Meta offer researchers? ({i})", api_name="/ask") for i in range(many)]
    try:
        deadline = time.monotonic() + 30
        busy: list[str] = []
        while time.monotonic() < deadline and not busy:
            busy = []
            for job in jobs:
                if job.done():
                    try:
                        job.result()
                    except Exception as err:  # noqa: BLE001 - we want the message
                        busy.append(str(err))
            time.sleep(0.5)
        assert busy and all("Queue is full" in m for m in busy), busy
    finally:
        for job in jobs:
            job.cancel()
