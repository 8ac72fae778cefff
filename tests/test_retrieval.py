"""Retrieval among near-duplicates (issue 20): the BM25 analyser, year constraints, copies collapsed,
the trained reranker, and questions with nothing to search for."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from conftest import make_settings
from fakes import HashEmbedder
from rag.index.bm25 import Lexicon, TermStats
from rag.index.corpus import load_corpus
from rag.index.manifest import ensure_index
from rag.index.retrieval import Retriever
from rag.text import index_terms

SPELLINGS = {
    "meta": "Meta released Llama-3 in April with a longer context window.",
    "router": "The new Wi-Fi router covers three floors of the house.",
    "virus": "COVID-19 cases rose again in the northern provinces.",
    "mail": "The e-mail server was down for two hours on Monday.",
    "other1": "Meta released an earlier model in February with a shorter context.",
    "other2": "The router in the shop covers one floor only.",
    "other3": "Flu cases rose in the southern provinces.",
    "other4": "The post office was closed for two hours on Monday.",
}


def _lexicon(texts: dict[str, str]) -> tuple[Lexicon, list[str]]:
    names = list(texts)
    stats = TermStats.of([texts[n] for n in names], [texts[n] for n in names])
    ids = np.arange(len(names), dtype=np.int64)
    return Lexicon([(stats, ids, np.ones(len(names), dtype=bool), np.ones(len(names), dtype=bool))]), names


@pytest.mark.parametrize(
    "question, expected",
    [("When did Meta release Llama3?", "meta"), ("llama 3 release", "meta"), ("LLAMA-3", "meta"), ("wifi router floors", "router"),
     ("WiFi coverage", "router"), ("Where did COVID19 cases rise?", "virus"), ("covid 19", "virus"), ("email server down", "mail")],
)
def test_spellings_that_differ_by_hyphen_space_or_case_meet_in_bm25(question, expected):
    lexicon, names = _lexicon(SPELLINGS)
    ids, scores = lexicon.top(index_terms(question), 3)
    assert names[int(ids[0])] == expected
    assert scores[0] > (scores[1] if len(scores) > 1 else 0.0)


def test_numbers_and_years_are_terms_of_the_analyser():
    assert {"2022", "14.3", "50"} <= set(index_terms("In 2022 it cost $14.3 billion, the 50th time."))


def _retriever(tmp_path, texts: dict[str, str], **overrides) -> Retriever:
    root = tmp_path / "r"
    (root / "corpus").mkdir(parents=True)
    for name, text in texts.items():
        (root / "corpus" / f"{name}.txt").write_text(text, encoding="utf-8")
    settings = make_settings(root, **overrides)
    embedder = HashEmbedder()
    index = ensure_index(load_corpus(settings.corpus_dir), embedder, settings)
    return Retriever(index, embedder, settings)


EDITIONS = {
    f"cup{year}": f"Harbor Cup {year}\nThe {year} Harbor Cup regatta was won by the {crew} crew after a storm delayed the start by a day."
    for year, crew in ((2019, "Gull"), (2020, "Tern"), (2021, "Heron"), (2022, "Puffin"), (2023, "Osprey"))
}


@pytest.mark.parametrize("year", [2019, 2021, 2022, 2023])
def test_a_question_on_one_edition_ranks_that_edition_first(tmp_path, year):
    """Five editions of one event in the same words: only the year tells them apart."""
    retriever = _retriever(tmp_path, EDITIONS)
    hits = retriever.search(f"Which crew won the {year} Harbor Cup regatta?", 3)
    assert hits[0].chunk.doc_id == f"cup{year}"


def test_year_constraints_off_leave_the_fused_order(tmp_path):
    on = _retriever(tmp_path / "on", EDITIONS)
    off = _retriever(tmp_path / "off", EDITIONS, year_constraints=False)
    question = "Which crew won the 2022 Harbor Cup regatta?"
    assert on.search(question, 1)[0].chunk.doc_id == "cup2022"
    assert {h.chunk.doc_id for h in off.search(question, 5)} == set(EDITIONS)
    assert off.search(question, 5)[0].score != on.search(question, 5)[0].score


def test_syndicated_copies_take_one_place_in_the_top_five(tmp_path):
    """Hundreds of identical passages do not crowd out the others; the one kept is a copy."""
    copy = "Wire report\nThe harbor ferry fare rises to four dollars in March, the council said on Tuesday."
    texts = {f"copy{n:03d}": copy for n in range(300)}
    texts |= {f"note{n}": f"Harbor note {n}\nThe harbor ferry timetable {n} adds a stop at Gull Island on day {n}." for n in range(6)}
    hits = _retriever(tmp_path, texts).search("When does the harbor ferry fare rise?", 5)
    assert len(hits) == 5
    copies = [h for h in hits if h.chunk.doc_id.startswith("copy")]
    assert len(copies) == 1
    assert len({h.chunk.text for h in hits}) == 5


def test_the_reranker_orders_the_head_and_scores_a_question_once(tmp_path):
    """The rerank callable orders the first candidates; `search` and `candidates` of the same
    question (as `rag eval` asks both) score its passages once."""
    plain = _retriever(tmp_path / "a", EDITIONS)
    calls: list[str] = []

    def prefer_2020(question: str, passages: list[str]) -> list[float]:
        calls.append(question)
        return [1.0 if "2020" in p else 0.0 for p in passages]

    reranked = Retriever(plain.index, plain.embedder, plain.settings, rerank=prefer_2020)
    question = "Which crew won the Harbor Cup regatta?"
    assert reranked.search(question, 3)[0].chunk.doc_id == "cup2020"
    assert reranked.candidates(question, 3)[0].chunk.doc_id == "cup2020"
    assert calls == [question]
    reranked.search("Who won the Harbor Cup?", 3)
    assert len(calls) == 2


@pytest.mark.parametrize("question", ["the of and is", "2022", "zqxvbnmw", "-- ?? --", "Llama3"])
def test_questions_with_little_to_search_for_return_a_list(tmp_path, question):
    hits = _retriever(tmp_path, EDITIONS).search(question, 5)
    assert isinstance(hits, list) and len(hits) <= 5


def test_an_index_counted_by_the_old_analyser_is_rebuilt(settings_in, caplog):
    embedder = HashEmbedder()
    ensure_index(load_corpus(settings_in.corpus_dir), embedder, settings_in)
    current = settings_in.index_dir / "current"
    manifest_path = current / "manifest.json" if (current / "manifest.json").is_file() else next(settings_in.index_dir.glob("build-*/manifest.json"))
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["analyser"] = 1
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="rag.index.manifest"):
        index = ensure_index(load_corpus(settings_in.corpus_dir), embedder, settings_in)
    assert "the BM25 analyser changed (v1 -> v2)" in caplog.text
    assert index.manifest.analyser == 2


# -- the trained reranker (slow: a real model) ------------------------------------------------


@pytest.fixture(scope="module")
def reranker():
    from rag.index.rerank import Reranker

    model = Reranker()
    model.warm_up()
    return model


def test_reranker_weights_match_their_manifest(reranker):
    from rag.index.rerank import RERANKER_DIR

    assert reranker.manifest["sha256"] and (RERANKER_DIR / "record.json").is_file()


@pytest.mark.slow
def test_damaged_reranker_weights_are_refused_by_name(tmp_path):
    from rag.index.rerank import RERANKER_DIR, Reranker, RerankerError

    folder = tmp_path / "reranker"
    shutil.copytree(RERANKER_DIR, folder)
    with open(folder / "model.safetensors", "r+b") as fh:
        fh.seek(1000)
        fh.write(b"\0" * 64)
    with pytest.raises(RerankerError, match="model.safetensors are damaged"):
        Reranker(folder=folder).warm_up()


def test_reranker_puts_the_passage_that_answers_above_its_articles_other_passages(reranker):
    """Held-out distractor questions: the own passage against four others of the same article
    (the same subject and names). Chance is 1 in 5."""
    from conftest import REPO

    folder = REPO / "tests" / "golden" / "distractor"
    rows = [json.loads(line) for line in (folder / "distractor.jsonl").read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if r.get("subtype") == "wiki"][:40]
    first = 0
    for r in rows:
        own = r["doc_ids"][0]
        stem = own.rsplit("_", 1)[0]
        others = sorted(p for p in folder.glob(f"corpus/{stem}_*.txt") if p.stem != own)[:4]
        passages = [(folder / "corpus" / f"{own}.txt").read_text(encoding="utf-8")] + [p.read_text(encoding="utf-8") for p in others]
        scores = reranker.scores(r["question"], passages)
        first += int(np.argmax(scores) == 0)
    assert first / len(rows) >= 0.6


def test_page_furniture_is_never_evidence(tmp_path):
    """A notice a site prints around every article is kept in the text (offsets hold) but never
    chosen as evidence, even for a question in its own words; syndicated copies stay evidence."""
    notice = "When you buy through links on this site we may earn a commission from the seller."
    texts = {
        f"story{n}": f"Town story {n}\nThe {name} bridge on route {n} reopened after repairs lasting {n + 2} weeks. {notice} "
        f"Crews repainted the {name} railings in {color}."
        for n, (name, color) in enumerate([("Elm", "green"), ("Oak", "blue"), ("Ash", "red"), ("Yew", "black"), ("Fir", "white")])
    }
    texts |= {f"copy{n}": "Wire copy\nThe ferry fare rises to four dollars in March, the council said on Tuesday." for n in range(4)}
    retriever = _retriever(tmp_path, texts)
    furniture = retriever.index.furniture
    notices = [s for s in retriever.index.sentences if s.text == notice]
    assert len(notices) == 5 and all(s.sentence_id in furniture for s in notices)
    assert all(retriever.index.documents[s.doc_id].text[s.start : s.end] == notice for s in notices)
    hits = retriever.search("Do they earn a commission when you buy through links?", 4)
    assert all(e.sentence.text != notice for e in retriever.evidence("Do they earn a commission when you buy through links?", hits, 3))
    ferry = retriever.search("When does the ferry fare rise?", 3)
    assert any("ferry fare" in e.sentence.text for e in retriever.evidence("When does the ferry fare rise?", ferry, 3))
