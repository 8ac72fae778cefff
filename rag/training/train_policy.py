"""Train the answer policy: the calibrated P(answer right) that decides answer or refuse.

    python -m rag.training.train_policy --data ../shared/data --work runs/policy [--out rag/models/policy]

1. Sets, from articles the reader never saw (rag/models/reader/record.json names them): the
   reader's 24 validation articles of SQuAD 1.1 train and the SQuAD 2.0 article it calibrated on
   (Zelda), each an open-book corpus of its own articles. A share of every SQuAD 1.1 article's
   paragraphs is left out of the corpus, so their questions become "absent" negatives with the
   rest of the article still there (the on-topic case); Zelda brings 160 real unanswerable
   questions; a year or number swapped into a question ("same event, another year") makes
   "constraint" negatives; some answerable questions are asked again with a source clause, a
   lead-in or in lower case (phrases disjoint from the ones `rag eval --paraphrase` asks), as
   positives of the same facts. The SQuAD dev sets, and the articles of tests/golden/squad/, are
   never used.
2. Collection: every question goes through the real pipeline (LLM off, no gate, answer
   everything), which records the policy's features; the outcome is scored as `rag eval` does.
   Rows are appended to WORK/rows.jsonl, so a killed run resumes where it stopped.
3. Fit: logistic regression on standardised features over two thirds of the articles; Platt
   scaling and the operating point on the other third (whole articles, so nothing an article
   taught is graded on it). The calibrator, its record and the held-out curve are written to OUT.

Seeded; needs scikit-learn (`pip install scikit-learn`), at training time only.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

from rag.answering.confidence import FEATURES, Calibrator
from rag.eval.golden import expected_calibration_error, risk_coverage
from rag.training.data import ArticleTerms, Example, load_squad, rule_negative

READER_RECORD = Path(__file__).resolve().parents[1] / "models" / "reader" / "record.json"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "models" / "policy"

# Training-time rewordings. `rag eval --paraphrase` asks others (rag/eval/golden.py VARIANTS), so
# the consistency it reports is on wordings the policy never saw.
CLAUSES = ("as described in the text", "based on the documents", "per the source", "in the material provided")
LEADS = ("I was wondering:", "Can you tell me:", "One thing I need to know:")


def reworded(question: str, rng: random.Random, title: str = "the subject") -> tuple[str, str]:
    """One training rewording of `question` and its kind; "title" names the source document.

    >>> reworded("Who won?", random.Random(0))[1] in {"clause", "lead", "lower", "title"}
    True
    """
    kind = rng.choice(["clause", "lead", "lower", "title"])
    q = question.strip()
    if kind == "title":
        return f"{q.rstrip('?').rstrip()}, according to the piece on {title}?", kind
    if kind == "clause":
        return f"{q.rstrip('?').rstrip()}, {rng.choice(CLAUSES)}?", kind
    if kind == "lead":
        return f"{rng.choice(LEADS)} {q[0].lower() + q[1:]}", kind
    return q.lower().rstrip("?").rstrip(), kind


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")


def build_sets(data: Path, seed: int, per_article: int, absent_share: float) -> tuple[dict[str, str], list[dict]]:
    """(corpus: file name -> text, questions: dicts with id, question, answers, kind, article, split)."""
    record = json.loads(READER_RECORD.read_text(encoding="utf-8"))["data"]
    val_titles = set(record["val_titles"])
    zelda = record["calibration_real"]["title"]
    rng = random.Random(seed)
    squad1 = [a for a in load_squad(data / "qa" / "squad1.1-train" / "squad1.1-train.json.gz") if a["title"] in val_titles]
    squad2 = [a for a in load_squad(data / "squad2" / "train-v2.0.first10articles.json.gz") if a["title"] == zelda]
    titles = sorted(a["title"] for a in squad1)
    held = set(titles[2::3])  # a third of the articles: Platt scaling and the operating point
    corpus: dict[str, str] = {}
    questions: list[dict] = []

    def ask(qid: str, question: str, answers: list[str], kind: str, title: str, split: str) -> None:
        questions.append({"id": qid, "question": question, "answers": answers, "kind": kind, "article": title, "split": split})

    for art in sorted(squad1, key=lambda a: a["title"]):
        title, split = art["title"], "calibrate" if art["title"] in held else "train"
        paragraphs = art["paragraphs"]
        order = list(range(len(paragraphs)))
        rng.shuffle(order)
        gone = set(order[: max(1, round(absent_share * len(paragraphs)))])
        kept_text = "\n\n".join(p["context"] for i, p in enumerate(paragraphs) if i not in gone)
        corpus[f"{slug(title)}.txt"] = f"{title.replace('_', ' ')}\n\n{kept_text}\n"
        terms = ArticleTerms(kept_text)
        present, absent = [], []
        for i, p in enumerate(paragraphs):
            for qa in p["qas"]:
                golds = [a["text"] for a in qa["answers"]]
                if not golds:
                    continue
                if i in gone:
                    # an answer that is also in the kept text may still be found there: not a clean negative
                    if not any(g.lower() in kept_text.lower() for g in golds):
                        absent.append((qa, p))
                else:
                    present.append((qa, p))
        rng.shuffle(present)
        rng.shuffle(absent)
        for qa, _ in present[:per_article]:
            ask(qa["id"], qa["question"].strip(), [a["text"] for a in qa["answers"]], "answerable", title, split)
        for qa, _ in absent[: per_article // 3]:
            ask(qa["id"] + "-absent", qa["question"].strip(), [], "absent", title, split)
        for qa, _ in present[per_article : per_article + per_article // 3]:
            q, how = reworded(qa["question"].strip(), rng, title.replace("_", " "))
            ask(qa["id"] + f"-{how}", q, [a["text"] for a in qa["answers"]], f"reworded:{how}", title, split)
        made = 0
        for qa, p in present[per_article + per_article // 3 :]:
            ex = Example(qa["id"], title, qa["question"].strip(), p["context"], [], [], "answer")
            neg = rule_negative(ex, terms, rng)
            if neg and neg[1] == "number":  # a year or number from elsewhere: the question's constraint is not met
                ask(qa["id"] + "-number", neg[0], [], "constraint", title, split)
                made += 1
            if made >= per_article // 6:
                break
    for art in squad2:  # the real unanswerable questions: half the paragraphs train, half calibrate
        title = art["title"]
        corpus[f"{slug(title)}.txt"] = f"{title.replace('_', ' ')}\n\n" + "\n\n".join(p["context"] for p in art["paragraphs"]) + "\n"
        for i, p in enumerate(art["paragraphs"]):
            split = "calibrate" if i % 2 else "train"
            for qa in p["qas"]:
                impossible = qa.get("is_impossible") or not qa["answers"]
                ask(qa["id"], qa["question"].strip(), [] if impossible else [a["text"] for a in qa["answers"]],
                    "real_unanswerable" if impossible else "answerable", title, split)
    return corpus, questions


def collect(corpus: dict[str, str], questions: list[dict], work: Path) -> list[dict]:
    """Each question through the real pipeline; one JSON row per question in work/rows.jsonl."""
    from tqdm import tqdm

    from rag.config import Settings
    from rag.eval.golden import answer_correct
    from rag.pipeline import Pipeline

    folder = work / "corpus"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in corpus.items():
        path = folder / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    rows_path = work / "rows.jsonl"
    done = {}
    if rows_path.exists():
        for line in rows_path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                done[row["id"]] = row
            except ValueError:
                continue  # a line torn by a kill
    settings = Settings(corpus_dir=folder, index_dir=work / "index", use_llm=False, use_gate=False, answer_threshold=0.0)
    neutral = Calibrator(features=list(FEATURES), mean=[0.0] * len(FEATURES), scale=[1.0] * len(FEATURES), coef=[0.0] * len(FEATURES), intercept=0.0)
    pipeline = Pipeline(settings, calibrator=neutral)
    pipeline.warm_up()
    todo = [q for q in questions if q["id"] not in done]
    with rows_path.open("a", encoding="utf-8") as out:
        for q in tqdm(todo, desc="policy rows", unit="q"):
            a = pipeline.answer(q["question"])
            right = bool(q["answers"]) and not a.refused and answer_correct(a.text, [q["answers"]])
            row = {**q, "features": a.signals.features if a.signals else {}, "right": right, "text": a.text, "route": a.route}
            out.write(json.dumps(row) + "\n")
            out.flush()
            done[q["id"]] = row
    return [done[q["id"]] for q in questions if q["id"] in done]


def fit(rows: list[dict], seed: int) -> tuple[Calibrator, dict]:
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    names = list(FEATURES)

    def matrix(part: list[dict]):
        return np.array([[r["features"].get(n, 0.0) for n in names] for r in part]), np.array([int(r["right"]) for r in part])

    train = [r for r in rows if r["split"] == "train" and r["features"]]
    held = [r for r in rows if r["split"] == "calibrate" and r["features"]]
    x, y = matrix(train)
    xh, yh = matrix(held)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=1.0, max_iter=2000, random_state=seed).fit((x - mean) / scale, y)
    raw = model.decision_function((xh - mean) / scale)
    platt = LogisticRegression(C=1e6, max_iter=1000).fit(raw.reshape(-1, 1), yh)
    calibrator = Calibrator(
        features=names, mean=mean.round(6).tolist(), scale=scale.round(6).tolist(), coef=model.coef_[0].round(6).tolist(),
        intercept=round(float(model.intercept_[0]), 6), platt=(round(float(platt.coef_[0][0]), 6), round(float(platt.intercept_[0]), 6)),
    )
    ph = [calibrator.probability(dict(zip(names, row))) for row in xh.tolist()]
    yl = yh.tolist()
    pairs = list(zip(ph, map(bool, yl)))
    curve = risk_coverage(pairs)  # (coverage, risk), most confident first: the curve rag eval reports
    table = []
    for t in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
        answered = [(pi, yi) for pi, yi in zip(ph, yl) if pi >= t]
        table.append({
            "threshold": t, "coverage": round(len(answered) / len(ph), 4),
            "risk": round(sum(1 - yi for _, yi in answered) / len(answered), 4) if answered else 0.0,
            "stated_wrong": round(sum(1 - yi for _, yi in answered) / len(ph), 4),
            "right": round(sum(yi for _, yi in answered) / len(ph), 4),
        })
    baseline = {}
    for name, sign in (("margin", -1), ("dense", 1), ("coverage", 1)):
        score = sign * xh[:, names.index(name)]
        baseline[name] = round(float(roc_auc_score(yh, score)), 4)
    try:  # a tree ensemble on the same features, for the record: does a non-linear model gain much?
        from sklearn.ensemble import HistGradientBoostingClassifier

        trees = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=seed).fit(x, y)
        tree_auc = round(float(roc_auc_score(yh, trees.predict_proba(xh)[:, 1])), 4)
    except Exception:  # noqa: BLE001 - only a comparison
        tree_auc = None
    metrics = {
        "train_rows": len(train), "held_out_rows": len(held), "held_out_right": round(float(yh.mean()), 4),
        "held_out_auc": round(float(roc_auc_score(yh, ph)), 4), "held_out_auc_trees": tree_auc,
        "held_out_auc_single_signal": baseline,
        "held_out_ece": expected_calibration_error(pairs), "held_out_aurc": round(sum(r for _, r in curve) / len(curve), 4),
        "coverage_at_5pct_risk": max((c for c, r in curve if r <= 0.05), default=0.0),
        "coverage_at_10pct_risk": max((c for c, r in curve if r <= 0.10), default=0.0),
        "operating_points": table,
        "coef": dict(zip(names, calibrator.coef)),
    }
    return calibrator, metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--work", type=Path, default=Path("runs/policy"))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--per-article", type=int, default=36, help="answerable questions asked per SQuAD 1.1 article")
    parser.add_argument("--absent-share", type=float, default=0.3, help="share of each article's paragraphs left out of the corpus")
    parser.add_argument("--no-save", action="store_true", help="fit and report only")
    args = parser.parse_args(argv)
    from rag.env import apply_env_defaults

    apply_env_defaults()
    started = time.time()
    args.work.mkdir(parents=True, exist_ok=True)
    corpus, questions = build_sets(args.data, args.seed, args.per_article, args.absent_share)
    (args.work / "questions.json").write_text(json.dumps(questions, indent=0), encoding="utf-8")
    rows = collect(corpus, questions, args.work)
    calibrator, metrics = fit(rows, args.seed)
    kinds: dict[str, dict[str, int]] = {}
    for r in rows:
        k = kinds.setdefault(f"{r['split']}:{r['kind']}", {"n": 0, "right": 0})
        k["n"] += 1
        k["right"] += int(r["right"])
    import sklearn

    calibrator.record = {
        "format": "rag-policy-record v1", "seed": args.seed, "per_article": args.per_article, "absent_share": args.absent_share,
        "articles": sorted({r["article"] for r in rows}), "held_out_articles": sorted({r["article"] for r in rows if r["split"] == "calibrate"}),
        "rows": kinds, "metrics": metrics, "sklearn": sklearn.__version__, "seconds": round(time.time() - started, 1),
    }
    print(json.dumps(metrics, indent=1))
    if not args.no_save:
        path = calibrator.save(args.out)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
