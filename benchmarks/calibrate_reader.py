"""Where should the reader's no-answer threshold sit, and which rules of the gate before it are
still worth keeping? Calibrated on the news golden set together with held-out SQuAD data (the
Zelda article: 60 answerable, 60 real unanswerable questions), never on the news set alone, and
never on the open-book evaluation set.

    python -m benchmarks.calibrate_reader            # runs the two evals with gate and reader refusal off
    python -m benchmarks.calibrate_reader --reports DIR  # or reuse their report.json files

With the gate off and the reader's refusal off (threshold 99), every question gets an answer and
every signal is recorded, so any policy can be simulated: a question is refused when a kept gate
rule refuses it (from its recorded signals) or, for a fact question, its margin is at least t.
For each gate variant and t: news accuracy, false refusals and refusals, Zelda likewise, and a
combined score. The chosen policy is the best combined score with news false refusals <= 5%.
Writes a table and a curve to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.results_file import result_path

ROOT = Path(__file__).resolve().parents[1]
SETS = {"golden": ROOT / "tests/golden/golden.jsonl", "zelda": ROOT / "benchmarks/calibration/zelda/zelda.jsonl"}
MAX_FALSE_REFUSALS = 0.05  # the product's bar on the news set


def rows_of(reports: Path, name: str) -> list[dict]:
    return json.loads((reports / name / "report.json").read_text())["rows"]


RULES = {
    "cosine": "no passage is close",
    "coverage": "the passages miss",
    "number": "the question asks for a number",
    "who": "the question asks who",
}
VARIANTS = {
    "all gate rules": set(RULES),
    "number + who rules": {"number", "who"},
    "cosine + coverage rules": {"cosine", "coverage"},
    "no gate": set(),
}


def gate_rule(r: dict) -> str | None:
    """Which gate rule (if any) refuses this row, from its recorded signals, at default Settings."""
    from rag.answering.policy import AnswerPolicy
    from rag.config import Settings
    from rag.types import Signals

    if not r["signals"]:
        return None
    sig = Signals(**{k: v for k, v in r["signals"].items() if k in Signals.model_fields})
    why = AnswerPolicy(Settings()).gate(sig)
    return next((name for name, prefix in RULES.items() if why and why.startswith(prefix)), None)


def at(rows: list[dict], t: float, rules: set[str] = frozenset(RULES)) -> dict:
    from rag.answering.phrasing import answer_kind

    def refused(r: dict) -> bool:
        if r["refused"]:
            return True
        if r["_rule"] in rules:
            return True
        m = r["signals"].get("no_answer") if r["signals"] else None
        return answer_kind(r["question"]) == "span" and m is not None and m >= t

    ans = [r for r in rows if r["type"] != "unanswerable"]
    un = [r for r in rows if r["type"] == "unanswerable"]
    on_topic = [r for r in un if r.get("subtype") in ("on-topic", "real-squad2")]
    return {
        "accuracy": float(np.mean([r["correct"] and not refused(r) for r in ans])) if ans else float("nan"),
        "false_refusals": float(np.mean([refused(r) for r in ans])) if ans else float("nan"),
        "refused_unanswerable": float(np.mean([refused(r) for r in un])) if un else float("nan"),
        "refused_on_topic": float(np.mean([refused(r) for r in on_topic])) if on_topic else float("nan"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reports", type=Path, default=None, help="folder with golden/ and zelda/ report.json (threshold off)")
    args = p.parse_args()
    reports = args.reports
    if reports is None:
        reports = ROOT / "reports" / "calibration"
        env = {"RAG_READER_NO_ANSWER": "99", "RAG_USE_GATE": "false"}
        import os

        subprocess.run([sys.executable, "-m", "rag", "eval", *map(str, SETS.values()), "--report", str(reports)], check=True, env={**os.environ, **env})
    news, zelda = rows_of(reports, "golden"), rows_of(reports, "zelda")
    for r in news + zelda:
        r["_rule"] = gate_rule(r)
    margins = sorted({round(r["signals"]["no_answer"], 1) for r in news + zelda if r["signals"] and r["signals"].get("no_answer") is not None})
    def combined(n: dict, z: dict) -> float:
        # right answers and right refusals, each set weighted equally (news: 78 answerable, 24 not)
        return 0.5 * (n["accuracy"] * 0.76 + n["refused_unanswerable"] * 0.24) + 0.5 * (z["accuracy"] + z["refused_unanswerable"]) / 2

    grids = {}
    for variant, rules in VARIANTS.items():
        grids[variant] = []
        for t in np.arange(-8.0, 8.01, 0.5):
            n, z = at(news, t, rules), at(zelda, t, rules)
            grids[variant].append({"t": round(float(t), 2), "news": n, "zelda": z, "combined": combined(n, z)})
    best_of = {}
    for variant, grid in grids.items():
        ok = [row for row in grid if row["news"]["false_refusals"] <= MAX_FALSE_REFUSALS]
        best_of[variant] = max(ok or grid, key=lambda row: row["combined"])
    chosen_variant = max(best_of, key=lambda v: best_of[v]["combined"])
    best = best_of[chosen_variant]
    table = grids[chosen_variant]

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, key, style in (("news", "news", "-o"), ("Zelda (held-out SQuAD 2.0)", "zelda", "--s")):
        ax.plot([r[key]["false_refusals"] for r in table], [r[key]["refused_unanswerable"] for r in table], style, ms=3, label=name)
    ax.axvline(MAX_FALSE_REFUSALS, color="grey", lw=0.8)
    ax.set_xlabel("answerable questions refused")
    ax.set_ylabel("unanswerable questions refused")
    ax.set_title(f"Reader threshold, {chosen_variant} (chosen t = {best['t']})")
    ax.legend()
    fig.tight_layout()
    png = result_path("reader-threshold.png")
    fig.savefig(png, dpi=110)

    lines = [
        "# Reader no-answer threshold and the gate before it",
        "",
        f"Refuse a fact question when margin >= t. Chosen: **{chosen_variant}, t = {best['t']}** (best combined score with news false refusals <= {MAX_FALSE_REFUSALS}).",
        "",
        "Best t per gate variant:",
        "",
        "| gate variant | t | news accuracy | news false refusals | news refused | news on-topic refused | Zelda accuracy | Zelda refused | combined |",
        "|---|---|---|---|---|---|---|---|---|",
        *[
            f"| {v} | {b['t']} | {b['news']['accuracy']:.3f} | {b['news']['false_refusals']:.3f} | {b['news']['refused_unanswerable']:.3f} | "
            f"{b['news']['refused_on_topic']:.3f} | {b['zelda']['accuracy']:.3f} | {b['zelda']['refused_unanswerable']:.3f} | {b['combined']:.3f} |"
            for v, b in best_of.items()
        ],
        "",
        f"The chosen variant ({chosen_variant}) at every t:",
        f"Curve: `{png.name}`. Reports: `{reports}` (threshold off). Margins seen: {margins[0] if margins else ''} .. {margins[-1] if margins else ''}.",
        "",
        "| t | news accuracy | news false refusals | news unanswerable refused | news on-topic refused | Zelda accuracy | Zelda false refusals | Zelda unanswerable refused | combined |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        n, z = r["news"], r["zelda"]
        lines.append(
            f"| {r['t']} | {n['accuracy']:.3f} | {n['false_refusals']:.3f} | {n['refused_unanswerable']:.3f} | {n['refused_on_topic']:.3f} | "
            f"{z['accuracy']:.3f} | {z['false_refusals']:.3f} | {z['refused_unanswerable']:.3f} | {r['combined']:.3f} |"
        )
    out = result_path("reader-threshold.md")
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
