"""Train the answer policy: the calibrated P(answer right) that decides answer or refuse.

    python -m rag.training.train_policy --data ../shared/data --work runs/policy [--out rag/models/policy]

1. Sets, from documents the reader never saw (rag/models/reader/record.json names them): the
   reader's 24 validation articles of SQuAD 1.1 train and the SQuAD 2.0 article it calibrated on
   (Zelda), plus other kinds of text from SQuADShifts (`SHIFTS`: new Wikipedia articles, Amazon
   reviews, Reddit posts), each source an open-book corpus of its own. A share of every document's
   paragraphs is left out of the corpus, so their questions become "absent" negatives with the
   rest of the document still there (the on-topic case); Zelda brings 160 real unanswerable
   questions; a year or number swapped into a question ("same event, another year") makes
   "constraint" negatives; answerable questions are also asked with a source clause, a lead-in
   or in lower case (rag.training.data.reworded: phrases disjoint from the ones `rag eval
   --paraphrase` asks), as positives of the same facts. The SQuAD dev sets, and the articles of
   tests/golden/squad/, are never used; nor is the news set.
2. Collection: every question goes through the real pipeline (LLM off, no gate, answer
   everything), which records the policy's features; the outcome is scored as `rag eval` does.
   Rows are appended to WORK/rows.jsonl, so a killed run resumes where it stopped (and a rerun
   with every row there only fits).
3. Fit, whole documents apart (`three_way`): logistic regression on standardised features over
   two thirds of the documents; Platt scaling on half of the rest; every reported number (the
   record's "test") on the other half, overall and per source, beside the first policy's
   features and a tree ensemble. The calibrator and its record are written to OUT.

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
from rag.eval.golden import answer_correct, selective_scores
from rag.training.data import ArticleTerms, Example, load_squad, reworded, rule_negative

READER_RECORD = Path(__file__).resolve().parents[1] / "models" / "reader" / "record.json"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "models" / "policy"

def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")


SHIFTS = {"new_wiki": 16, "amazon": 50, "reddit": 120}
"""SQuADShifts sources the reader never saw, and how many of their documents become a corpus:
new Wikipedia articles, Amazon product reviews (one product a document) and Reddit posts (one post
a document). Other material than SQuAD's Wikipedia, so the confidence is calibrated across kinds
of text rather than on one (the news set is none of them)."""


def _documents(source: str, articles: list[dict], rng: random.Random, limit: int) -> list[dict]:
    """Up to `limit` documents of a SQuADShifts source, each {title, paragraphs} (reddit's one
    "article" of 2,035 posts becomes one document per post)."""
    if source == "reddit":
        posts = [{"title": f"Reddit post {i + 1}", "paragraphs": [p]} for i, p in enumerate(articles[0]["paragraphs"])]
        rng.shuffle(posts)
        return sorted(posts[:limit], key=lambda d: d["title"])
    docs = sorted(articles, key=lambda a: a["title"])
    rng.shuffle(docs)
    return sorted(docs[:limit], key=lambda d: d["title"])


def build_sets(data: Path, seed: int, per_article: int, absent_share: float, shifts: dict[str, int] | None = None) -> tuple[dict[str, dict[str, str]], list[dict]]:
    """(corpora: source -> {file name -> text}, questions: dicts with id, question, answers, kind,
    article, split, source)."""
    record = json.loads(READER_RECORD.read_text(encoding="utf-8"))["data"]
    val_titles = set(record["val_titles"])
    zelda = record["calibration_real"]["title"]
    rng = random.Random(seed)
    squad1 = [a for a in load_squad(data / "qa" / "squad1.1-train" / "squad1.1-train.json.gz") if a["title"] in val_titles]
    squad2 = [a for a in load_squad(data / "squad2" / "train-v2.0.first10articles.json.gz") if a["title"] == zelda]
    corpora: dict[str, dict[str, str]] = {}
    questions: list[dict] = []

    def ask(qid: str, question: str, answers: list[str], kind: str, title: str, split: str, source: str) -> None:
        questions.append({"id": qid, "question": question, "answers": answers, "kind": kind, "article": title, "split": split, "source": source})

    def add_documents(source: str, docs: list[dict], per_doc: int) -> None:
        """Each document goes into `source`'s corpus with a share of its paragraphs left out; its
        questions become answerable, absent, reworded and constraint rows. A third of the
        documents (whole) are held out for calibration."""
        corpus = corpora.setdefault(source, {})
        titles = sorted(d["title"] for d in docs)
        held = set(titles[2::3])
        for art in sorted(docs, key=lambda a: a["title"]):
            title, split = art["title"], "calibrate" if art["title"] in held else "train"
            paragraphs = art["paragraphs"]
            order = list(range(len(paragraphs)))
            rng.shuffle(order)
            # a one-paragraph document (a post) is left out whole, a third of the time
            n_gone = round(absent_share * len(paragraphs)) if len(paragraphs) > 1 else int(rng.random() < 0.33)
            gone = set(order[:n_gone])
            kept_text = "\n\n".join(p["context"] for i, p in enumerate(paragraphs) if i not in gone)
            if kept_text:
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
            n_re = per_doc // 2
            for qa, _ in present[:per_doc]:
                ask(qa["id"], qa["question"].strip(), [a["text"] for a in qa["answers"]], "answerable", title, split, source)
            for qa, _ in absent[: max(1, per_doc // 3)]:
                ask(qa["id"] + "-absent", qa["question"].strip(), [], "absent", title, split, source)
            for qa, _ in present[per_doc : per_doc + n_re]:
                q, how = reworded(qa["question"].strip(), rng, title.replace("_", " "))
                ask(qa["id"] + f"-{how}", q, [a["text"] for a in qa["answers"]], f"reworded:{how}", title, split, source)
            made = 0
            for qa, p in present[per_doc + n_re :]:
                if made >= max(1, per_doc // 6):
                    break
                ex = Example(qa["id"], title, qa["question"].strip(), p["context"], [], [], "answer")
                neg = rule_negative(ex, terms, rng)
                if neg and neg[1] == "number":  # a year or number from elsewhere: the question's constraint is not met
                    ask(qa["id"] + "-number", neg[0], [], "constraint", title, split, source)
                    made += 1

    add_documents("squad", squad1, per_article)
    for art in squad2:  # the real unanswerable questions: half the paragraphs train, half calibrate
        title = art["title"]
        corpora["squad"][f"{slug(title)}.txt"] = f"{title.replace('_', ' ')}\n\n" + "\n\n".join(p["context"] for p in art["paragraphs"]) + "\n"
        for i, p in enumerate(art["paragraphs"]):
            split = "calibrate" if i % 2 else "train"
            for qa in p["qas"]:
                impossible = qa.get("is_impossible") or not qa["answers"]
                ask(qa["id"], qa["question"].strip(), [] if impossible else [a["text"] for a in qa["answers"]],
                    "real_unanswerable" if impossible else "answerable", title, split, "squad")
    for source, limit in (SHIFTS if shifts is None else shifts).items():
        path = data / "qa" / "squadshifts" / f"squadshifts-{source}.json.gz"
        if not path.exists() or not limit:
            continue
        docs = _documents(source, load_squad(path), rng, limit)
        per_doc = per_article if source == "new_wiki" else 12
        add_documents(source, docs, per_doc)
    return corpora, questions


def graded(row: dict) -> bool:
    """Whether a row's answer is right, as `rag eval` grades it (refusals and unanswerables never are)."""
    return bool(row["answers"]) and row["route"] != "refused" and answer_correct(row["text"], [row["answers"]])


def collect(corpora: dict[str, dict[str, str]], questions: list[dict], work: Path) -> list[dict]:
    """Each question through the real pipeline over its own source's corpus; one JSON row per
    question in work/rows.jsonl (appended as it goes: a killed run resumes where it stopped)."""
    from tqdm import tqdm

    from rag.config import Settings
    from rag.pipeline import Pipeline

    rows_path = work / "rows.jsonl"
    done = {}
    if rows_path.exists():
        for line in rows_path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                done[row["id"]] = row
            except ValueError:
                continue  # a line torn by a kill
    neutral = Calibrator(features=list(FEATURES), mean=[0.0] * len(FEATURES), scale=[1.0] * len(FEATURES), coef=[0.0] * len(FEATURES), intercept=0.0)
    shared: dict = {}
    with rows_path.open("a", encoding="utf-8") as out:
        for source, corpus in corpora.items():
            todo = [q for q in questions if q["source"] == source and q["id"] not in done]
            if not todo:
                continue
            folder = work / source / "corpus"
            folder.mkdir(parents=True, exist_ok=True)
            for name, text in corpus.items():
                path = folder / name
                if not path.exists() or path.read_text(encoding="utf-8") != text:
                    path.write_text(text, encoding="utf-8")
            settings = Settings(corpus_dir=folder, index_dir=work / source / "index", use_llm=False, use_gate=False, answer_threshold=0.0)
            pipeline = Pipeline(settings, calibrator=neutral, **shared)
            pipeline.warm_up()
            shared = {"embedder": pipeline.embedder, "reader": pipeline.reader}
            for q in tqdm(todo, desc=f"policy rows ({source})", unit="q"):
                a = pipeline.answer(q["question"])
                row = {**q, "features": a.signals.features if a.signals else {}, "text": a.text, "route": a.route, "span": a.span}
                row["right"] = graded(row)
                out.write(json.dumps(row) + "\n")
                out.flush()
                done[q["id"]] = row
    return [done[q["id"]] for q in questions if q["id"] in done]


V1 = FEATURES[: FEATURES.index("question_words") + 1]
"""The first policy's features (before the evidence next to the span and the corpus-unknown terms)."""


def three_way(rows: list[dict]) -> dict[str, list[dict]]:
    """train / calibrate / test rows, whole documents apart: the "calibrate" documents of
    build_sets are split in two by sorted title (alternately), per source, so Platt scaling and
    the operating point are fitted on one half and every reported number comes from the other."""
    out: dict[str, list[dict]] = {"train": [], "calibrate": [], "test": []}
    held: dict[str, list[str]] = {}
    for r in rows:
        if r["split"] == "calibrate":
            held.setdefault(r.get("source", "squad"), []).append(r["article"])
    test = {(src, t) for src, titles in held.items() for t in sorted(set(titles))[1::2]}
    for r in rows:
        if not r["features"]:
            continue
        if r["split"] == "train":
            out["train"].append(r)
        else:
            out["test" if (r.get("source", "squad"), r["article"]) in test else "calibrate"].append(r)
    return out


def _summary(p: list[float], y: list[int]) -> dict:
    from sklearn.metrics import roc_auc_score

    return {
        "n": len(y), "right": round(sum(y) / len(y), 4),
        "auc": round(float(roc_auc_score(y, p)), 4) if 0 < sum(y) < len(y) else None,
        **selective_scores(list(zip(p, map(bool, y))), risks=(0.05, 0.10)),
    }


def _operating_points(p: list[float], y: list[int]) -> list[dict]:
    table = []
    for t in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
        answered = [yi for pi, yi in zip(p, y) if pi >= t]
        table.append({
            "threshold": t, "coverage": round(len(answered) / len(p), 4),
            "risk": round(sum(1 - yi for yi in answered) / len(answered), 4) if answered else 0.0,
            "stated_wrong": round(sum(1 - yi for yi in answered) / len(p), 4),
            "right": round(sum(answered) / len(p), 4),
        })
    return table


WRONG_COST = 1.5
"""What a stated wrong answer costs, in refusals of a right one: more than one, since it stands
beside a real citation and is believed, while a refusal still shows the related passages with the
reader's best guess highlighted. For a calibrated probability the cheapest threshold is then
WRONG_COST / (1 + WRONG_COST) = 0.6 (Settings.answer_threshold); the record checks it on held-out rows."""


def expected_cost(p: list[float], y: list[int], cost: float = WRONG_COST) -> list[dict]:
    """Per threshold: (wrong answers x cost + right answers refused) / rows."""
    out = []
    for t in [x / 100 for x in range(30, 86, 5)]:
        total = sum((cost * (1 - yi)) if pi >= t else yi for pi, yi in zip(p, y))
        out.append({"threshold": t, "cost": round(total / len(p), 4)})
    return out


def fit_calibrator(train: list[dict], calibrate: list[dict], names: list[str], seed: int, c: float = 1.0) -> Calibrator:
    """Logistic regression on standardised `names` over `train`; Platt scaling on `calibrate`."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    def matrix(part: list[dict]):
        return np.array([[r["features"].get(n, 0.0) for n in names] for r in part]), np.array([int(r["right"]) for r in part])

    x, y = matrix(train)
    xc, yc = matrix(calibrate)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=c, max_iter=5000, random_state=seed).fit((x - mean) / scale, y)
    raw = model.decision_function((xc - mean) / scale)
    platt = LogisticRegression(C=1e6, max_iter=1000).fit(raw.reshape(-1, 1), yc)
    return Calibrator(
        features=list(names), mean=mean.round(6).tolist(), scale=scale.round(6).tolist(), coef=model.coef_[0].round(6).tolist(),
        intercept=round(float(model.intercept_[0]), 6), platt=(round(float(platt.coef_[0][0]), 6), round(float(platt.intercept_[0]), 6)),
    )


def fit(rows: list[dict], seed: int) -> tuple[Calibrator, dict]:
    """The shipped calibrator (all features) and the record: test-split scores overall and per
    source, operating points, and the comparisons (the first policy's features; trees)."""
    import numpy as np

    parts = three_way(rows)
    train, calibrate, test = parts["train"], parts["calibrate"], parts["test"]
    names = list(FEATURES)
    calibrator = fit_calibrator(train, calibrate, names, seed)

    def probs(cal: Calibrator, part: list[dict]) -> list[float]:
        return [cal.probability(r["features"]) for r in part]

    y_test = [int(r["right"]) for r in test]
    p_test = probs(calibrator, test)
    compare = {"v1_features_lr": _summary(probs(fit_calibrator(train, calibrate, list(V1), seed), test), y_test)}
    for name in ("margin", "span_score"):
        compare[f"{name}_alone_lr"] = _summary(probs(fit_calibrator(train, calibrate, [name], seed), test), y_test)
    try:  # a tree ensemble on the same features, for the record: does a non-linear model gain much?
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.linear_model import LogisticRegression

        def matrix(part: list[dict]):
            return np.array([[r["features"].get(n, 0.0) for n in names] for r in part])

        trees = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, max_leaf_nodes=15, l2_regularization=1.0, random_state=seed)
        trees.fit(matrix(train), [int(r["right"]) for r in train])
        raw_c = trees.decision_function(matrix(calibrate)).reshape(-1, 1)
        platt = LogisticRegression(C=1e6, max_iter=1000).fit(raw_c, [int(r["right"]) for r in calibrate])
        compare["trees"] = _summary(platt.predict_proba(trees.decision_function(matrix(test)).reshape(-1, 1))[:, 1].tolist(), y_test)
    except Exception as err:  # noqa: BLE001 - only a comparison
        compare["trees"] = {"error": str(err)}
    by_source = {}
    for source in sorted({r.get("source", "squad") for r in test}):
        idx = [i for i, r in enumerate(test) if r.get("source", "squad") == source]
        by_source[source] = _summary([p_test[i] for i in idx], [y_test[i] for i in idx])
    by_kind = {}
    for kind in sorted({r["kind"].split(":")[0] for r in test}):
        idx = [i for i, r in enumerate(test) if r["kind"].split(":")[0] == kind]
        by_kind[kind] = {"n": len(idx), "mean_p": round(float(np.mean([p_test[i] for i in idx])), 4), "right": round(float(np.mean([y_test[i] for i in idx])), 4),
                         "answered_at_0.5": round(float(np.mean([p_test[i] >= 0.5 for i in idx])), 4)}
    metrics = {
        "rows": {k: len(v) for k, v in parts.items()},
        "test": _summary(p_test, y_test), "test_by_source": by_source, "test_by_kind": by_kind,
        "operating_points_test": _operating_points(p_test, y_test),
        "operating_points_calibrate": _operating_points(probs(calibrator, calibrate), [int(r["right"]) for r in calibrate]),
        "expected_cost_calibrate": expected_cost(probs(calibrator, calibrate), [int(r["right"]) for r in calibrate]),
        "expected_cost_test": expected_cost(p_test, y_test),
        "wrong_cost": WRONG_COST,
        "compare_on_test": compare,
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
    corpora, questions = build_sets(args.data, args.seed, args.per_article, args.absent_share)
    (args.work / "questions.json").write_text(json.dumps(questions, indent=0), encoding="utf-8")
    rows = collect(corpora, questions, args.work)
    for r in rows:  # graded again as rag eval grades today (rows may come from an earlier run)
        r["right"] = graded(r)
    calibrator, metrics = fit(rows, args.seed)
    kinds: dict[str, dict[str, int]] = {}
    for r in rows:
        k = kinds.setdefault(f"{r.get('source', 'squad')}:{r['split']}:{r['kind']}", {"n": 0, "right": 0})
        k["n"] += 1
        k["right"] += int(r["right"])
    import sklearn

    calibrator.record = {
        "format": "rag-policy-record v2", "seed": args.seed, "per_article": args.per_article, "absent_share": args.absent_share,
        "documents": {src: sorted({r["article"] for r in rows if r.get("source", "squad") == src}) for src in sorted({r.get("source", "squad") for r in rows})},
        "rows": kinds, "metrics": metrics, "sklearn": sklearn.__version__, "seconds": round(time.time() - started, 1),
    }
    print(json.dumps(metrics, indent=1))
    if not args.no_save:
        path = calibrator.save(args.out)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
