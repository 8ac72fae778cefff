"""RSS of one process answering 200 questions in a row: does memory stay flat?

    python -m benchmarks.memory [--n 200] [--json]

Runs the real pipeline over a private copy of corpus/ (index in a tmp dir), cycling through the
golden questions (answerable and unanswerable, so every path runs). RSS is read with psutil after
a warm-up, then every 25 questions.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="questions to answer after the warm-up")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args()

    from rag.config import Settings
    from rag.pipeline import Pipeline

    questions = [json.loads(line)["question"] for line in (REPO / "tests/golden/golden.jsonl").open()]
    process = psutil.Process()
    mb = lambda: process.memory_info().rss / 2**20  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(REPO / "corpus", Path(tmp) / "corpus")
        pipeline = Pipeline(Settings(root=Path(tmp)))
        pipeline.warm_up()
        for q in questions[:5]:
            pipeline.answer(q)
        gc.collect()
        before = mb()
        samples = [(0, round(before, 1))]
        paths: dict[str, int] = {}
        started = time.perf_counter()
        for i in range(1, args.n + 1):
            a = pipeline.answer(questions[i % len(questions)])
            paths[a.route] = paths.get(a.route, 0) + 1
            if i % 25 == 0 or i == args.n:
                samples.append((i, round(mb(), 1)))
                print(f"  {i:4d} questions: RSS {samples[-1][1]:.0f} MB", file=sys.stderr, flush=True)
        gc.collect()
        after = mb()
    result = {
        "questions": args.n,
        "rss_before_mb": round(before, 1),
        "rss_after_mb": round(after, 1),
        "growth_mb": round(after - before, 1),
        "peak_mb": round(max(s for _, s in samples + [(0, after)]), 1),
        "samples": samples,
        "paths": paths,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"RSS over {args.n} questions: {result['rss_before_mb']:.0f} MB -> {result['rss_after_mb']:.0f} MB "
              f"({result['growth_mb']:+.1f} MB, peak {result['peak_mb']:.0f} MB) in {result['seconds']:.0f} s; paths {paths}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
