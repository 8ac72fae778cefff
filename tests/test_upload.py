"""Upload: files dropped in the chat are indexed and citable at once; bad ones are named with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import running_app
from test_ingest import make_pdf
from test_updates import LLAMAS


def test_add_uploads_sanitizes_names_and_keeps_rejected_files_out(fake_pipeline, tmp_path):
    """Fast: the pipeline's upload path with the hash embedder."""
    pipeline = fake_pipeline()
    pipeline.index
    up = tmp_path / "uploads"
    up.mkdir()
    (up / "a").write_text(LLAMAS, encoding="utf-8")
    (up / "b").write_bytes(b"")
    (up / "c").write_bytes(b"\x89PNG")
    report = pipeline.add_uploads([(up / "a", "../../llamas.txt"), (up / "b", "empty.txt"), (up / "c", "photo.png")])
    corpus = pipeline.settings.corpus_dir
    assert report.added == ["llamas"] and (corpus / "llamas.txt").exists()
    assert not (corpus.parent.parent / "llamas.txt").exists()
    reasons = {p.name: p.reason for p in report.problems}
    assert set(reasons) == {"empty.txt", "photo.png"}
    assert "empty" in reasons["empty.txt"] and reasons["photo.png"].startswith("not a readable image")
    assert not (corpus / "empty.txt").exists() and not (corpus / "photo.png").exists()
    answer = pipeline.answer("How many llamas does the farm near Oslo keep?")
    assert any(c.doc_id == "llamas" for c in answer.citations + answer.closest)


@pytest.mark.slow
def test_upload_through_the_app_then_cite_the_pdf_with_its_page(tmp_path, embedder):
    from gradio_client import Client, handle_file

    pages = [[f"Page {p} of the glacier survey."] for p in range(1, 4)]
    pages.append(["The Nordbreen glacier lost 37 metres of ice thickness between 2010 and 2020."])
    pdf = tmp_path / "nordbreen.pdf"
    pdf.write_bytes(make_pdf(pages, title="Nordbreen glacier survey"))
    bad = tmp_path / "scan.pdf"
    bad.write_bytes(make_pdf([None]))
    with running_app(tmp_path / "app") as app:
        client = Client(app.url, verbose=False)
        status = client.predict(files=[handle_file(str(pdf)), handle_file(str(bad))], api_name="/upload")
        assert "added <b>nordbreen</b>" in status
        assert "rejected <b>scan.pdf</b>: no text found by OCR" in status  # an image of nothing, read by OCR
        result = client.predict(question="How much ice did the Nordbreen glacier lose?", api_name="/ask")
        cited = [c for c in result["citations"] + result["closest"] if c["doc_id"] == "nordbreen"]
        assert cited and cited[0]["page"] == 4, result
        assert (tmp_path / "app" / "corpus" / "nordbreen.pdf").exists()
