"""Where should the reader's no-answer threshold sit? Calibrated on the news golden set together
with held-out SQuAD data (the Zelda article: 60 answerable, 60 real unanswerable questions),
never on the news set alone, and never on the open-book evaluation set.

    python -m benchmarks.calibrate_reader            # runs the two evals with the threshold off
    python -m benchmarks.calibrate_reader --reports DIR  # or reuse their report.json files

With the reader's refusal off (threshold 99), every answer is known, so refusing at any lower
threshold t can be simulated: a question is refused when the gate refused it or its margin is
at least t. For each t: news accuracy, news false refusals, news and Zelda refusal of
unanswerable questions, and a combined score. Writes a table and a curve to benchmarks/results/.
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


def at(rows: list[dict], t: float) -> dict:
    def refused(r: dict) -> bool:
        m = r["signals"].get("no_answer") if r["signals"] else None
        return r["refused"] or (m is not None and m >= t)

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
        env = {"RAG_READER_NO_ANSWER": "99"}
        import os

        subprocess.run([sys.executable, "-m", "rag", "eval", *map(str, SETS.values()), "--report", str(reports)], check=True, env={**os.environ, **env})
    news, zelda = rows_of(reports, "golden"), rows_of(reports, "zelda")
    margins = sorted({round(r["signals"]["no_answer"], 1) for r in news + zelda if r["signals"] and r["signals"].get("no_answer") is not None})
    table = []
    for t in np.arange(-8.0, 6.01, 0.5):
        n, z = at(news, t), at(zelda, t)
        # combined: right answers and right refusals over both sets, each set weighted equally
        combined = 0.5 * (n["accuracy"] * 0.76 + n["refused_unanswerable"] * 0.24) + 0.5 * (z["accuracy"] + z["refused_unanswerable"]) / 2
        table.append({"t": round(float(t), 2), "news": n, "zelda": z, "combined": combined})
    ok = [row for row in table if row["news"]["false_refusals"] <= MAX_FALSE_REFUSALS]
    best = max(ok or table, key=lambda row: row["combined"])

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, key, style in (("news", "news", "-o"), ("Zelda (held-out SQuAD 2.0)", "zelda", "--s")):
        ax.plot([r[key]["false_refusals"] for r in table], [r[key]["refused_unanswerable"] for r in table], style, ms=3, label=name)
    ax.axvline(MAX_FALSE_REFUSALS, color="grey", lw=0.8)
    ax.set_xlabel("answerable questions refused")
    ax.set_ylabel("unanswerable questions refused")
    ax.set_title(f"Reader no-answer threshold (chosen t = {best['t']})")
    ax.legend()
    fig.tight_layout()
    png = result_path("reader-threshold.png")
    fig.savefig(png, dpi=110)

    lines = [
        "# Reader no-answer threshold",
        "",
        f"Refuse when margin >= t. Chosen: **t = {best['t']}** (best combined score with news false refusals <= {MAX_FALSE_REFUSALS}).",
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
