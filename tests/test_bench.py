"""rag bench: the measuring code runs on the real pipeline and reports every figure, sanely.

No timed assertions: speed depends on the machine; RESULTS.md holds the measured numbers.
"""

from __future__ import annotations

import pytest

from rag.eval import bench

pytestmark = pytest.mark.slow

QUESTIONS = bench.QUESTIONS[:2]


@pytest.fixture(scope="module")
def report(pipeline):
    return bench.run(pipeline.settings, questions=QUESTIONS, pipeline=pipeline)


def test_report_is_complete_and_sane(report):
    w, c = report.warm, report.cold
    assert w.n == len(QUESTIONS) and len(w.runs) == len(QUESTIONS)
    assert w.generated >= 1, "at least one bench question should reach the LLM"
    for name in ("e2e_p50_s", "e2e_p95_s", "first_token_p50_s", "first_token_p95_s", "decode_tok_s", "retrieval_p50_ms", "embed_p50_ms"):
        assert getattr(w, name) > 0, name
    assert w.e2e_p50_s <= w.e2e_p95_s
    assert w.first_token_p50_s <= w.first_token_p95_s
    assert w.retrieval_p50_ms <= w.retrieval_p95_ms
    assert w.prompt_tokens_mean > 0 and w.prompt_tokens_max >= w.prompt_tokens_mean
    for run in w.runs:
        assert 0 < run.retrieve_ms / 1000 < run.total_s
        if run.prompt_tokens:
            assert 0 < run.first_token_s <= run.total_s and run.new_tokens > 0

    assert c is not None
    stages = (c.interpreter_s, c.import_s, c.embedder_load_s, c.index_load_s, c.model_load_s, c.first_answer_s)
    assert all(s > 0 for s in stages)
    assert c.total_s >= sum(stages) - 0.01  # the stages are consecutive parts of the total
    assert c.peak_rss_mb > 100 and report.peak_rss_mb > 100


def test_table_and_json_carry_the_numbers(report):
    text = bench.table(report)
    for label in ("start -> first answer", "first token", "answer p50", "answer p95", "decode", "retrieval", "prompt tokens", "peak RSS"):
        assert label in text
    again = bench.Report.model_validate_json(report.model_dump_json())
    assert again.warm.e2e_p50_s == report.warm.e2e_p50_s and again.cold == report.cold


def test_generator_contract(generator):
    """The transformers backend streams pieces through on_token, then returns a Generation that adds up."""
    messages = [{"role": "system", "content": "Answer in one short sentence."}, {"role": "user", "content": "Say hello."}]
    pieces: list[str] = []
    last = generator.generate(messages, max_new_tokens=8, on_token=pieces.append)
    assert pieces and last.text == "".join(pieces) and "\n" not in last.text
    assert last.prompt_tokens == generator.count_tokens(messages)
    assert 0 < last.new_tokens <= 8 and 0 < last.first_token_s <= last.total_s
    assert last.finish_reason in ("stop", "length")
    again = generator.generate(messages, max_new_tokens=8)
    assert again.text == last.text  # greedy: the same prompt gives the same answer


def test_llamacpp_backend_matches_the_interface(llama_cpp_installed):
    from rag.config import Settings
    from rag.llm import make_generator
    from rag.llm.llamacpp import LlamaCppGenerator

    gen = make_generator(Settings(llm_backend="llamacpp").model)
    assert isinstance(gen, LlamaCppGenerator)
    messages = [{"role": "system", "content": "Answer in one short sentence."}, {"role": "user", "content": "Say hello."}]
    pieces: list[str] = []
    last = gen.generate(messages, max_new_tokens=8, on_token=pieces.append)
    assert last.text == "".join(pieces) and last.text.strip()
    assert last.prompt_tokens == gen.count_tokens(messages) > 0
    assert 0 < last.new_tokens <= 8
