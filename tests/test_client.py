"""The `ask` API endpoint through gradio_client, against the real app."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)


def test_ask_returns_structured_citations(client, pipeline):
    result = client.predict(question="How much did Meta offer OpenAI engineers as signing bonuses?", api_name="/ask")
    assert isinstance(result, dict)
    assert result["refused"] is False
    assert result["text"].strip()
    assert result["searched"] == "How much did Meta offer OpenAI engineers as signing bonuses?"
    assert result["citations"]
    for c in result["citations"]:
        assert f"[{c['n']}]" in result["text"]
        assert c["text"] == pipeline.index.documents[c["doc_id"]].text[c["start"] : c["end"]]  # same corpus, stored text
        assert c["title"]


def test_followup_with_history_is_rewritten(client):
    result = client.predict(
        question="And what about xAI?", history=["How much did Meta offer one AI researcher?"], top_k=3, api_name="/ask"
    )
    assert result["searched"] == "How much did xAI offer one AI researcher?"
    assert result["question"] == "And what about xAI?"


def test_bad_question_is_a_clear_error(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="empty"):
        client.predict(question="   ", api_name="/ask")


def test_only_the_ask_and_upload_endpoints_are_public(client):
    api = client.view_api(print_info=False, return_format="dict")
    assert sorted(api["named_endpoints"]) == ["/ask", "/upload"]
    assert not api["unnamed_endpoints"]


def test_top_k_out_of_range_is_a_clear_error(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="top_k must be between 1 and 20"):
        client.predict(question="Who is Alexandr Wang?", top_k=0, api_name="/ask")

