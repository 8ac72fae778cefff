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


def test_a_hugging_face_model_folder_loads_as_it_is(generator):
    """The converted GGUF cache is a plain Hugging Face folder: loaded from there directly, the
    backend must answer exactly as it does from the packaged GGUF."""
    from rag.llm.gguf import cached_model_dir
    from rag.llm.transformers import TransformersGenerator

    folder = cached_model_dir(generator.settings)
    direct = TransformersGenerator(generator.settings.model_copy(update={"model": str(folder)}))
    messages = [{"role": "user", "content": "Say hello."}]
    assert direct.generate(messages, 8).text == generator.generate(messages, 8).text
