"""The LLM seam: `Generation`, the `Generator` protocol every backend implements, and model settings.

This module never imports a backend; `rag.llm.make_generator` finds one through the registry
in `rag/llm/__init__.py` (one line per backend, as txtai's `pipeline/llm` does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, Field, SecretStr

Message = dict[str, str]
"""One chat turn: {"role": "system" | "user" | "assistant", "content": "..."}."""

OnToken = Callable[[str], None]
"""Called with each text piece as soon as it is whole characters (Haystack's streaming_callback)."""


class LLMError(RuntimeError):
    """The model could not answer (server down, refused, timed out); the message says which and why."""


class Generation(BaseModel):
    """One finished completion, with the counts the benchmark reports."""

    text: str
    prompt_tokens: int
    new_tokens: int
    first_token_s: float
    total_s: float
    finish_reason: str = Field("stop", description="stop | length | timeout")


class ModelSettings(BaseModel):
    """Which LLM phrases answers: a small typed block, the same for every backend.

    `model` is a GGUF file, a Hugging Face model folder or a server's model name, depending on
    `backend`; None means the packaged SmolLM2-135M GGUF.
    """

    backend: str = Field("transformers", description="a name in rag.llm.BACKENDS")
    model: str | None = Field(None, description="GGUF path, HF folder or served model name; None = packaged SmolLM2")
    url: str | None = Field(None, description="base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1")
    api_key: SecretStr | None = Field(None, description="bearer token for that server; never logged or shown")
    dtype: str = Field("bfloat16", description="torch dtype on CPU: bfloat16 halves memory, same answers as fp32 (benchmarks)")
    threads: int = Field(2, ge=1, description="CPU threads for in-process backends")
    timeout_s: float = Field(20.0, gt=0, description="longest one generation may take before it is cut")
    batch: int = Field(8, ge=1, le=64, description="in-process: sequences decoded together, one forward pass per step")
    parallel: int | None = Field(None, ge=1, le=64, description="server backends: requests in flight at once; None = what the server reports, else 4")
    cache_dir: Path | None = Field(None, description="where converted weights are kept; None = ~/.cache/rag")


@runtime_checkable
class Generator(Protocol):
    """What the pipeline needs from an LLM backend.

    Settings come in the constructor; `warm_up()` loads the model (idempotent, thread-safe);
    `generate()` is called with data only and may be called from several threads.
    """

    def warm_up(self) -> None:
        """Load weights or check the server now, instead of on the first question."""
        ...

    def count_tokens(self, messages: list[Message]) -> int:
        """Prompt length in the model's own tokens (an estimate where a server cannot say)."""
        ...

    def generate(
        self,
        messages: list[Message],
        max_new_tokens: int,
        stop: Sequence[str] = ("\n",),
        on_token: OnToken | None = None,
    ) -> Generation:
        """Greedy completion of a chat; each piece goes to `on_token` as it arrives.

        Raises:
            LLMError: the backend could not produce an answer; the message says why.
        """
        ...
