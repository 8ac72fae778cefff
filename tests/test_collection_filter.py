"""Filtered inside the search, measured: a collection of 20 documents inside an index of 2,000
retrieves for its own questions exactly what an index of only those 20 documents retrieves.

The 2,000 come from the distractor set (tests/golden/distractor): its passages are written to be
confused with each other (other years of an event, neighbouring products), so the 1,980 outside
the collection are the hardest neighbours there are. The 20 are passages with questions; the
1,980 are the other passages, halved at a sentence where needed to make up the number.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest

from conftest import REPO, make_settings
from rag.pipeline import Pipeline

DISTRACTOR = REPO / "tests" / "golden" / "distractor"
SMALL, TOTAL = 20, 2000

pytestmark = pytest.mark.slow


def build_corpus(corpus):
    rows = [json.loads(line) for line in (DISTRACTOR / "distractor.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    asked = [r for r in rows if r["type"] == "distractor" and len(r["doc_ids"]) == 1]
    small = list(dict.fromkeys(r["doc_ids"][0] for r in asked))[:SMALL]
    questions = [(r["question"], r["doc_ids"][0]) for r in asked if r["doc_ids"][0] in small]
    (corpus / "small").mkdir(parents=True)
    for doc_id in small:
        (corpus / "small" / f"{doc_id}.txt").write_text((DISTRACTOR / "corpus" / f"{doc_id}.txt").read_text(encoding="utf-8"), encoding="utf-8")
    others = [p for p in sorted((DISTRACTOR / "corpus").glob("*.txt")) if p.stem not in small]
    pieces: list[tuple[str, str]] = [(p.stem, p.read_text(encoding="utf-8")) for p in others]
    splits = TOTAL - SMALL - len(pieces)  # halve that many of the longest passages once, at the sentence nearest the middle
    longest = set(sorted(range(len(pieces)), key=lambda i: -len(pieces[i][1]))[:splits])
    halved = []
    for i, (name, text) in enumerate(pieces):
        cuts = [m.end() for m in re.finditer(r"[.!?]\s+", text) if 0.2 * len(text) < m.end() < 0.8 * len(text)]
        if i in longest:
            cut = min(cuts, key=lambda c: abs(c - len(text) / 2)) if cuts else text.rfind(" ", 0, len(text) // 2) + 1
            halved += [(f"{name}-a", text[:cut]), (f"{name}-b", text[cut:])]
        else:
            halved.append((name, text))
    pieces = halved
    assert len(pieces) == TOTAL - SMALL
    for name, text in pieces[: TOTAL - SMALL]:
        (corpus / f"{name}.txt").write_text(text, encoding="utf-8")
    return questions


def test_a_small_collection_inside_2000_documents_retrieves_as_if_alone(tmp_path, embedder):
    big_root, small_root = tmp_path / "big", tmp_path / "small"
    questions = build_corpus(big_root / "corpus")
    (small_root / "corpus").mkdir(parents=True)
    shutil.copytree(big_root / "corpus" / "small", small_root / "corpus" / "small")
    big = Pipeline(make_settings(big_root), embedder=embedder)
    assert len(big.index.documents) == TOTAL
    # The index of the 20 alone: a copy of the big one with the other 1,980 documents removed, so
    # its vectors are the same numbers (the int8 embedder's vectors move a little with the batch
    # a text was embedded in; a fresh build is reported below, not compared exactly).
    shutil.copytree(big_root / "index", small_root / "index", symlinks=True)
    alone = Pipeline(make_settings(small_root), embedder=embedder)
    alone.remove_documents([d for d in alone.index.documents if not d.startswith("small/")])
    fresh_root = tmp_path / "fresh"
    shutil.copytree(small_root / "corpus", fresh_root / "corpus")
    fresh = Pipeline(make_settings(fresh_root), embedder=embedder)
    assert len(alone.index.documents) == len(fresh.index.documents) == SMALL
    assert alone.index.manifest.n_chunks == alone.index.lexicon.n_chunks == big.index.within({"small"}).lexicon.n_chunks
    inside, by_itself = big.retriever.within({"small"}), alone.retriever
    hits_inside = hits_alone = hits_after = 0
    hits_fresh = 0
    for question, doc in questions:
        a = [h.chunk.doc_id for h in inside.search(question, 5)]
        b = [h.chunk.doc_id for h in by_itself.search(question, 5)]
        after = [h.chunk.doc_id for h in big.retriever.search(question, 5) if h.chunk.doc_id.startswith("small/")]
        assert a == b, question  # the same passages in the same order
        hits_fresh += f"small/{doc}" in [h.chunk.doc_id for h in fresh.retriever.search(question, 5)]
        hits_inside += f"small/{doc}" in a
        hits_alone += f"small/{doc}" in b
        hits_after += f"small/{doc}" in after
    assert len(questions) >= 20
    assert hits_inside == hits_alone
    # filtering the unfiltered top 5 afterwards loses passages that filtering inside keeps
    assert hits_after <= hits_inside
    print(f"hit@5 over {len(questions)} questions: inside {hits_inside / len(questions):.3f}, alone {hits_alone / len(questions):.3f}, "
          f"filtered after the search {hits_after / len(questions):.3f}; a fresh build of the 20 {hits_fresh / len(questions):.3f}")
