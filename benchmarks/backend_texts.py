"""The raw LLM answer to each bench question's real prompt, transformers vs llama.cpp, side by side.

    python benchmarks/backend_texts.py > results/backend-texts.md
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generation_levers import prompts  # noqa: E402

from rag.bench import QUESTIONS  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.generation import Generation, make_generator  # noqa: E402
from rag.pipeline import Pipeline  # noqa: E402


def answer(gen, messages, n):
    return next(i for i in gen.stream(messages, n) if isinstance(i, Generation)).text.strip()


def main() -> None:
    s = Settings()
    all_messages = prompts(Pipeline(s))
    t = make_generator(s.model_copy(update={"backend": "transformers"}))
    c = make_generator(s.model_copy(update={"backend": "llamacpp"}))
    same = 0
    print("| question | transformers (bf16) | llama.cpp (Q4_1) |\n|---|---|---|")
    for q, m in zip(QUESTIONS, all_messages):
        a, b = answer(t, m, s.max_new_tokens), answer(c, m, s.max_new_tokens)
        same += a == b
        print(f"| {q} | {a} | {b} |")
    print(f"\nidentical: {same}/{len(QUESTIONS)}")


if __name__ == "__main__":
    main()
