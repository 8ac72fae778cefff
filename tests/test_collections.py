"""Collections: subfolders of corpus/, recorded per document, and searches filtered inside the
search (fast tier: the hash embedder; the leak checks against real models are in test_team.py)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_settings
from fakes import HashEmbedder, ScriptedGenerator
from rag.index.corpus import check_collection, load_corpus
from rag.pipeline import Pipeline
from rag.serve.cli import main as cli

FILES = {
    "public.txt": "Acme public news\nAcme Corp opened a store in Lyon in 2023. The store sells bicycles.\n",
    "hr/pay.txt": "Acme pay review\nAcme Corp pays engineers 91,000 euros a year. The zorbling bonus is 7 percent.\n",
    "sales/q3.txt": "Acme sales report\nAcme Corp sold 4,200 bicycles in the third quarter. Revenue rose 12 percent.\n",
}


def corpus_at(root, files=FILES):
    for name, text in files.items():
        path = root / "corpus" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "corpus"


@pytest.fixture
def team(tmp_path):
    corpus_at(tmp_path)
    settings = make_settings(tmp_path, use_reader=False, reranker="none")
    return Pipeline(settings, embedder=HashEmbedder(), generator=ScriptedGenerator("The articles do not say."))


def test_subfolders_are_collections_and_their_ids_say_so(tmp_path):
    corpus = corpus_at(tmp_path, {**FILES, "hr/deeper/x.txt": "Not read.\n", "bad name!/y.txt": "Not read either.\n", ".hidden/z.txt": "No.\n"})
    docs = {d.doc_id: d.collection for d in load_corpus(corpus).documents}
    assert docs == {"public": "default", "hr/pay": "hr", "sales/q3": "sales"}


def test_the_same_text_in_two_collections_is_two_documents(tmp_path):
    text = FILES["hr/pay.txt"]
    corpus = corpus_at(tmp_path, {"hr/pay.txt": text, "sales/pay.txt": text, "sales/copy.txt": text})
    loaded = load_corpus(corpus)
    assert sorted(d.doc_id for d in loaded.documents) == ["hr/pay", "sales/copy"] or sorted(d.doc_id for d in loaded.documents) == ["hr/pay", "sales/pay"]
    assert [p.action for p in loaded.problems] == ["deduplicated"]


@pytest.mark.parametrize("name", ["", "a/b", "..", "x" * 65, "é", "a b"])
def test_collection_names_are_checked(name):
    with pytest.raises(ValueError, match="not a collection name"):
        check_collection(name)


def test_answers_keep_to_the_collections_asked(team):
    index = team.index
    assert index.collection_counts() == {"default": (1, 1), "hr": (1, 1), "sales": (1, 1)}
    for allowed in ({"hr"}, {"sales"}, {"default", "sales"}, set()):
        for question in ("How much does Acme Corp pay engineers?", "How many bicycles did Acme sell?", "What is the zorbling bonus?"):
            answer = team.answer(question, collections=allowed)
            cited = {c.doc_id for c in answer.citations + answer.closest}
            assert {index.documents[d].collection for d in cited} <= allowed, (allowed, question, cited)
    assert set(team.documents({"hr"})) == {"hr/pay"}
    assert team.answer("What is the zorbling bonus?", collections=set()).refused


def test_term_statistics_count_only_the_scope(team):
    """A word only the hr collection holds is unknown to a reader of sales: its IDF (and so the
    refusal of a question about it) does not reveal that another collection has it."""
    retriever = team.retriever
    everyone = retriever.term_weights("zorbling bonus")
    sales = retriever.within({"sales"}).term_weights("zorbling bonus")
    assert "zorbl" in " ".join(everyone) and retriever.within({"sales"}).unknown_terms(sales) >= {t for t in sales if t.startswith("zorbl")}
    assert not retriever.unknown_terms(everyone) & {t for t in everyone if t.startswith("zorbl")}
    assert retriever.within({"sales"}).index.lexicon.n_chunks == 1 and retriever.index.lexicon.n_chunks == 3


def test_a_small_collection_is_found_when_others_fill_the_unfiltered_top(tmp_path):
    """Filtered inside the search: 60 default documents match the question better than the one
    document of 'tiny', and each ranker looks only 5 deep; a reader of 'tiny' still gets it."""
    files = {f"d{n}.txt": f"Report {n}\nThe walrus census counted walrus colonies on the ice shelf, year {n}.\n" for n in range(60)}
    files["tiny/one.txt"] = "Tiny note\nA walrus was seen once near the old pier.\n"
    corpus_at(tmp_path, files)
    settings = make_settings(tmp_path, use_reader=False, reranker="none", rank_depth=5)
    pipeline = Pipeline(settings, embedder=HashEmbedder(), generator=ScriptedGenerator("x"))
    unfiltered = pipeline.retriever.search("walrus census colonies", 5)
    assert all(h.chunk.doc_id != "tiny/one" for h in unfiltered)
    hits = pipeline.retriever.within({"tiny"}).search("walrus census colonies", 5)
    assert [h.chunk.doc_id for h in hits] == ["tiny/one"]
    scores, ids = pipeline.index.within({"tiny"}).chunk_store.search(pipeline.embedder.encode_query("walrus")[None, :], 3)
    assert ids[0].tolist()[1:] == [-1, -1] and np.isfinite(scores[0, 0])


@pytest.mark.slow  # the CLI builds its pipeline from Settings: the real embedder
def test_cli_add_list_collections_and_remove(tmp_path, monkeypatch, capsys):
    corpus_at(tmp_path)
    settings = make_settings(tmp_path, reranker="none")
    monkeypatch.setenv("RAG_CORPUS_DIR", str(settings.corpus_dir))
    monkeypatch.setenv("RAG_INDEX_DIR", str(settings.index_dir))
    outside = tmp_path / "legal.txt"
    outside.write_text("Legal memo\nThe Acme contract with Lyon ends in 2027.\n", encoding="utf-8")
    assert cli(["add", "--collection", "legal", str(outside)]) == 0
    assert cli(["add", "--collection", "legal", str(settings.corpus_dir / "hr" / "pay.txt")]) == 1  # hr's folder says hr
    assert "'hr' collection" in capsys.readouterr().err
    assert cli(["collections", "--json"]) == 0
    import json

    counts = json.loads(capsys.readouterr().out)
    assert {k: v["documents"] for k, v in counts.items()} == {"default": 1, "hr": 1, "legal": 1, "sales": 1}
    assert cli(["list", "--collection", "legal", "--json"]) == 0
    assert [d["doc_id"] for d in json.loads(capsys.readouterr().out)] == ["legal/legal"]
    assert cli(["remove", "hr/pay"]) == 0
    capsys.readouterr()
    assert cli(["collections", "--json"]) == 0
    assert "hr" not in json.loads(capsys.readouterr().out)
    # a restart does not bring the removed file of corpus/hr back
    pipeline = Pipeline(settings, generator=ScriptedGenerator("x"))
    assert "hr/pay" not in pipeline.index.documents and "legal/legal" in pipeline.index.documents
