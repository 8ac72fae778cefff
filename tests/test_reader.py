"""The shipped span reader: loads offline, finds spans, abstains, and fails loudly when damaged."""

from __future__ import annotations

import shutil

import pytest

from rag.answering.reader import MANIFEST, READER_DIR, WEIGHTS, Reader, ReaderError, check_weights

PASSAGE = (
    "The Harbour Bridge was opened in 1932 by the mayor, Alice Brown. It carries eight lanes "
    "of traffic and cost 4.2 million pounds to build."
)


@pytest.fixture(scope="module")
def reader() -> Reader:
    r = Reader()
    r.warm_up()
    return r


def test_manifest_matches_shipped_weights():
    manifest = check_weights(READER_DIR)
    assert manifest["file"] == WEIGHTS
    assert manifest["bytes"] == (READER_DIR / WEIGHTS).stat().st_size
    assert manifest["bytes"] <= 50 * 1024 * 1024  # ships in the repo


@pytest.mark.slow
def test_finds_short_spans_verbatim(reader):
    for question, expected in [
        ("Who opened the Harbour Bridge?", "Alice Brown"),
        ("When was the Harbour Bridge opened?", "1932"),
        ("How many lanes does the bridge carry?", "eight"),
    ]:
        reading = reader.read(question, ["Cats sleep for most of the day.", PASSAGE])
        best = reading.best
        assert best is not None and best.passage == 1
        assert expected in best.text and len(best.text.split()) <= 5
        assert PASSAGE[best.start : best.end] == best.text


@pytest.mark.slow
def test_no_answer_margin_separates_absent_answers(reader):
    present = reader.read("Who opened the Harbour Bridge?", [PASSAGE]).no_answer
    absent = reader.read("Who designed the Harbour Bridge's lighting?", [PASSAGE]).no_answer
    unrelated = reader.read("What is the boiling point of mercury?", [PASSAGE]).no_answer
    assert present < absent and present < unrelated


@pytest.mark.slow
def test_long_passages_are_read_in_windows(reader):
    filler = " ".join(f"Sentence number {i} says nothing of note." for i in range(80))
    text = filler + " " + PASSAGE + " " + filler
    best = reader.read("Who opened the Harbour Bridge?", [text]).best
    assert best is not None and "Alice Brown" in best.text and text[best.start : best.end] == best.text


def test_empty_passages_have_no_answer():
    reading = Reader().read("Who?", ["", "  "])
    assert reading.spans == [] and reading.no_answer == float("inf")


def _copy(tmp_path):
    folder = tmp_path / "reader"
    shutil.copytree(READER_DIR, folder)
    return folder


def test_damaged_weights_name_the_file_and_the_fix(tmp_path):
    folder = _copy(tmp_path)
    with open(folder / WEIGHTS, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00garbage\x00")
    with pytest.raises(ReaderError, match=r"model\.safetensors.*damaged.*git checkout"):
        Reader(folder).warm_up()


def test_missing_weights_and_manifest_are_clear_errors(tmp_path):
    folder = _copy(tmp_path)
    (folder / WEIGHTS).unlink()
    with pytest.raises(ReaderError, match=r"weights .*model\.safetensors are missing"):
        Reader(folder).warm_up()
    (folder / MANIFEST).unlink()
    with pytest.raises(ReaderError, match="manifest .* is missing"):
        Reader(folder).warm_up()


def test_bad_settings_fail_early():
    with pytest.raises(ValueError, match="stride"):
        Reader(max_len=64, stride=40)


@pytest.mark.slow
def test_a_question_longer_than_a_window_is_cut_not_an_error(reader):
    long_question = "Who opened the Harbour Bridge? " + "Please answer carefully and cite the passage. " * 60
    best = reader.read(long_question, [PASSAGE]).best
    assert best is not None and PASSAGE[best.start : best.end] == best.text


@pytest.mark.slow
def test_concurrent_reads_give_the_answers_of_one_at_a_time(reader):
    """One reader serves every thread. Its fast tokenizer keeps padding and truncation as state of
    the shared object, so a question clip in one thread could leave another thread's batch
    unpadded ("Unable to create tensor", seen with 20 API clients). Reads from many threads at
    once, long and short questions mixed, give exactly the sequential answers."""
    from concurrent.futures import ThreadPoolExecutor

    passages = [
        "Cohere had a retention rate of 64 percent, and Mosaic had 63 percent.",
        "Meta paid $14.3 billion for 49 percent of Scale AI in June 2025. " * 12,
        "Alexandr Wang founded Scale AI.",
    ]
    questions = ["What retention rate did Cohere have?", "How much did Meta pay for Scale AI? " * 12, "Who founded Scale AI?"] * 8
    alone = {q: reader.read(q, passages) for q in set(questions)}
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(lambda q: (q, reader.read(q, passages)), questions * 3))
    for q, got in together:
        assert [s.text for s in got.spans] == [s.text for s in alone[q].spans], q
        assert got.no_answer == pytest.approx(alone[q].no_answer, abs=1e-3), q
