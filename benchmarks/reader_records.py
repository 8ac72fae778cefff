"""Side by side: the scores of reader training records (rag/training/train_reader.py's record.json).

    python -m benchmarks.reader_records benchmarks/results/2026-12-04-f54d019-reader-before-reworded-fp32cpu.json \
        benchmarks/results/2026-12-04-f54d019-reader-reworded-finetune.json

Prints validation HasAns F1, the no-answer AUCs (made negatives, Zelda's and Spectre's real
unanswerables), SQuADShifts new_wiki F1, and the reworded-validation scores: how far a source
clause, a lead-in or lower case moves the no-answer margin of answerable questions.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def summary(path: Path) -> dict[str, float | None]:
    r = json.loads(path.read_text(encoding="utf-8"))["scores"]
    v = r.get("val_reworded", {})
    return {
        "val HasAns F1 (always answer)": r["val"]["always_answer"]["HasAns"]["f1"],
        "val made-negative AUC": r["val"]["always_answer"].get("noans_auc"),
        "Zelda real-unanswerable AUC": r["zelda_real"]["always_answer"].get("noans_auc"),
        "Spectre real-unanswerable AUC": r["spectre_real_gold_paragraph"]["always_answer"].get("noans_auc"),
        "Spectre HasAns F1": r["spectre_real_gold_paragraph"]["always_answer"]["HasAns"]["f1"],
        "SQuADShifts new_wiki F1": r["squadshifts_new_wiki"]["HasAns"]["f1"],
        "reworded: margin shift of answerable": v.get("answerable_margin_shift"),
        "plain: HasAns F1 at threshold": v.get("plain_at_threshold", {}).get("HasAns", {}).get("f1"),
        "reworded: HasAns F1 at threshold": v.get("reworded_at_threshold", {}).get("HasAns", {}).get("f1"),
        "reworded: no-answer AUC": v.get("reworded_at_threshold", {}).get("noans_auc"),
    }


def main(paths: list[str]) -> None:
    rows = [summary(Path(p)) for p in paths]
    print("| score | " + " | ".join(Path(p).stem for p in paths) + " |")
    print("|---|" + "---|" * len(paths))
    for key in rows[0]:
        print(f"| {key} | " + " | ".join("" if r[key] is None else f"{r[key]:g}" for r in rows) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
