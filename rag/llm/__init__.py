"""LLM backends behind one protocol: pick one by name with `make_generator`.

Adding a backend is one file in this folder plus one line in BACKENDS.
"""

from __future__ import annotations

import importlib

from .base import Generation, Generator, LLMError, Message, ModelSettings, OnToken

__all__ = ["BACKENDS", "Generation", "Generator", "LLMError", "Message", "ModelSettings", "OnToken", "make_generator"]

# name -> "module:Class", imported only when chosen (a backend's heavy imports stay lazy).
BACKENDS: dict[str, str] = {
    "transformers": "rag.llm.transformers:TransformersGenerator",
    "llamacpp": "rag.llm.llamacpp:LlamaCppGenerator",
    "openai": "rag.llm.openai:OpenAIGenerator",
}


def make_generator(model: ModelSettings) -> Generator:
    """The backend named by `model.backend`, built with its settings (not yet loaded).

    Raises:
        ValueError: no backend has that name; the message lists the known ones.
    """
    target = BACKENDS.get(model.backend)
    if target is None:
        raise ValueError(f"Unknown LLM backend {model.backend!r}; choose one of: {', '.join(sorted(BACKENDS))}.")
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)(model)
