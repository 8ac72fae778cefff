"""The LLM seam: the registry, the settings block, and the transformers backend on a plain model folder."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from fakes import ScriptedGenerator
from rag.config import Settings
from rag.llm import BACKENDS, Generator, ModelSettings, make_generator


def test_every_backend_is_a_generator_without_loading_anything():
    for name in BACKENDS:
        generator = make_generator(ModelSettings(backend=name))
        assert isinstance(generator, Generator), name  # built, not loaded: warm_up() loads
    assert isinstance(ScriptedGenerator("x"), Generator)


def test_unknown_backend_names_the_known_ones():
    with pytest.raises(ValueError, match="choose one of: llamacpp, openai, transformers"):
        make_generator(ModelSettings(backend="nope"))


def test_settings_give_the_typed_model_block(monkeypatch):
    monkeypatch.setenv("RAG_LLM_BACKEND", "llamacpp")
    monkeypatch.setenv("RAG_LLM_MODEL", "/models/x.gguf")
    monkeypatch.setenv("RAG_LLM_API_KEY", "sk-secret")
    monkeypatch.setenv("RAG_LLM_TIMEOUT_S", "5")
    model = Settings().model
    assert (model.backend, model.model, model.timeout_s) == ("llamacpp", "/models/x.gguf", 5.0)
    assert isinstance(model.api_key, SecretStr) and "sk-secret" not in repr(model) + Settings().model_dump_json()


def test_rag_backend_still_works_as_the_old_spelling(monkeypatch):
    monkeypatch.setenv("RAG_BACKEND", "llamacpp")
    assert Settings().llm_backend == "llamacpp"


def test_a_missing_model_file_says_what_it_needs(tmp_path):
    from rag.llm.gguf import gguf_path
    from rag.llm.transformers import model_folder

    with pytest.raises(FileNotFoundError, match="not a .gguf file"):
        gguf_path(ModelSettings(model=str(tmp_path / "missing.gguf")))
    with pytest.raises(FileNotFoundError, match="without config.json"):
        model_folder(ModelSettings(model=str(tmp_path)))


def test_a_hugging_face_model_folder_loads_as_it_is(generator, pipeline, monkeypatch):
    """RAG_LLM_MODEL=<folder>: the converted GGUF cache is a plain Hugging Face folder (config.json,
    safetensors, a tokenizer with a chat template). Loaded from there by the transformers backend,
    it must answer exactly as the packaged default does, alone and through the whole pipeline."""
    from rag.llm.gguf import cached_model_dir
    from rag.llm.transformers import TransformersGenerator, model_folder
    from rag.pipeline import Pipeline
    from rag.answering.prompt import build_messages

    folder = cached_model_dir(generator.settings)
    assert (folder / "config.json").exists() and list(folder.glob("*.safetensors"))
    monkeypatch.setenv("RAG_LLM_MODEL", str(folder))
    settings = pipeline.settings.model_copy(update={"llm_model": Settings().llm_model})
    assert settings.model.model == str(folder) and settings.model.backend == "transformers"
    from_folder = Pipeline(settings, index=pipeline.index, embedder=pipeline.embedder)  # builds its LLM from settings
    direct = from_folder.generator
    assert isinstance(direct, TransformersGenerator) and model_folder(direct.settings) == folder  # loaded as is, no conversion

    question = "How much did Meta offer OpenAI engineers as signing bonuses?"
    chosen = pipeline.policy.choose(question, pipeline.retriever.evidence(question, pipeline.retriever.candidates(question, 4), 3))
    for messages, stop in ((build_messages(question, chosen), ("\n",)), ([{"role": "user", "content": "List three colours."}], ())):
        mine, packaged = direct.generate(messages, 48, stop=stop), generator.generate(messages, 48, stop=stop)
        assert mine.text.strip() and mine.text == packaged.text

    assert from_folder.answer(question).model_dump(exclude={"timings"}) == pipeline.answer(question).model_dump(exclude={"timings"})


RETENTION = ("The report also includes data asserting Anthropic had the highest AI talent retention rate (80 percent) at a "
             "handful of AI companies for employees hired between 2021 and February 2023, followed by Google’s DeepMind "
             "(78 percent), OpenAI (67 percent), Meta (64 percent), Cohere (64 percent), and Mosaic (63 percent).")


def test_llamacpp_answers_a_repeated_prompt_as_the_first_time(llama_cpp_installed):
    """llama.cpp keeps the KV cache of the last prompt; given the same prompt again it re-ran only
    its last token, alone, and that 1-token batch rounds differently: this prompt's 48-token
    answer changed the second time. The backend starts over on a repeat, so it does not."""
    from rag.llm.llamacpp import LlamaCppGenerator
    from rag.answering.prompt import SYSTEM

    g = LlamaCppGenerator(ModelSettings(backend="llamacpp", threads=2))
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"Passages:\n[1] {RETENTION}\n\nQuestion: What retention rate did Cohere have?"}]
    other = [messages[0], {"role": "user", "content": "Passages:\n[1] Meta paid $14.3 billion.\n\nQuestion: What did Meta pay?"}]
    first = g.generate(messages, 48).text
    assert [g.generate(messages, 48).text, g.generate(messages, 48).text] == [first, first]
    g.generate(other, 48)
    assert g.generate(messages, 48).text == first


CHATS = [
    [{"role": "user", "content": "Name three colours of the rainbow."}],
    [{"role": "user", "content": "Write one sentence about the sea."}],
    [{"role": "user", "content": "What is the capital of France? Answer in a sentence."}],
    [{"role": "user", "content": "Count from one to ten in words."}],
]


def _together(gen, chats, **kwargs) -> list:
    import threading

    out: list = [None] * len(chats)
    start = threading.Barrier(len(chats))

    def ask(n: int) -> None:
        start.wait()
        try:
            out[n] = gen.generate(chats[n], 32, stop=(), **kwargs)
        except Exception as err:  # noqa: BLE001 - handed to the assertion
            out[n] = err

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(len(chats))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_concurrent_generations_share_a_batch_and_each_gets_its_own_text(generator):
    """Four generations at once are decoded in one batch, each padded on the left with its own
    positions; in float32 (where padding cannot change the rounding) every text equals the same
    prompt's text decoded alone, so no answer is mixed with another."""
    from rag.llm.transformers import TransformersGenerator

    gen = TransformersGenerator(generator.settings.model_copy(update={"dtype": "float32", "batch": 4}))
    alone = [gen.generate(chat, 32, stop=()).text for chat in CHATS]
    assert gen.peak == 1 and len(set(alone)) == 4
    together = _together(gen, CHATS)
    assert gen.peak >= 2  # some steps decoded several sequences in one forward pass
    assert [g.text for g in together] == alone


def test_a_caller_that_goes_away_leaves_the_batch_and_the_others_finish(generator):
    """on_token raising (a client that disconnected) ends that generation with its error at once;
    the others in the batch decode on to their full texts."""
    alone = [generator.generate(chat, 32, stop=()) for chat in CHATS[:2]]

    class Gone(Exception):
        pass

    def leave(piece: str) -> None:
        raise Gone

    import threading

    result: dict = {}

    def stay() -> None:
        result["g"] = generator.generate(CHATS[0], 32, stop=())

    t = threading.Thread(target=stay)
    t.start()
    with pytest.raises(Gone):
        generator.generate(CHATS[1], 32, stop=(), on_token=leave)
    t.join()
    assert result["g"].finish_reason == alone[0].finish_reason and result["g"].text.strip()
    assert generator.generate(CHATS[1], 32, stop=()).text == alone[1].text  # the decoder is still well
