"""Build the SQuAD open-book sets from articles the reader never trained on.

    python -m benchmarks.make_squad_sets --data ../shared/data

The 10 articles of the SQuAD 2.0 train file were held out of reader training whole
(rag/training/train_reader.py). From them:
- tests/golden/squad/: the open-book evaluation set. Corpus: 9 articles (every one but Zelda),
  one file each, title on the first line, paragraphs as in SQuAD. Questions: 100 answerable
  (about 11 per article) and 50 unanswerable, all 50 REAL SQuAD 2.0 unanswerable questions of
  Spectre_(2015_film) (none made). Never used to tune anything.
- tests/golden/squad_absent/ (`--absent`): the same answerable questions over a corpus from which
  the paragraphs holding their answers were removed (the rest of each article stays), so every one
  is unanswerable; a question whose answer still appears elsewhere in its article is dropped.
  Never used to tune anything.
- benchmarks/calibration/zelda/: the calibration set for the reader's no-answer threshold,
  used together with the news golden set: the Zelda article, 60 answerable and 60 real
  unanswerable questions.
SQuAD 2.0 is CC BY-SA 4.0 (Rajpurkar, Jia and Liang, 2018); so are these derived files.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import unicodedata
from pathlib import Path

from rag.training.data import examples_of, load_squad
from rag.training.train_reader import CALIBRATION_TITLE, SQUAD2

ROOT = Path(__file__).resolve().parents[1]
LICENCE = """Derived from SQuAD 2.0 train (the first 10 articles, official ids), CC BY-SA 4.0:
Pranav Rajpurkar, Robin Jia, Percy Liang. 2018. Know What You Don't Know: Unanswerable Questions
for SQuAD. ACL 2018. These files are shared under the same licence.
Made by benchmarks/make_squad_sets.py; the articles were held out of the reader's training.
"""


def doc_id(title: str) -> str:
    """A file-name-safe id for a SQuAD title.

    >>> doc_id("Spectre_(2015_film)"), doc_id("Frédéric_Chopin")
    ('spectre_2015_film', 'frederic_chopin')
    """
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "_", ascii_title.lower()).strip("_")


def write_corpus(article: dict, folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    did = doc_id(article["title"])
    title = article["title"].replace("_", " ")
    body = "\n\n".join(p["context"].strip() for p in article["paragraphs"])
    (folder / f"{did}.txt").write_text(f"{title}\n\n{body}\n", encoding="utf-8")
    return did


def item(ex, did: str, kind: str) -> dict:
    if ex.answerable:
        answers = sorted(set(ex.answers))
        return {"id": ex.qid, "type": "squad", "question": ex.question, "answers": [answers], "doc_ids": [did], "evidence": answers[:1]}
    return {"id": ex.qid, "type": "unanswerable", "subtype": kind, "question": ex.question, "answers": [], "doc_ids": [did], "evidence": []}


def absent_set(articles: list[dict]) -> None:
    """tests/golden/squad_absent/: the open-book set's answerable questions, their paragraphs removed."""
    source = ROOT / "tests" / "golden" / "squad" / "squad.jsonl"
    asked = {r["id"]: r for r in map(json.loads, source.read_text(encoding="utf-8").splitlines()) if r["answers"]}
    out = ROOT / "tests" / "golden" / "squad_absent"
    rows = []
    for art in articles:
        mine = {qa["id"]: i for i, para in enumerate(art["paragraphs"]) for qa in para["qas"] if qa["id"] in asked}
        if not mine:
            continue
        kept = [p for i, p in enumerate(art["paragraphs"]) if i not in set(mine.values())]
        did = write_corpus({**art, "paragraphs": kept}, out / "corpus")
        text = " ".join(p["context"] for p in kept).lower()
        for qid in mine:
            r = asked[qid]
            if any(a.lower() in text for a in r["answers"][0]):
                continue  # still answered elsewhere in the article: not absent
            rows.append({"id": qid, "type": "unanswerable", "subtype": "absent", "question": r["question"], "answers": [], "doc_ids": [did], "evidence": []})
    (out / "absent.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (out / "LICENSE.md").write_text(LICENCE, encoding="utf-8")
    print(f"{out}: {len(rows)} questions whose answer passages are not in the corpus")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--absent", action="store_true", help="only (re)build tests/golden/squad_absent/ from tests/golden/squad/")
    args = p.parse_args()
    rng = random.Random(args.seed)
    articles = load_squad(args.data / SQUAD2)
    if args.absent:
        absent_set(articles)
        return

    out = ROOT / "tests" / "golden" / "squad"
    rows, unanswerable = [], []
    for art in articles:
        if art["title"] == CALIBRATION_TITLE:
            continue
        did = write_corpus(art, out / "corpus")
        exs = examples_of([art])
        answerable = [e for e in exs if e.answerable]
        rows += [item(e, did, "") for e in rng.sample(answerable, 11 if art["title"] != "Spectre_(2015_film)" else 12)]
        unanswerable += [item(e, did, "real-squad2") for e in exs if not e.answerable]
    rows += rng.sample(unanswerable, 50)
    rng.shuffle(rows)
    (out / "squad.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (out / "LICENSE.md").write_text(LICENCE, encoding="utf-8")
    print(f"{out}: {len(rows)} questions, {sum(not r['answers'] for r in rows)} unanswerable (all real)")

    cal = ROOT / "benchmarks" / "calibration" / "zelda"
    art = next(a for a in articles if a["title"] == CALIBRATION_TITLE)
    did = write_corpus(art, cal / "corpus")
    exs = examples_of([art])
    rows = [item(e, did, "") for e in rng.sample([e for e in exs if e.answerable], 60)]
    rows += [item(e, did, "real-squad2") for e in rng.sample([e for e in exs if not e.answerable], 60)]
    rng.shuffle(rows)
    (cal / "zelda.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (cal / "LICENSE.md").write_text(LICENCE, encoding="utf-8")
    print(f"{cal}: {len(rows)} questions")


if __name__ == "__main__":
    main()
