"""Golden set -> per-question scores and an overall report, offline, with no judge model.

A golden item (JSONL, keyed by id):
    {"id": "q001", "type": "number", "question": "...", "answers": [["64%", "64 percent"]],
     "doc_ids": ["003_..."], "evidence": ["..."]}
`answers` is a list of groups: every group must be matched, any alternative in a group matches.
Unanswerable items have `answers: []` and a `subtype` (on-topic, off-topic, injection).
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from ..answering.policy import AnswerPolicy
from ..config import Settings
from ..answering.citations import strip_markers
from ..text import matches
from .squad import best_scores

# -- golden data -------------------------------------------------------------------------


class GoldenItem(BaseModel):
    id: str
    type: str
    question: str
    answers: list[list[str]] = []
    doc_ids: list[str] = []
    evidence: list[str] = []
    subtype: str | None = None
    variant_of: str | None = None  # a reworded copy of this item's id (rag eval --paraphrase)

    @property
    def answerable(self) -> bool:
        return bool(self.answers)


VARIANTS = {
    "source": lambda q: f"{q.rstrip(' ?')}, according to the articles?",
    "report": lambda q: f"{q.rstrip(' ?')} in the report?",
    "lower": lambda q: q.lower().rstrip(" ?"),
    "lead": lambda q: f"Quick question: {q[:1].lower() + q[1:]}",
}
"""How `--paraphrase` rewords every answerable question: a source clause, lower case without "?",
a lead-in. The answer policy trains on other wordings (rag/training/train_policy.py)."""


def with_variants(items: list[GoldenItem]) -> list[GoldenItem]:
    """The items, then a reworded copy of each answerable one per VARIANTS entry.

    >>> [i.question for i in with_variants([GoldenItem(id="a", type="fact", question="Who won?", answers=[["X"]])])][1:3]
    ['Who won, according to the articles?', 'Who won in the report?']
    """
    extra = [
        item.model_copy(update={"id": f"{item.id}~{kind}", "question": make(item.question), "variant_of": item.id, "subtype": f"variant:{kind}"})
        for item in items
        if item.answerable
        for kind, make in VARIANTS.items()
    ]
    return items + extra


def load_golden(path: Path) -> list[GoldenItem]:
    """Read a JSONL golden set; a bad line is reported with its line number."""
    items = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(GoldenItem.model_validate_json(line))
        except ValueError as err:
            raise ValueError(f"{path}:{n}: not a golden item ({err})") from err
    ids = [i.id for i in items]
    if len(ids) != len(set(ids)):
        raise ValueError(f"{path}: duplicate ids")
    return items


# -- answer matching ---------------------------------------------------------------------

def answer_correct(answer: str, groups: list[list[str]]) -> bool:
    return bool(groups) and all(any(matches(answer, alt) for alt in group) for group in groups)


# -- scoring -----------------------------------------------------------------------------


class Row(BaseModel):
    """One golden item's outcome."""

    id: str
    type: str
    subtype: str | None = None
    question: str
    answer: str = ""
    route: str = ""
    refused: bool = False
    correct: bool = False
    retrieval_rank: int | None = None  # rank (1-based) of the first gold article, None if absent
    citation_hit: bool | None = None
    citation_precision: float | None = None
    grounded: bool | None = None
    cited: list[dict[str, Any]] = []
    signals: dict[str, Any] = {}
    seconds: float = 0.0
    error: str | None = None
    span: str = ""  # Answer.span, the short answer the reader found
    words: int = 0  # words a person reads (markers excluded)
    concise: bool | None = None  # answerable: right and at most CONCISE_WORDS words
    span_em: float = 0.0  # SQuAD v2 official exact match of the prediction (span, else the text; "" if refused)
    span_f1: float = 0.0
    confidence: float | None = None  # Answer.confidence
    p_right: float | None = None  # the policy's P(the answer it would state is right)
    would_be_right: bool | None = None  # that answer (stated, or held back by a refusal) is right
    variant_of: str | None = None


CONCISE_WORDS = 30
"""An answer a person can read at a glance: right and at most this many words (issue 12's bar)."""


class Report(BaseModel):
    """Overall scores plus every row; `score` keys are the metric names of the README table."""

    scores: dict[str, float] = {}
    by_type: dict[str, dict[str, float]] = {}
    threshold_curve: list[dict[str, Any]] = []
    settings: dict[str, Any] = {}
    rows: list[Row] = Field(default_factory=list)


def score_row(item: GoldenItem, answer: Any, ranked_docs: list[str], seconds: float, policy: AnswerPolicy | None = None) -> Row:
    """Score one answer (a rag.types.Answer) against its golden item.

    Groundedness is judged by `policy` (the pipeline's; default settings when None).
    """
    gold = set(item.doc_ids)
    rank = next((r for r, d in enumerate(ranked_docs, start=1) if d in gold), None)
    cited = answer.citations
    row = Row(
        id=item.id,
        type=item.type,
        subtype=item.subtype,
        question=item.question,
        answer=answer.text,
        route=answer.route,
        refused=answer.refused,
        retrieval_rank=rank if item.answerable else None,
        cited=[{"n": c.n, "doc_id": c.doc_id, "text": c.text} for c in cited],
        signals=answer.signals.model_dump() if answer.signals else {},
        seconds=round(seconds, 4),
    )
    row.span = answer.span
    row.variant_of = item.variant_of
    row.confidence = answer.confidence
    row.p_right = answer.signals.p_right if answer.signals else None
    row.words = len(strip_markers(answer.text).split())
    prediction = "" if answer.refused else (answer.span or strip_markers(answer.text))
    golds = [alt for group in item.answers for alt in group]
    row.span_em, row.span_f1 = best_scores(prediction, golds)
    if item.answerable:
        row.correct = not answer.refused and answer_correct(answer.text, item.answers)
        row.concise = row.correct and row.words <= CONCISE_WORDS
        if not answer.refused:
            row.citation_hit = any(c.doc_id in gold for c in cited)
            row.citation_precision = sum(c.doc_id in gold for c in cited) / len(cited) if cited else 0.0
            policy = policy or AnswerPolicy(Settings())
            row.grounded = policy.grounding(answer.text, [c.text for c in cited], item.question).ok if cited else False
    else:
        row.correct = answer.refused
    if not item.answerable:
        row.would_be_right = False
    elif not answer.refused:
        row.would_be_right = row.correct
    else:  # what the reader would have said: the span a refusal shows highlighted
        held = next(((c.text[c.highlight[0] : c.highlight[1]]) for c in answer.closest if c.highlight), "")
        row.would_be_right = bool(held) and answer_correct(held, item.answers)
    return row


def expected_calibration_error(pairs: list[tuple[float, bool]], bins: int = 10) -> float:
    """|mean confidence - share right| in equal-width bins, weighted by the bins' sizes.

    >>> expected_calibration_error([(0.9, True), (0.9, True), (0.1, False), (0.1, False)])
    0.1
    """
    total = 0.0
    for b in range(bins):
        inside = [(p, y) for p, y in pairs if b / bins <= p < (b + 1) / bins or (b == bins - 1 and p == 1.0)]
        if inside:
            total += len(inside) / len(pairs) * abs(sum(p for p, _ in inside) / len(inside) - sum(y for _, y in inside) / len(inside))
    return round(total, 4)


def risk_coverage(pairs: list[tuple[float, bool]]) -> list[tuple[float, float]]:
    """(coverage, risk) answering the most confident first: risk = share wrong among those answered.

    >>> risk_coverage([(0.9, True), (0.2, False)])
    [(0.5, 0.0), (1.0, 0.5)]
    """
    ordered = sorted(pairs, key=lambda pair: -pair[0])
    out, wrong = [], 0
    for k, (_, right) in enumerate(ordered, start=1):
        wrong += not right
        out.append((round(k / len(ordered), 4), round(wrong / k, 4)))
    return out


def trust_scores(rows: list[Row]) -> dict[str, float]:
    """Stated-wrong rate, and, where the policy gave a probability, its calibration and curve."""
    ok = [r for r in rows if r.error is None]
    out = {"stated_wrong_rate": round(sum(not r.refused and not r.correct for r in ok) / len(ok), 4) if ok else 0.0}
    pairs = [(r.p_right, bool(r.would_be_right)) for r in ok if r.p_right is not None]
    if not pairs:
        return out
    out.update(selective_scores(pairs))
    out["coverage"] = round(sum(not r.refused for r in ok) / len(ok), 4)
    return out


def selective_scores(pairs: list[tuple[float, bool]], risks: tuple[float, ...] = (0.05,)) -> dict[str, float]:
    """Calibration and risk-coverage of (confidence, right) pairs: ECE, the area under the curve
    (AURC), and the largest coverage whose risk is at most each of `risks`.

    >>> selective_scores([(0.9, True), (0.2, False)])
    {'ece': 0.15, 'aurc': 0.25, 'coverage_at_5pct_risk': 0.5}
    """
    curve = risk_coverage(pairs)
    out = {"ece": expected_calibration_error(pairs), "aurc": round(sum(risk for _, risk in curve) / len(curve), 4)}
    for limit in risks:
        out[f"coverage_at_{round(limit * 100)}pct_risk"] = max((c for c, risk in curve if risk <= limit), default=0.0)
    return out


def paraphrase_scores(rows: list[Row]) -> dict[str, float]:
    """Of the reworded questions whose original is answered right, the share answered right too."""
    by_id = {r.id: r for r in rows}
    pairs = [(by_id[r.variant_of], r) for r in rows if r.variant_of and r.variant_of in by_id]
    if not pairs:
        return {}
    held = [v for original, v in pairs if original.correct]
    out = {"paraphrase_consistency": round(sum(v.correct for v in held) / len(held), 4) if held else 0.0, "variants": float(len(pairs))}
    for kind in VARIANTS:
        mine = [v for original, v in pairs if original.correct and v.subtype == f"variant:{kind}"]
        if mine:
            out[f"consistency_{kind}"] = round(sum(v.correct for v in mine) / len(mine), 4)
    return out


def summarize(rows: list[Row]) -> dict[str, float]:
    answerable = [r for r in rows if r.type != "unanswerable"]
    unanswerable = [r for r in rows if r.type == "unanswerable"]
    answered = [r for r in answerable if not r.refused and r.error is None]
    ranked = [r for r in answerable]
    ok = [r for r in rows if r.error is None]
    times = sorted(r.seconds for r in ok) or [0.0]

    def mean(values: list[float]) -> float:
        return round(sum(values) / len(values), 4) if values else 0.0

    by_subtype = {
        f"refused_{sub}": mean([r.refused for r in unanswerable if r.subtype == sub])
        for sub in sorted({r.subtype for r in unanswerable if r.subtype})
    }
    return {
        "items": len(rows),
        "answer_accuracy": mean([r.correct for r in answerable]),
        "concise_accuracy": mean([bool(r.concise) for r in answerable]),
        "median_words": float(statistics.median([r.words for r in answered])) if answered else 0.0,
        "squad_em": mean([r.span_em for r in rows]),
        "squad_f1": mean([r.span_f1 for r in rows]),
        "hasans_f1": mean([r.span_f1 for r in answerable]),
        "noans_accuracy": mean([r.span_em for r in unanswerable]),
        "hit@1": mean([r.retrieval_rank == 1 for r in ranked]),
        "hit@5": mean([r.retrieval_rank is not None and r.retrieval_rank <= 5 for r in ranked]),
        "mrr": mean([1 / r.retrieval_rank if r.retrieval_rank else 0.0 for r in ranked]),
        "citation_hit": mean([bool(r.citation_hit) for r in answered]),
        "citation_precision": mean([r.citation_precision or 0.0 for r in answered]),
        "groundedness": mean([bool(r.grounded) for r in answered]),
        "refusal_accuracy": mean([r.refused for r in unanswerable]),
        "false_refusal_rate": mean([r.refused for r in answerable]),
        **by_subtype,
        "overall_accuracy": mean([r.correct for r in rows]),
        "errors": float(sum(r.error is not None for r in rows)),
        "latency_p50_s": round(statistics.median(times), 3),
        "latency_p95_s": round(times[min(len(times) - 1, math.ceil(0.95 * len(times)) - 1)], 3),
    }


def threshold_curve(rows: list[Row], signal: str = "dense", steps: int = 21, refuse_above: bool = False) -> list[dict[str, Any]]:
    """Refusal accuracy and false-refusal rate if we refused whenever `signal` < t (or >= t
    with `refuse_above`, for the reader's no-answer margin). Rows refused before the signal was
    measured count as refused at every threshold."""
    have = [r for r in rows if r.error is None and (r.signals.get(signal) is not None or r.refused)]
    if not have:
        return []
    values = sorted(float(r.signals[signal]) for r in have if r.signals.get(signal) is not None)
    if not values:
        return []
    lo, hi = values[0], values[-1]

    def refused(r: Row, t: float) -> bool:
        v = r.signals.get(signal)
        if v is None:
            return True  # refused earlier (the gate)
        return float(v) >= t if refuse_above else float(v) < t

    un = [r for r in have if r.type == "unanswerable"]
    an = [r for r in have if r.type != "unanswerable"]
    curve = []
    for i in range(steps):
        t = lo + (hi - lo) * i / (steps - 1)
        curve.append(
            {
                "signal": signal,
                "threshold": round(t, 4),
                "refusal_accuracy": round(sum(refused(r, t) for r in un) / max(1, len(un)), 4),
                "false_refusal_rate": round(sum(refused(r, t) for r in an) / max(1, len(an)), 4),
            }
        )
    return curve


def evaluate(items: list[GoldenItem], pipeline: Any, progress: bool = True) -> Report:
    """Run every item through the pipeline; an exception is a scored error, never a crash."""
    from tqdm import tqdm

    from ..types import Answer

    rows: list[Row] = []
    for item in tqdm(items, desc="Evaluating", unit="q", disable=not progress):
        started = time.perf_counter()
        try:
            answer = pipeline.answer(item.question)
            seconds = time.perf_counter() - started
            hits = pipeline.retriever.search(answer.searched or item.question, 10)
            ranked_docs = list(dict.fromkeys(h.chunk.doc_id for h in hits))
            rows.append(score_row(item, answer, ranked_docs, seconds, pipeline.policy))
        except Exception as err:  # noqa: BLE001 - an error is a result here
            empty = Answer(question=item.question, text="", refused=False, route="extractive")
            row = score_row(item, empty, [], time.perf_counter() - started, pipeline.policy)
            row.correct = False
            row.error = f"{err.__class__.__name__}: {err}"
            rows.append(row)
    canonical = [r for r in rows if r.variant_of is None]
    by_type = {t: summarize([r for r in canonical if r.type == t]) for t in sorted({r.type for r in canonical})}
    curves = threshold_curve(canonical, "dense") + threshold_curve(canonical, "coverage") + threshold_curve(canonical, "no_answer", 41, refuse_above=True)
    settings = pipeline.settings.model_dump(mode="json", exclude={"root", "corpus_dir", "index_dir", "cache_dir"})
    scores = {**summarize(canonical), **trust_scores(canonical), **paraphrase_scores(rows)}
    return Report(scores=scores, by_type=by_type, threshold_curve=curves, settings=settings, rows=rows)


# -- report files ------------------------------------------------------------------------


def write_report(report: Report, folder: Path) -> Path:
    """report.json, a bar chart by question type, and report.md with the failures table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(report.model_dump_json(indent=2), encoding="utf-8")

    types = list(report.by_type)
    values = [
        report.by_type[t]["refusal_accuracy"] if t == "unanswerable" else report.by_type[t]["answer_accuracy"] for t in types
    ]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4))
    bars = ax1.bar(types, values, color=["#8c8c8c" if t == "unanswerable" else "#3b75af" for t in types])
    ax1.bar_label(bars, labels=[f"{v:.0%}" for v in values])
    ax1.set_ylim(0, 1.1)
    ax1.set_title("Accuracy by question type (unanswerable: correct refusals)")
    ax1.tick_params(axis="x", rotation=20)
    for signal, style in (("dense", "-"), ("coverage", "--"), ("no_answer", ":")):
        pts = [p for p in report.threshold_curve if p["signal"] == signal]
        if pts:
            ax2.plot([p["false_refusal_rate"] for p in pts], [p["refusal_accuracy"] for p in pts], style, marker="o", ms=3, label=signal)
    ax2.set_xlabel("false-refusal rate (answerable refused)")
    ax2.set_ylabel("refusal accuracy (unanswerable refused)")
    ax2.set_title("Refusal threshold curve, one signal at a time")
    ax2.legend()
    canonical = [r for r in report.rows if r.variant_of is None and r.error is None]
    pairs = [(r.p_right, bool(r.would_be_right)) for r in canonical if r.p_right is not None]
    if pairs:
        curve = risk_coverage(pairs)
        ax3.plot([c for c, _ in curve], [risk for _, risk in curve], "-", label=f"answer policy (AURC {report.scores.get('aurc', 0):.3f})")
        answered = [r for r in canonical if not r.refused]
        if answered:
            point = (len(answered) / len(canonical), sum(not r.correct for r in answered) / len(answered))
            ax3.plot(*point, "o", color="#c0392b", label=f"default settings: {point[0]:.0%} answered, {point[1]:.0%} of them wrong")
        ax3.axhline(0.05, ls=":", color="#888")
        ax3.set_xlabel("coverage (share of questions answered)")
        ax3.set_ylabel("risk (share of answers that are wrong)")
        ax3.set_xlim(0, 1)
        ax3.set_ylim(0, max(0.1, max(risk for _, risk in curve) * 1.1))
        ax3.set_title("Risk against coverage (most confident first)")
        ax3.legend(fontsize=8)
    else:
        ax3.axis("off")
    fig.tight_layout()
    fig.savefig(folder / "scores.png", dpi=110)
    plt.close(fig)

    s = report.scores
    lines = [
        "# Evaluation report",
        "",
        "![scores by type and refusal threshold curve](scores.png)",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {v:g} |" for k, v in s.items()],
        "",
        "## By type",
        "",
        "| type | n | answer accuracy | refusal accuracy | citation hit | false refusals |",
        "|---|---|---|---|---|---|",
        *[
            f"| {t} | {v['items']:g} | {v['answer_accuracy']:.2f} | {v['refusal_accuracy']:.2f} | {v['citation_hit']:.2f} | {v['false_refusal_rate']:.2f} |"
            for t, v in report.by_type.items()
        ],
        "",
        "## Failures",
        "",
        "| id | type | question | answer | route | cited passages |",
        "|---|---|---|---|---|---|",
    ]
    for r in report.rows:
        if r.correct and r.error is None:
            continue
        cited = "<br>".join(f"[{c['n']}] {c['doc_id']}: {_cell(c['text'])[:160]}" for c in r.cited)
        lines.append(f"| {r.id} | {r.type} | {_cell(r.question)} | {_cell(r.error or r.answer)} | {r.route} | {cited} |")
    (folder / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder / "report.md"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|").replace("<", "&lt;")


def settings_for(golden: Path, base: Settings | None = None) -> Settings:
    """Settings to answer a golden set: its own `corpus/` folder beside it if it has one (the
    SQuAD open-book set does), indexed in the cache; else the configured corpus."""
    base = base or Settings()
    corpus = Path(golden).resolve().parent / "corpus"
    if not corpus.is_dir():
        return base
    index = base.cache_dir / "eval-index" / Path(golden).stem
    return base.model_copy(update={"corpus_dir": corpus, "index_dir": index})


def main(args: Any) -> int:
    """`python -m rag eval FILE [FILE ...] [--report DIR] [--limit N]`: one report per set."""
    from ..pipeline import Pipeline

    files = [Path(f) for f in (args.file if isinstance(args.file, list) else [args.file])]
    shared: dict[str, Any] = {}
    summary: dict[str, dict[str, float]] = {}
    failed = False
    for golden in files:
        items = load_golden(golden)
        if getattr(args, "limit", 0):
            items = items[: args.limit]
        pipeline = Pipeline(settings_for(golden), **shared)
        pipeline.warm_up()
        shared = {"embedder": pipeline.embedder, "reader": pipeline.reader if pipeline.settings.use_reader else None}
        if pipeline.settings.use_llm:
            shared["generator"] = pipeline.generator
        if getattr(args, "paraphrase", False):
            items = with_variants(items)
        report = evaluate(items, pipeline)
        folder = Path(args.report) if len(files) == 1 else Path(args.report) / golden.stem
        path = write_report(report, folder)
        summary[golden.stem] = report.scores
        failed |= bool(report.scores["errors"])
        print(f"== {golden} ({len(items)} items)")
        width = max(len(k) for k in report.scores)
        for key, value in report.scores.items():
            print(f"{key:<{width}}  {value:g}")
        print(f"report: {path} (+ report.json, scores.png)")
    if len(files) > 1:
        keys = list(dict.fromkeys(k for scores in summary.values() for k in scores))
        lines = ["| metric | " + " | ".join(summary) + " |", "|---|" + "---|" * len(summary)]
        lines += [f"| {k} | " + " | ".join(f"{summary[s].get(k, float('nan')):g}" for s in summary) + " |" for k in keys]
        Path(args.report).mkdir(parents=True, exist_ok=True)
        (Path(args.report) / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"summary: {Path(args.report) / 'summary.md'}")
    return 1 if failed else 0
