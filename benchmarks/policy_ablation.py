"""The answer policy against today's gates, on sets it never saw (issue 19's table).

    python -m benchmarks.policy_ablation [--llm] [--paraphrase] [golden.jsonl ...]

Variants, each over every set in one process:
- "before: policy" and "before: hand-set gates" (with --before DIR): the reader and policy of an
  earlier commit, from DIR/reader and DIR/policy (`git show <commit>:rag/models/...` written
  there), on today's code and grader, with its policy or with the gates (main at 7420d0e): the
  same run compares before and after;
- "hand-set gates": the gate before reading and the reader's no-answer threshold (4.0), with today's reader,
  no learned policy (use_policy=False): the behaviour of main before issue 19;
- "policy (default)": the learned policy alone, answer_threshold as shipped;
- "policy + gate": the hand-set gate kept on top of the policy (does it still help?);
- "policy at 0.4" / "policy at 0.6": other points of the same curve, for reading it only: the
  threshold itself is chosen on the policy's held-out articles (rag/models/policy record).
LLM phrasing is off unless --llm (the decision to answer does not depend on it; it only rewords
the span, and ~4x the time on this machine). Writes benchmarks/results/<date>-<commit>-policy-ablation.{md,json}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.results_file import result_path
from rag.answering.confidence import Calibrator
from rag.answering.reader import Reader
from rag.config import Settings
from rag.eval.golden import evaluate, load_golden, settings_for, with_variants
from rag.pipeline import Pipeline

SETS = ["tests/golden/golden.jsonl", "tests/golden/squad/squad.jsonl", "tests/golden/squad_absent/absent.jsonl"]
COLUMNS = [
    ("stated_wrong_rate", "stated wrong"), ("answer_accuracy", "answerable right"), ("hasans_f1", "HasAns F1"),
    ("refusal_accuracy", "unanswerable refused"), ("refused_on-topic", "on-topic absent refused"),
    ("false_refusal_rate", "false refusals"), ("ece", "ECE"), ("aurc", "AURC"), ("coverage_at_5pct_risk", "coverage at 5% risk"),
    ("paraphrase_consistency", "paraphrase consistency"), ("latency_p50_s", "p50 s"),
]
VARIANTS = {
    "hand-set gates": {"use_policy": False},
    "policy (default)": {},
    "policy + gate": {"use_gate": True},
    "policy at 0.4": {"answer_threshold": 0.4},
    "policy at 0.6": {"answer_threshold": 0.6},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sets", nargs="*", default=SETS)
    p.add_argument("--llm", action="store_true", help="with the LLM's phrasing (as users run it)")
    p.add_argument("--paraphrase", action="store_true", help="also ask every answerable question reworded")
    p.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    p.add_argument("--before", type=Path, help="a folder with reader/ and policy/ of an earlier commit: adds the 'main before' variant")
    args = p.parse_args()
    variants = dict(VARIANTS)
    before: dict = {}
    if args.before:
        variants = {"before: policy": {}, "before: hand-set gates": {"use_policy": False}, **variants}
        before = {"reader": Reader(folder=args.before / "reader", quantize=False), "calibrator": Calibrator.load(args.before / "policy")}
    shared: dict = {}
    results: dict[str, dict[str, dict]] = {}
    for path in map(Path, args.sets):
        items = load_golden(path)
        if args.paraphrase:
            items = with_variants(items)
        for name, change in variants.items():
            if args.only and name not in args.only:
                continue
            settings = settings_for(path, Settings(use_llm=args.llm)).model_copy(update=change)
            if name.startswith("before:"):
                pipeline = Pipeline(settings, **{**shared, **before})
                pipeline.warm_up()
                shared.update({k: getattr(pipeline, k) for k in ("embedder", *(("generator",) if args.llm else ()))})
            else:
                pipeline = Pipeline(settings, **shared)
                pipeline.warm_up()
                shared.update(embedder=pipeline.embedder, reader=pipeline.reader, **({"generator": pipeline.generator} if args.llm else {}))
            report = evaluate(items, pipeline, progress=False)
            results.setdefault(path.stem, {})[name] = report.scores
            print(path.stem, name, {k: report.scores.get(k) for k, _ in COLUMNS})
    lines = [f"# Answer policy vs today's gates ({'LLM phrasing on' if args.llm else 'LLM phrasing off'}{', with rewordings' if args.paraphrase else ''})", "",
             "`python -m benchmarks.policy_ablation" + (" --llm" if args.llm else "") + (" --paraphrase" if args.paraphrase else "") + "`", ""]
    for stem, by_variant in results.items():
        lines += [f"## {stem}", "", "| variant | " + " | ".join(label for _, label in COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
        for name, scores in by_variant.items():
            cells = [f"{scores[k]:.3g}" if isinstance(scores.get(k), float) else "" for k, _ in COLUMNS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    suffix = "-llm" if args.llm else ""
    md = result_path(f"policy-ablation{suffix}.md")
    md.write_text("\n".join(lines), encoding="utf-8")
    md.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {md}")


if __name__ == "__main__":
    main()
