"""Fine-tune the shipped reader into a cross-encoder reranker: (question, passage) -> relevance.

    python -m rag.training.train_reranker --data ../shared/data --out runs/reranker

No cross-encoder ships on PyPI, so, as with the reader, we train our own. It starts from the
reader's weights (a MiniLM-L6 that already reads a question against a passage) with a fresh
one-number head on [CLS], and learns to put a question's own passage above hard negatives:
passages cut from SQuAD 1.1 train paragraphs the size of rag's chunks (~90 words), grouped per
question as 1 positive (the passage holding the answer) and 3 negatives that lack the answer
text: the same article's passage BM25 ranks highest (the same subject, the same names), the best
BM25 passage of another article, and another passage of the same article. Listwise loss (softmax
cross-entropy over the group), as in monoBERT/"Localized Contrastive Estimation".

Articles: the reader's training articles (rag/training/train_reader.py's split); its validation
articles score the reranker. `--amazon N` adds N groups from SQuADShifts' Amazon reviews (one
product an article, so the hardest negatives are other reviews of the same product), from products
that neither the answer policy nor the distractor evaluation set uses; every 10th such product
is held out to score the reranker on reviews. Scores are MRR and hit@1 among 1 + 7 negatives.
`--base` may be a trained reranker, to continue training it; the record then keeps the base's
record and the base's scores on the same validation groups. Seeded, resumable (a checkpoint
every --save-every steps; rerun with the same --out), writes a JSON record. CPU is the documented
path (~3 windows/s on 2 cores); a GPU is used when present.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import time
from pathlib import Path

import numpy as np

from rag.training.data import load_squad, split_titles
from rag.training.train_reader import SQUAD11, SQUAD2

READER = Path(__file__).resolve().parents[1] / "models" / "reader"
ROOT = Path(__file__).resolve().parents[2]
AMAZON = Path("qa") / "squadshifts" / "squadshifts-amazon.json.gz"
DISTRACTOR_CORPUS = ROOT / "tests" / "golden" / "distractor" / "corpus"


def held_out_products(data: Path) -> set[str]:
    """Amazon products (SQuADShifts titles) that the answer policy trains or calibrates on, or
    that the distractor evaluation set holds: never reranker training data."""
    from rag.training.train_policy import build_sets

    _, questions = build_sets(data, seed=13, per_article=36, absent_share=0.3)
    held = {q["article"] for q in questions if q["source"] == "amazon"}
    # benchmarks/make_distractor_set.py writes product_reviews_<number>_<review>.txt
    held |= {f"Amazon_Reviews_{m.group(1)}" for f in DISTRACTOR_CORPUS.glob("product_reviews_*.txt") if (m := re.match(r"product_reviews_(\d+)_", f.name))}
    return held


def relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def pieces(context: str, words: int) -> list[tuple[int, int]]:
    """(start, end) character spans of `context` cut at sentence ends into pieces of about
    `words` words (a sentence longer than that is a piece of its own), like rag's chunks.

    >>> ctx = "One two three. Four five six. Seven."
    >>> [ctx[a:b] for a, b in pieces(ctx, 4)]
    ['One two three.', 'Four five six. Seven.']
    """
    bounds = [m.end() for m in re.finditer(r"[.!?](?=\s+[A-Z0-9\"'(])", context)] + [len(context)]
    out, start, prev, count = [], 0, 0, 0
    for end in bounds:
        n = len(context[prev:end].split())
        if count and count + n > words:
            out.append((start, prev))
            start, count = prev, 0
        count += n
        prev = end
    out.append((start, len(context)))
    return [(a + len(context[a:b]) - len(context[a:b].lstrip()), b) for a, b in out if context[a:b].strip()]


class Passages:
    """Every piece of a set of articles, with BM25 over them (rag's own analyser)."""

    def __init__(self, articles: list[dict], words: int) -> None:
        from rag.index.bm25 import Lexicon, TermStats

        self.text: list[str] = []
        self.article: list[int] = []
        self.where: dict[tuple[int, int], list[tuple[int, int, int]]] = {}  # (article, paragraph) -> (piece id, start, end)
        for a, art in enumerate(articles):
            for p, para in enumerate(art["paragraphs"]):
                title = art["title"].replace("_", " ")
                for s, e in pieces(para["context"], words):
                    self.where.setdefault((a, p), []).append((len(self.text), s, e))
                    self.text.append(f"{title}. {para['context'][s:e]}")
                    self.article.append(a)
        ids = np.arange(len(self.text), dtype=np.int64)
        stats = TermStats.of(self.text, [])
        self.lexicon = Lexicon([(stats, ids, np.ones(len(ids), dtype=bool), np.zeros(0, dtype=bool))])
        self.article_arr = np.asarray(self.article)

    def bm25(self, question: str, k: int) -> list[int]:
        from rag.text import index_terms

        ids, _ = self.lexicon.top(index_terms(question), k)
        return ids.tolist()


def groups(articles: list[dict], words: int, per_paragraph: int, limit: int, n_neg: int, seed: int) -> tuple[list[dict], Passages]:
    """Training or validation groups: {question, positive, negatives: [passage text...], kinds}."""
    rng = random.Random(seed)
    passages = Passages(articles, words)
    todo = []
    for a, art in enumerate(articles):
        for p, para in enumerate(art["paragraphs"]):
            qas = [qa for qa in para["qas"] if qa.get("answers")]
            for qa in rng.sample(qas, min(per_paragraph, len(qas))):
                todo.append((a, p, qa))
    rng.shuffle(todo)
    out = []
    for a, p, qa in todo:
        if len(out) >= limit:
            break
        answer, start = qa["answers"][0]["text"], qa["answers"][0]["answer_start"]
        own = [pid for pid, s, e in passages.where[(a, p)] if s <= start and start + len(answer) <= e]
        if not own:
            continue  # the answer straddles two pieces
        low = answer.lower()

        def usable(pid: int) -> bool:
            return pid != own[0] and low not in passages.text[pid].lower()

        ranked = [pid for pid in passages.bm25(qa["question"], 60) if usable(pid)]
        same = [pid for pid in ranked if passages.article[pid] == a]
        other = [pid for pid in ranked if passages.article[pid] != a]
        rest = [pid for pid in np.flatnonzero(passages.article_arr == a).tolist() if usable(pid)]
        negs, kinds = [], []
        for pool, kind in ((same, "same_article_bm25"), (other, "other_article_bm25"), (rest, "same_article_random"), (same[1:], "same_article_bm25"), (other[1:], "other_article_bm25")):
            cand = [pid for pid in (pool if kind != "same_article_random" else rng.sample(pool, len(pool))) if pid not in negs]
            if cand and len(negs) < n_neg:
                negs.append(cand[0])
                kinds.append(kind)
        for _ in range(1000):  # an article of one passage: any other passage
            if len(negs) >= n_neg:
                break
            pid = rng.randrange(len(passages.text))
            if usable(pid) and pid not in negs:
                negs.append(pid)
                kinds.append("random")
        if len(negs) < n_neg:
            continue  # an answer so common ("a") that nearly every passage holds it: no negatives
        out.append({"id": qa["id"], "question": qa["question"].strip(), "positive": passages.text[own[0]],
                    "negatives": [passages.text[pid] for pid in negs], "kinds": kinds})
    return out, passages


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--base", type=Path, default=READER, help="weights to start from (default: the shipped reader)")
    p.add_argument("--out", type=Path, default=Path("runs/reranker"))
    p.add_argument("--max-len", type=int, default=192)
    p.add_argument("--words", type=int, default=90, help="words per passage piece (rag's 128-token chunks hold ~90)")
    p.add_argument("--questions", type=int, default=1600, help="training groups")
    p.add_argument("--amazon", type=int, default=0, help="training groups from Amazon reviews (products held out of every evaluation)")
    p.add_argument("--amazon-val", type=int, default=200, help="validation groups from held-out Amazon products (with --amazon)")
    p.add_argument("--negatives", type=int, default=3)
    p.add_argument("--per-paragraph", type=int, default=1, help="questions taken per paragraph (spreads the groups)")
    p.add_argument("--batch", type=int, default=8, help="groups per step")
    p.add_argument("--lr", type=float, default=4e-5)
    p.add_argument("--warmup", type=float, default=0.1)
    p.add_argument("--val-every", type=int, default=18, help="as the reader: every n-th article (sorted) is held out")
    p.add_argument("--val-questions", type=int, default=300)
    p.add_argument("--val-negatives", type=int, default=7)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--save-every", type=int, default=20)
    args = p.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()

    squad11 = load_squad(args.data / SQUAD11)
    held = {a["title"] for a in load_squad(args.data / SQUAD2)}
    train_titles, val_titles = split_titles([a["title"] for a in squad11], args.val_every, held)
    by_title = {a["title"]: a for a in squad11}
    t0 = time.time()
    train, _ = groups([by_title[t] for t in train_titles], args.words, args.per_paragraph, args.questions, args.negatives, args.seed)
    val, _ = groups([by_title[t] for t in val_titles], args.words, 1, args.val_questions, args.val_negatives, args.seed + 1)
    vals = {"val": val}
    amazon_info = {}
    if args.amazon:
        held_products = held_out_products(args.data)
        products = sorted((a for a in load_squad(args.data / AMAZON) if a["title"] not in held_products), key=lambda a: a["title"])
        for a in products:
            a["title"] = "Product reviews " + a["title"].rsplit("_", 1)[-1]  # as the documents' first line names them
        tr_products = [a for i, a in enumerate(products) if i % 10 != 5]
        val_products = [a for i, a in enumerate(products) if i % 10 == 5]
        more, _ = groups(tr_products, args.words, 2, args.amazon, args.negatives, args.seed + 2)
        vals["val_amazon"], _ = groups(val_products, args.words, 2, args.amazon_val, args.val_negatives, args.seed + 3)
        train += more
        amazon_info = {"amazon_train_products": len(tr_products), "amazon_train_groups": len(more), "amazon_val_products": len(val_products),
                       "amazon_val_groups": len(vals["val_amazon"]), "amazon_excluded_products": len(held_products)}
    print(f"[data] {len(train)} training groups, {sum(map(len, vals.values()))} validation groups ({time.time() - t0:.0f} s)", flush=True)

    tokenizer = AutoTokenizer.from_pretrained(args.base)
    model = AutoModelForSequenceClassification.from_pretrained(args.base, num_labels=1, dtype=torch.float32).to(device)

    def encode(pairs: list[tuple[str, str]]):
        enc = tokenizer([q for q, _ in pairs], [t for _, t in pairs], truncation="only_second", max_length=args.max_len, padding=True, return_tensors="pt")
        return {k: v.to(device) for k, v in enc.items()}

    def score(model, rows: list[dict], batch: int = 64) -> list[list[float]]:
        model.eval()
        flat = [(r["question"], t) for r in rows for t in [r["positive"], *r["negatives"]]]
        out: list[float] = []
        with torch.inference_mode():
            for i in range(0, len(flat), batch):
                out += model(**encode(flat[i : i + batch])).logits[:, 0].float().cpu().tolist()
        size = 1 + len(rows[0]["negatives"]) if rows else 1
        return [out[i : i + size] for i in range(0, len(out), size)]

    def ranks(scores: list[list[float]]) -> dict:
        r = [1 + sum(s > row[0] for s in row[1:]) for row in scores]
        return {"n": len(r), "mrr": round(float(np.mean([1 / x for x in r])), 4), "hit@1": round(float(np.mean([x == 1 for x in r])), 4),
                "hit@3": round(float(np.mean([x <= 3 for x in r])), 4)}

    base_record = args.base / "record.json"
    before = {}
    if base_record.exists() and json.loads(base_record.read_text()).get("format", "").startswith("rag-reranker-record"):
        before = {name: ranks(score(model, rows)) for name, rows in vals.items()}  # the base on the same groups
        print(f"[base] {before}", flush=True)
        model.train()

    steps = math.ceil(len(train) / args.batch)
    warm = max(1, int(args.warmup * steps))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm))))
    step, losses, train_s = 0, [], 0.0
    ckpt = args.out / "checkpoint.pt"
    if ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step, losses, train_s = state["step"], state["losses"], state["train_s"]
        print(f"[train] resumed from {ckpt} at step {step}/{steps}", flush=True)
    order = np.random.default_rng(args.seed).permutation(len(train))
    model.train()
    with tqdm(total=steps, initial=step, desc="train", unit="step", mininterval=10) as bar:
        while step < steps:
            t = time.time()
            rows = [train[i] for i in order[step * args.batch : (step + 1) * args.batch]]
            size = 1 + args.negatives
            logits = model(**encode([(r["question"], x) for r in rows for x in [r["positive"], *r["negatives"]]])).logits.view(len(rows), size)
            loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(rows), dtype=torch.long, device=device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            losses.append(loss.item())
            train_s += time.time() - t
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
            if step % args.save_every == 0 and step < steps:
                tmp = ckpt.with_suffix(".tmp")
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "step": step, "losses": losses, "train_s": train_s}, tmp)
                os.replace(tmp, ckpt)

    t0 = time.time()
    val_scores = ranks(score(model, val))
    after = {name: ranks(score(model, rows)) for name, rows in vals.items() if name != "val"}
    by_kind = {}
    for kind in sorted({k for r in val for k in r["kinds"]}):
        # how often the positive beats each kind of negative
        s = score(model, [{**r, "negatives": [n for n, k in zip(r["negatives"], r["kinds"]) if k == kind][:1]} for r in val if kind in r["kinds"]])
        by_kind[kind] = round(float(np.mean([row[0] > row[1] for row in s])), 4)
    record = {
        "format": "rag-reranker-record v1",
        "base": relative(args.base),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "data": {"train_articles": len(train_titles), "train_groups": len(train), "val_articles": len(val_titles), "val_groups": len(val),
                 **amazon_info, "negative_kinds": sorted({k for r in train for k in r["kinds"]})},
        "steps": step, "train_seconds": round(train_s, 1), "eval_seconds": round(time.time() - t0, 1),
        "total_seconds": round(time.time() - started, 1), "final_loss": round(float(np.mean(losses[-20:])), 4) if losses else None,
        "scores": {"val": val_scores, **after, "val_positive_beats": by_kind},
    }
    if before:
        record["base_scores"] = before  # the base model on the same validation groups, before this training
        record["base_record"] = json.loads(base_record.read_text())
    save = args.out / "model"
    model.half().save_pretrained(save, safe_serialization=True)
    tokenizer.save_pretrained(save)
    (save / "record.json").write_text(json.dumps(record, indent=1))
    (args.out / "record.json").write_text(json.dumps(record, indent=1))
    ckpt.unlink(missing_ok=True)
    print(json.dumps({"out": str(save), "scores": record["scores"]}, indent=1), flush=True)
    return record


if __name__ == "__main__":
    main()
