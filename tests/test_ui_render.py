"""The chat's HTML builders: escaping, citation links, the viewer's <mark>, corpus-derived text."""

from __future__ import annotations

import pytest

from rag.types import Answer, Citation, Document
from rag.serve.ui import Turn, answer_json, describe_corpus, example_questions, render_answer, render_source, render_user

EVIL = "<script>alert(1)</script>"


def doc(doc_id: str, title: str, text: str) -> Document:
    return Document(doc_id=doc_id, title=title, text=text, path="", sha256="")


def cite(n: int, text: str, start: int = 0, title: str = "T") -> Citation:
    return Citation(n=n, doc_id="d", title=title, chunk_id=0, text=text, start=start, end=start + len(text), score=1.0)


def test_answer_is_escaped_and_markers_link_to_citations():
    answer = Answer(question="q", text=f"Meta paid {EVIL} $100 [1] and [7].", citations=[cite(1, f"quote {EVIL}", title=EVIL)], searched="q?")
    out = render_answer(Turn(id=3, question="q", answer=answer))
    assert "<script>" not in out and "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert 'href="#rag-cite-3-1"' in out  # marker [1] and the source entry
    assert "[7]" in out and "#rag-cite-3-7" not in out  # a marker with no citation stays text
    assert "Searched: q?" in out
    assert "\n" not in out  # one HTML block: markdown never reformats it


def test_hidden_sources_drop_links():
    answer = Answer(question="q", text="x [1]", citations=[cite(1, "x")])
    out = render_answer(Turn(id=1, question="q", answer=answer), show_sources=False)
    assert "rag-sources" not in out and "href" not in out


def test_refusal_with_close_passages_says_they_may_be_related_and_marks_the_unstated_span():
    near = cite(1, "Meta paid <b>$5</b> to Bob.").model_copy(update={"highlight": (10, 19)})
    answer = Answer(question="q", text="no", refused=True, route="refused", closest=[near], confidence=0.91)
    out = render_answer(Turn(id=2, question="q", answer=answer))
    assert "rag-refusal" in out and "don’t state this" in out and "may be related" in out and 'href="#rag-close-2-1"' in out
    assert "<mark>&lt;b&gt;$5&lt;/b&gt;</mark>" in out  # the span, escaped like all corpus text
    assert "they do not answer it" not in out
    assert "Confidence that the articles don’t state it: high (91%)" in out


def test_refusal_with_nothing_close_is_plain():
    answer = Answer(question="q", text="no", refused=True, route="refused", confidence=0.97)
    out = render_answer(Turn(id=3, question="q", answer=answer))
    assert "don’t cover" in out and "rag-sources" not in out


@pytest.mark.parametrize(("confidence", "level"), [(0.93, "high"), (0.7, "medium"), (0.52, "low")])
def test_an_answer_shows_its_confidence_at_a_glance(confidence, level):
    answer = Answer(question="q", text="x [1]", citations=[cite(1, "x")], confidence=confidence)
    out = render_answer(Turn(id=1, question="q", answer=answer))
    assert f"rag-conf-{level}" in out and f"{level} ({confidence:.0%})" in out


def test_no_confidence_line_without_the_policy():
    out = render_answer(Turn(id=1, question="q", answer=Answer(question="q", text="x [1]", citations=[cite(1, "x")])))
    assert "rag-confidence" not in out


def test_viewer_marks_the_exact_passage_and_escapes_the_article():
    text = f"Title {EVIL}\nBefore. The cited <b>part</b>. After."
    start = text.index("The cited")
    c = cite(1, "The cited <b>part</b>.", start=start)
    out = render_source(doc("d", f"Title {EVIL}", text), c)
    assert "<mark>The cited &lt;b&gt;part&lt;/b&gt;.</mark>" in out
    assert "<script>" not in out and "<b>" not in out
    assert "characters" in out and "<div class=\"rag-empty\">" in render_source(None)


def test_user_question_is_escaped():
    assert render_user(f"why {EVIL}\nok") == '<div class="rag-user">why &lt;script&gt;alert(1)&lt;/script&gt;<br>ok</div>'


def test_title_and_examples_come_from_the_corpus():
    docs = [doc("a", "Zebras cross Elm Street", "Zebras on Elm Street."), doc("b", "Elm Street zebra count", "Zebras.")]
    title, description = describe_corpus(docs)
    assert title.startswith("Ask 2 articles about Elm")
    assert "“Zebras cross Elm Street”" in description and "2 articles" in description
    assert example_questions(docs) == ["What does “Zebras cross Elm Street” report?", "What does “Elm Street zebra count” report?"]


def test_api_json_has_no_path_key_at_any_depth():
    """gradio_client downloads any dict holding a "path" key as a file, so the API's answer must
    have none, however deep (citations, closest passages, signals)."""
    from rag.types import Signals

    answer = Answer(
        question="q", text="t [1]", route="generated", citations=[cite(1, "t")], closest=[cite(2, "u")],
        signals=Signals(dense=0.5, coverage=1.0, wants_number=False, has_number=False), timings={"total": 1.0},
    )

    def keys(value) -> set[str]:
        if isinstance(value, dict):
            return set(value) | set().union(*(keys(v) for v in value.values()))
        if isinstance(value, list):
            return set().union(*(keys(v) for v in value))
        return set()

    data = answer_json(answer)
    assert data["route"] == "generated" and data["citations"][0]["text"] == "t"
    assert "path" not in keys(data), "a 'path' key would make gradio_client treat the answer as a file"
