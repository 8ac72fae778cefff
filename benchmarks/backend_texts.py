"""The raw LLM answer to each bench question's real prompt, transformers vs llama.cpp, side by side.

    python -m benchmarks.backend_texts > benchmarks/results/<date>-<commit>-backend-texts.md
"""

from __future__ import annotations

from benchmarks.generation_levers import prompts
from rag.eval.bench import QUESTIONS
from rag.config import Settings
from rag.llm import make_generator
from rag.pipeline import Pipeline


def main() -> None:
    s = Settings()
    all_messages = prompts(Pipeline(s))
    t = make_generator(s.model_copy(update={"llm_backend": "transformers"}).model)
    c = make_generator(s.model_copy(update={"llm_backend": "llamacpp"}).model)
    same = 0
    print("| question | transformers (bf16) | llama.cpp (Q4_1) |\n|---|---|---|")
    for q, m in zip(QUESTIONS, all_messages):
        a, b = t.generate(m, s.max_new_tokens).text.strip(), c.generate(m, s.max_new_tokens).text.strip()
        same += a == b
        print(f"| {q} | {a} | {b} |")
    print(f"\nidentical: {same}/{len(QUESTIONS)}")


if __name__ == "__main__":
    main()
