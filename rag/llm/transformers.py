"""The default LLM backend: a causal LM run by transformers on CPU, greedy, streamed through a callback.

`ModelSettings.model` picks the weights: None (the packaged SmolLM2-135M GGUF) or a .gguf file,
converted once to safetensors and cached (rag/llm/gguf.py), or a Hugging Face model folder
(config.json, weights, a tokenizer with a chat template), loaded as it is.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from ..env import apply_env_defaults
from .base import Generation, LLMError, Message, ModelSettings, OnToken
from .gguf import convert_in_subprocess

log = logging.getLogger(__name__)


def model_folder(model: ModelSettings) -> Path:
    """The folder transformers loads: `model.model` when it is one, else the converted GGUF.

    Raises:
        FileNotFoundError: `model.model` is neither a model folder nor a .gguf file.
    """
    if model.model is not None:
        path = Path(model.model).expanduser()
        if path.is_dir():
            if not (path / "config.json").exists():
                raise FileNotFoundError(f"RAG_LLM_MODEL={model.model!r} is a folder without config.json: not a Hugging Face model")
            return path
    return convert_in_subprocess(model)


class TransformersGenerator:
    """Greedy decoding with transformers on CPU, by a plain forward-pass loop.

    The loop (instead of `model.generate`) saves the per-step bookkeeping of generate and stops
    on the first token that holds a stop string (answers are one line). `prefix_cache=True`
    starts every prompt from a saved KV cache of the fixed system turn (~70 ms less prefill);
    it is off by default because in bfloat16 the separately computed prefix changed 1 answer in
    6 (for the worse). Each choice is measured in benchmarks/RESULTS.md.

    One model is shared by every thread; a lock serialises generation because a forward pass
    with its KV cache is not re-entrant, and two interleaved generations would only slow each
    other down on two cores anyway.

    Args:
        model: which weights, dtype, threads and time limit.
        prefix_cache: reuse the system turn's KV cache across prompts (see above).
        ignore_eos: decode through end-of-sequence, for measurements that need exactly
            `max_new_tokens` tokens (benchmarks/ab_decode.py).
    """

    def __init__(self, model: ModelSettings, prefix_cache: bool = False, ignore_eos: bool = False) -> None:
        self.settings = model
        self.prefix_cache = prefix_cache
        self.ignore_eos = ignore_eos
        self._model = None
        self._tokenizer = None
        self._newline_ids: frozenset[int] = frozenset()
        self._eos_ids: frozenset[int] = frozenset()
        self._prefix: tuple[tuple[int, ...], object] | None = None  # (token ids, KV cache)
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    def warm_up(self) -> None:
        """Load the weights now (and convert the GGUF if this is the first start).

        Raises:
            FileNotFoundError: RAG_LLM_MODEL names neither a model folder nor a .gguf file.
            ValueError: the model's tokenizer has no chat template.
        """
        if self._model is not None:
            return
        with self._load_lock:
            if self._model is not None:
                return
            apply_env_defaults()  # before torch loads
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            torch.set_num_threads(self.settings.threads)
            path = model_folder(self.settings)
            tokenizer = AutoTokenizer.from_pretrained(path)
            if not tokenizer.chat_template:
                # a wrong model is a setting to fix, not an outage to answer around
                raise ValueError(f"{path} has no chat template in its tokenizer: use an instruction-tuned (chat) model")
            model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, self.settings.dtype))
            vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
            self._newline_ids = frozenset(i for i, t in enumerate(vocab) if t and ("\n" in t or "\u010a" in t))  # byte-level BPE spells \n as U+010A
            self._eos_ids = frozenset(_as_list(model.generation_config.eos_token_id)) | {tokenizer.eos_token_id}
            self._tokenizer = tokenizer
            self._model = model.eval()

    @property
    def tokenizer(self):
        """The loaded tokenizer (loads the model on first use)."""
        self.warm_up()
        return self._tokenizer

    @property
    def model(self):
        """The loaded torch model, for measurements (benchmarks/generation_levers.py)."""
        self.warm_up()
        return self._model

    def encode(self, messages: list[Message]) -> list[int]:
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(ids["input_ids"])

    def count_tokens(self, messages: list[Message]) -> int:
        return len(self.encode(messages))

    def _start_cache(self, messages: list[Message], ids: list[int]):
        """A KV cache already holding the system turn, and how many of `ids` it covers.

        The system prompt is the same for every question, so its keys and values are computed
        once and copied (a copy is ~1 ms; recomputing ~80 tokens is ~60 ms on two cores).
        """
        import copy

        from transformers import DynamicCache

        if not self.prefix_cache or not messages or messages[0].get("role") != "system":
            return DynamicCache(), 0
        if self._prefix is None or not _starts_with(ids, self._prefix[0]):
            prefix = self._tokenizer.apply_chat_template(messages[:1], tokenize=True, return_dict=True)["input_ids"]
            prefix = tuple(prefix)
            if not _starts_with(ids, prefix) or len(prefix) >= len(ids):
                return DynamicCache(), 0
            import torch

            cache = DynamicCache()
            with torch.inference_mode():
                self._model(input_ids=torch.tensor([prefix]), past_key_values=cache, use_cache=True, logits_to_keep=1)
            self._prefix = (prefix, cache)
        return copy.deepcopy(self._prefix[1]), len(self._prefix[0])

    def _decode(self, messages: list[Message], ids: list[int], max_new_tokens: int, stop: Sequence[str], out: queue.Queue) -> tuple[int, str]:
        """Greedy loop; puts text pieces on `out` as soon as they are whole characters.

        Returns the number of new tokens and why it ended (stop | length | timeout).
        """
        import torch

        deadline = time.perf_counter() + self.settings.timeout_s
        stop_ids = (self._newline_ids if "\n" in stop else frozenset()) | (frozenset() if self.ignore_eos else self._eos_ids)
        stop_strings = [s for s in stop if s != "\n"]
        new: list[int] = []
        shown = ""
        reason = "length"
        with torch.inference_mode():
            cache, done = self._start_cache(messages, ids)
            step = torch.tensor([ids[done:]])
            for _ in range(max_new_tokens):
                logits = self._model(input_ids=step, past_key_values=cache, use_cache=True, logits_to_keep=1).logits
                token = int(logits[0, -1].argmax())
                new.append(token)
                text = self._tokenizer.decode(new, skip_special_tokens=True)
                if len(text) > len(shown) and not text.endswith("\ufffd"):  # no half a UTF-8 character
                    out.put(text[len(shown):])
                    shown = text
                if token in stop_ids or any(s in text for s in stop_strings):
                    reason = "stop"
                    break
                if time.perf_counter() > deadline:
                    reason = "timeout"
                    break
                step = torch.tensor([[token]])
        return len(new), reason

    def generate(
        self, messages: list[Message], max_new_tokens: int, stop: Sequence[str] = ("\n",), on_token: OnToken | None = None
    ) -> Generation:
        """Greedy completion; pieces go to `on_token` (in this thread) as they are decoded.

        Raises:
            LLMError: the model failed while decoding.
        """
        self.warm_up()
        ids = self.encode(messages)
        pieces_q: queue.Queue = queue.Queue()
        result: dict[str, object] = {}
        end = object()
        # The per-piece timeout below must not start while this request waits for the lock
        # behind other users' generations (each bounded by timeout_s).
        running = threading.Event()

        def run() -> None:
            try:
                with self._run_lock:
                    running.set()
                    result["new_tokens"], result["reason"] = self._decode(messages, ids, max_new_tokens, stop, pieces_q)
            except Exception as err:  # surfaced to the caller below, never swallowed
                result["error"] = err
            finally:
                running.set()
                pieces_q.put(end)

        # Decoding runs on its own thread: in the caller's thread it was 20x slower per token
        # (benchmarks/RESULTS.md, "decoding in the caller's thread").
        started = time.perf_counter()
        worker = threading.Thread(target=run, name="rag-generate", daemon=True)
        worker.start()
        running.wait()
        pieces: list[str] = []
        first = 0.0
        while (piece := pieces_q.get(timeout=self.settings.timeout_s + 30)) is not end:
            if not piece:
                continue
            if not first:
                first = time.perf_counter() - started
            pieces.append(piece)
            if on_token is not None:
                on_token(piece)
        worker.join()
        if "error" in result:
            raise LLMError(f"generation failed: {result['error']}") from result["error"]  # type: ignore[arg-type]
        total = time.perf_counter() - started
        return Generation(
            text="".join(pieces),
            prompt_tokens=len(ids),
            new_tokens=int(result.get("new_tokens", 0)),  # type: ignore[call-overload]
            first_token_s=first or total,
            total_s=total,
            finish_reason=str(result.get("reason", "stop")),
        )


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [int(value)]


def _starts_with(ids: list[int], prefix: tuple[int, ...]) -> bool:
    return len(ids) >= len(prefix) and tuple(ids[: len(prefix)]) == prefix
