"""Build the distractor set: one corpus of 1,000+ passages on overlapping subjects, from text no
model or threshold of rag was trained or tuned on.

    python -m benchmarks.make_distractor_set --data ../shared/data

Source: SQuADShifts new Wikipedia articles (Miller et al. 2020, CC BY 4.0), minus the 16 that the
answer policy's training used (rag/training/train_policy.py picks them with its own seed; this
script asks it which). The reader and the reranker trained on SQuAD 1.1 only.

- tests/golden/distractor/corpus/: every paragraph of the remaining articles is a file of its own
  (title line, then the paragraph), so a question's own passage competes with the other 20-70
  paragraphs of its article (the same subject, the same names) and with the articles on
  neighbouring subjects (nine about the United States: its senate, parties, insurance, states,
  unemployment...). Retrieval is scored per passage: hit@k means the question's own paragraph.
- distractor.jsonl: answerable questions whose answer text is in no other paragraph of the corpus
  (so "the right passage" is one file), about 5 per article; and "absent" questions: the same
  kind of question with its own paragraph left out of the corpus (kept out of every file), whose
  answer appears nowhere else, so the documents do not say.
- Amazon product reviews from SQuADShifts, one review a file,
  the product's other reviews beside it: passages on the same product in the same words, and
  questions ("how is the battery?") that several of them half answer. Subtype "reviews". The
  products are drawn from all 413: only the Wikipedia articles are filtered by `policy_titles`, so
  7 of the 40 (1160, 1345, 1470, 1750, 330, 455, 690) are among the 50 products the answer policy
  trained or calibrated on (benchmarks/retrieval.md). The reranker's `--amazon` training data
  excludes all 83 products.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
from pathlib import Path

from benchmarks.make_squad_sets import doc_id
from rag.training.data import load_squad
from rag.training.train_policy import build_sets

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "golden" / "distractor"
LICENCE = """Derived from SQuADShifts, new Wikipedia articles (Miller, Krauth, Recht, Schmidt. 2020. The
Effect of Natural Distribution Shift on Question Answering Models. ICML 2020), CC BY 4.0; the
paragraphs are from English Wikipedia (CC BY-SA). Made by benchmarks/make_distractor_set.py.
"""


def policy_titles(data: Path) -> set[str]:
    """The new_wiki articles the shipped answer policy trained or calibrated on (its defaults)."""
    _, questions = build_sets(data, seed=13, per_article=36, absent_share=0.3)
    return {q["article"] for q in questions if q["source"] == "new_wiki"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--seed", type=int, default=20)
    p.add_argument("--per-article", type=int, default=5, help="answerable questions per article")
    p.add_argument("--products", type=int, default=40, help="Amazon products whose reviews join the corpus")
    p.add_argument("--per-product", type=int, default=2, help="answerable questions per product")
    p.add_argument("--absent-every", type=int, default=3, help="every n-th article gives one paragraph's questions as absent")
    args = p.parse_args()
    rng = random.Random(args.seed)
    used = policy_titles(args.data)
    shifts = args.data / "qa" / "squadshifts"
    articles = sorted((a for a in load_squad(shifts / "squadshifts-new_wiki.json.gz") if a["title"] not in used), key=lambda a: a["title"])
    products = sorted((a for a in load_squad(shifts / "squadshifts-amazon.json.gz") if a["title"] not in used), key=lambda a: a["title"])
    products = [{**a, "title": "Product reviews " + a["title"].rsplit("_", 1)[-1], "reviews": True} for a in rng.sample(products, args.products)]
    if OUT.exists():
        shutil.rmtree(OUT)
    (OUT / "corpus").mkdir(parents=True)

    passages: list[tuple[str, str, int, dict]] = []  # (file id, title, paragraph number, paragraph)
    absent: dict[str, int] = {}  # title -> the paragraph left out
    for n, art in enumerate(articles + products):
        paras = art["paragraphs"]
        if n % args.absent_every == 0:
            absent[art["title"]] = rng.randrange(len(paras))
        for i, para in enumerate(paras):
            passages.append((f"{doc_id(art['title'])}_{i + 1:02d}", art["title"], i, para))

    def text_of(fid: str, title: str, para: dict) -> str:
        return f"{title.replace('_', ' ')}\n\n{para['context'].strip()}\n"

    kept = [(fid, t, i, para) for fid, t, i, para in passages if absent.get(t) != i]
    for fid, title, _, para in kept:
        (OUT / "corpus" / f"{fid}.txt").write_text(text_of(fid, title, para), encoding="utf-8")
    lowered = {fid: para["context"].lower() for fid, _, _, para in kept}

    def only_in(answers: list[str], fid: str | None) -> bool:
        """No kept passage but `fid` holds any of the answers (fid None: none holds one)."""
        return not any(a.lower() in text for other, text in lowered.items() if other != fid for a in answers)

    rows = []
    for art in articles + products:
        title = art["title"]
        mine = [(fid, i, para) for fid, t, i, para in passages if t == title]
        pool = []
        for fid, i, para in mine:
            for qa in para["qas"]:
                answers = sorted({a["text"] for a in qa["answers"]})
                if absent.get(title) == i:
                    if only_in(answers, None):
                        rows.append({"id": qa["id"] + "-absent", "type": "unanswerable", "subtype": "absent", "question": qa["question"].strip(),
                                     "answers": [], "doc_ids": [fid], "evidence": []})
                elif len(answers[0]) >= 2 and only_in(answers, fid):
                    pool.append({"id": qa["id"], "type": "distractor", "subtype": "reviews" if art.get("reviews") else "wiki", "question": qa["question"].strip(), "answers": [answers],
                                 "doc_ids": [fid], "evidence": answers[:1]})
        rows += rng.sample(pool, min(args.per_product if art.get("reviews") else args.per_article, len(pool)))
    rng.shuffle(rows)
    (OUT / "distractor.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (OUT / "LICENSE.md").write_text(LICENCE, encoding="utf-8")
    print(f"{OUT}: {len(kept)} passages from {len(articles)} articles and {len(products)} products; {sum(bool(r['answers']) for r in rows)} answerable, "
          f"{sum(not r['answers'] for r in rows)} absent questions")


if __name__ == "__main__":
    main()
