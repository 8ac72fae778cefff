"""The answer policy's risk-coverage curve per set, with the hand-set gates' point beside it.

    python -m benchmarks.risk_coverage reports/eval benchmarks/results/2026-12-04-44faaca-policy-ablation.json

Reads `rag eval`'s report.json of each set (in REPORTS/<set>/) for the curve (answering the most
confident first) and the default point (what was answered at the shipped threshold), and the
ablation's "before: hand-set gates" scores for the point before the policy (no confidence, so a
point, not a curve). Writes results/<date>-<commit>-risk-coverage.png and prints the points.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.results_file import result_path
from rag.eval.golden import Report, risk_coverage

SETS = {"golden": "news (102)", "squad": "SQuAD open-book (150)"}


def gates_point(scores: dict, answerable: int) -> tuple[float, float]:
    """(coverage, risk) of a variant without confidences, from its summary scores and the number
    of answerable questions in its set."""
    items = scores["items"]
    refused = scores["false_refusal_rate"] * answerable + scores["refusal_accuracy"] * (items - answerable)
    coverage = 1 - refused / items
    return round(coverage, 4), round(scores["stated_wrong_rate"] / coverage, 4) if coverage else 0.0


def main(reports: Path, ablation: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    before = json.loads(ablation.read_text(encoding="utf-8"))
    fig, axes = plt.subplots(1, len(SETS), figsize=(6 * len(SETS), 4.2))
    for ax, (stem, label) in zip(axes, SETS.items()):
        report = Report.model_validate_json((reports / stem / "report.json").read_text(encoding="utf-8"))
        rows = [r for r in report.rows if r.variant_of is None and r.error is None]
        curve = risk_coverage([(r.p_right, bool(r.would_be_right)) for r in rows if r.p_right is not None])
        answered = [r for r in rows if not r.refused]
        now = (len(answered) / len(rows), sum(not r.correct for r in answered) / len(answered))
        then = gates_point(before[stem]["before: hand-set gates"], sum(r.type != "unanswerable" for r in rows))
        ax.plot([c for c, _ in curve], [r for _, r in curve], "-", label=f"answer policy (AURC {report.scores.get('aurc', 0):.3f})")
        ax.plot(*now, "o", color="#c0392b", label=f"now: {now[0]:.0%} answered, {now[1]:.0%} of them wrong")
        ax.plot(*then, "s", color="#555", label=f"before (hand-set gates): {then[0]:.0%} answered, {then[1]:.0%} wrong")
        ax.axhline(0.05, ls=":", color="#888")
        ax.set(xlim=(0, 1), ylim=(0, 0.6), xlabel="coverage (share of questions answered)", ylabel="risk (share of answers that are wrong)", title=label)
        ax.legend(fontsize=8, loc="upper left")
        print(stem, "now", tuple(round(x, 3) for x in now), "before", then)
    fig.tight_layout()
    out = result_path("risk-coverage.png")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
