"""Optional LLM backend: a GGUF run by llama.cpp (`pip install -e ".[llamacpp]"`), `RAG_LLM_BACKEND=llamacpp`.

It reads the quantised file directly (no conversion, no torch on the hot path) and reuses the
KV cache of the previous prompt's common prefix, so the fixed system prompt is not recomputed
between questions (except when the whole prompt repeats: see generate()).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from .base import Generation, LLMError, Message, ModelSettings, OnToken
from .gguf import gguf_path

INSTALL_HINT = 'llama-cpp-python is not installed; run: pip install -e ".[llamacpp]" (a ~5 min source build)'


class LlamaCppGenerator:
    """Greedy decoding with llama.cpp on CPU.

    The chat template is the one stored in the GGUF, rendered here so that count_tokens()
    counts exactly the prompt that generate() feeds the model.

    Args:
        model: which GGUF (None = the packaged SmolLM2), threads and time limit.
        n_ctx: the context window in tokens; prompt + answer must fit.
    """

    def __init__(self, model: ModelSettings, n_ctx: int = 2048) -> None:
        self.settings = model
        self.n_ctx = n_ctx
        self._llm = None
        self._format = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    def warm_up(self) -> None:
        """Load the GGUF (well under a second: it is memory-mapped).

        Raises:
            ImportError: llama-cpp-python is not installed.
            ValueError: the GGUF has no chat template.
        """
        if self._llm is not None:
            return
        with self._load_lock:
            if self._llm is not None:
                return
            try:
                from llama_cpp import Llama
                from llama_cpp.llama_chat_format import Jinja2ChatFormatter
            except ImportError as err:
                raise ImportError(INSTALL_HINT) from err
            path = gguf_path(self.settings)
            llm = Llama(
                model_path=str(path),
                n_ctx=self.n_ctx,
                n_threads=self.settings.threads,
                n_threads_batch=self.settings.threads,
                n_batch=512,
                verbose=False,
            )
            meta = llm.metadata
            template = meta.get("tokenizer.chat_template")
            if not template:
                # a wrong model is a setting to fix, not an outage to answer around
                raise ValueError(f"{path.name} carries no chat template: use an instruction-tuned (chat) model")

            def token_text(key: str) -> str:
                tid = meta.get(key)
                return llm.detokenize([int(tid)], special=True).decode("utf-8", "replace") if tid is not None else ""

            self._format = Jinja2ChatFormatter(
                template=template,
                eos_token=token_text("tokenizer.ggml.eos_token_id"),
                bos_token=token_text("tokenizer.ggml.bos_token_id"),
            )
            self._llm = llm

    def _prompt(self, messages: list[Message]) -> list[int]:
        self.warm_up()
        text = self._format(messages=messages).prompt  # type: ignore[misc]
        return self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)  # type: ignore[union-attr]

    def count_tokens(self, messages: list[Message]) -> int:
        return len(self._prompt(messages))

    def generate(
        self, messages: list[Message], max_new_tokens: int, stop: Sequence[str] = ("\n",), on_token: OnToken | None = None
    ) -> Generation:
        """Greedy completion; pieces go to `on_token` as llama.cpp yields them.

        Raises:
            LLMError: the prompt does not fit the context window.
        """
        tokens = self._prompt(messages)
        if len(tokens) + max_new_tokens > self.n_ctx:
            raise LLMError(f"The prompt is {len(tokens)} tokens; the context holds {self.n_ctx}.")
        started = time.perf_counter()
        pieces: list[str] = []
        first = 0.0
        reason = "stop"
        with self._run_lock:
            llm = self._llm
            if llm.n_tokens >= len(tokens) and list(llm.input_ids[: len(tokens)]) == tokens:  # type: ignore[union-attr]
                # The same prompt again: llama.cpp would keep all of it and re-run only its last
                # token, alone, and a 1-token batch takes another matmul path whose rounding can
                # change a greedy answer. Start over, so an answer never depends on the last one.
                llm.reset()  # type: ignore[union-attr]
            for chunk in self._llm.create_completion(  # type: ignore[union-attr]
                tokens,
                max_tokens=max_new_tokens,
                temperature=0.0,  # greedy, as the transformers backend
                repeat_penalty=1.0,
                stop=list(stop),  # answers are one line; stop instead of rambling
                stream=True,
            ):
                choice = chunk["choices"][0]
                reason = choice.get("finish_reason") or reason
                piece = choice["text"]
                if not piece:
                    continue
                if not first:
                    first = time.perf_counter() - started
                pieces.append(piece)
                if on_token is not None:
                    on_token(piece)
                if time.perf_counter() - started > self.settings.timeout_s:
                    reason = "timeout"
                    break
            # the context now holds the prompt and every sampled token but the last
            new_tokens = min(max_new_tokens, self._llm.n_tokens - len(tokens) + 1)  # type: ignore[union-attr]
        total = time.perf_counter() - started
        return Generation(
            text="".join(pieces),
            prompt_tokens=len(tokens),
            new_tokens=new_tokens,
            first_token_s=first or total,
            total_s=total,
            finish_reason=reason,
        )
