"""The default LLM backend: a causal LM run by transformers on CPU, greedy, streamed through a callback.

`ModelSettings.model` picks the weights: None (the packaged SmolLM2-135M GGUF) or a .gguf file,
converted once to safetensors and cached (rag/llm/gguf.py), or a Hugging Face model folder
(config.json, weights, a tokenizer with a chat template), loaded as it is.
"""

from __future__ import annotations

import atexit
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


_STOP = object()  # put on the decoder's queue by close()


class _Sequence:
    """One generation in the decoder's batch: its prompt, what it has decoded, where its text goes."""

    def __init__(self, ids: list[int], max_new_tokens: int, stop_ids: frozenset[int], stop_strings: list[str], timeout_s: float) -> None:
        self.ids = ids
        self.max_new_tokens = max_new_tokens
        self.stop_ids = stop_ids
        self.stop_strings = stop_strings
        self.timeout_s = timeout_s
        self.pieces: queue.Queue = queue.Queue()
        self.cancel = threading.Event()  # set by the caller whose client went away
        self.started = threading.Event()  # the decoder took it: its time limit runs from here
        self.new: list[int] = []
        self.shown = ""
        self.reason = "length"
        self.deadline = 0.0


class TransformersGenerator:
    """Greedy decoding with transformers on CPU, batched across concurrent questions.

    One decoder thread owns the model. Every `generate()` call hands it a sequence; the decoder
    runs one forward pass per step for all active sequences (left-padded, each with its own
    positions), lets a newcomer join at the next step (its prompt is prefilled, and its KV cache
    padded on the left to the batch's length) and drops a sequence the moment it stops, so a
    short answer never waits for a long one. On two cores, 8 sequences decode ~4x as many tokens
    per second as 8 one after another (benchmarks/batched_decode.py). In bfloat16 a padded
    sequence can round differently from the same prompt alone, so a batched answer may word a
    fact differently; in float32 the texts are identical.

    The loop (instead of `model.generate`) saves the per-step bookkeeping of generate and stops
    a sequence on the first token that holds a stop string (answers are one line).
    `prefix_cache=True` starts every prompt from a saved KV cache of the fixed system turn (~70 ms
    less prefill; one sequence at a time); it is off by default because in bfloat16 the
    separately computed prefix changed 1 answer in 6 (for the worse). Each choice is measured in
    benchmarks/RESULTS.md.

    Args:
        model: which weights, dtype, threads, batch size and time limit.
        prefix_cache: reuse the system turn's KV cache across prompts (see above).
        ignore_eos: decode through end-of-sequence, for measurements that need exactly
            `max_new_tokens` tokens (benchmarks/ab_decode.py).
    """

    def __init__(self, model: ModelSettings, prefix_cache: bool = False, ignore_eos: bool = False) -> None:
        self.settings = model
        self.prefix_cache = prefix_cache
        self.ignore_eos = ignore_eos
        self.max_batch = 1 if prefix_cache else model.batch
        self._model = None
        self._tokenizer = None
        self._newline_ids: frozenset[int] = frozenset()
        self._eos_ids: frozenset[int] = frozenset()
        self._prefix: tuple[tuple[int, ...], object] | None = None  # (token ids, KV cache)
        self._load_lock = threading.Lock()
        self._waiting: queue.Queue[_Sequence] = queue.Queue()
        self._decoder: threading.Thread | None = None
        self.peak = 0  # the most sequences one step has decoded together (for tests and measurements)

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

    def _start_cache(self, ids: list[int]):
        """A KV cache already holding the system turn, and how many of `ids` it covers.

        The system prompt is the same for every question, so its keys and values are computed
        once and copied (a copy is ~1 ms; recomputing ~80 tokens is ~60 ms on two cores).
        """
        import copy

        import torch
        from transformers import DynamicCache

        if self._prefix is None or not _starts_with(ids, self._prefix[0]):
            cut = self._system_turn_length(ids)
            if not cut or cut >= len(ids):
                return DynamicCache(), 0
            prefix = tuple(ids[:cut])
            cache = DynamicCache()
            with torch.inference_mode():
                self._model(input_ids=torch.tensor([prefix]), past_key_values=cache, use_cache=True, logits_to_keep=1)
            self._prefix = (prefix, cache)
        return copy.deepcopy(self._prefix[1]), len(self._prefix[0])

    def _system_turn_length(self, ids: list[int]) -> int:
        """Tokens up to the end of the first turn (its end-of-turn token included), 0 if none."""
        end = next((n for n, i in enumerate(ids) if i in self._eos_ids), -1)
        return end + 1

    def _prefill(self, batch: list[_Sequence]):
        """Run the prompts of `batch` together: (cache, attention mask, positions, last logits)."""
        import torch
        from transformers import DynamicCache

        if self.prefix_cache and len(batch) == 1:
            cache, done = self._start_cache(batch[0].ids)
            rest = batch[0].ids[done:]
            mask = torch.ones(1, len(batch[0].ids), dtype=torch.long)
            positions = torch.arange(done, len(batch[0].ids)).unsqueeze(0)
            logits = self._model(input_ids=torch.tensor([rest]), attention_mask=mask, position_ids=positions,
                                 past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
            return cache, mask, positions[:, -1:], logits
        width = max(len(s.ids) for s in batch)
        pad = self._tokenizer.pad_token_id if self._tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([[pad] * (width - len(s.ids)) + s.ids for s in batch])
        mask = torch.tensor([[0] * (width - len(s.ids)) + [1] * len(s.ids) for s in batch])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        logits = self._model(input_ids=ids, attention_mask=mask, position_ids=positions,
                             past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        return cache, mask, positions[:, -1:], logits

    def _decode_forever(self) -> None:
        """The decoder thread: take newcomers, step every active sequence, drop finished ones."""
        import torch

        active: list[_Sequence] = []
        cache = mask = positions = logits = None
        while True:
            try:
                joining = [] if active else [self._waiting.get()]
                while len(active) + len(joining) < self.max_batch:
                    joining.append(self._waiting.get_nowait())
            except queue.Empty:
                pass
            if _STOP in joining:  # the process is exiting (close())
                for s in active + [s for s in joining if s is not _STOP]:
                    s.started.set()
                    s.pieces.put(LLMError("the process is shutting down"))
                return
            for s in [s for s in joining if s.cancel.is_set()]:
                s.started.set()
                s.pieces.put(None)
            joining = [s for s in joining if not s.cancel.is_set()]
            try:
                with torch.inference_mode():
                    if joining:
                        now = time.perf_counter()
                        for s in joining:
                            s.deadline = now + s.timeout_s
                            s.started.set()
                        parts = self._prefill(joining)
                        if active:
                            cache, mask, positions, logits = _join((cache, mask, positions, logits), parts)
                        else:
                            cache, mask, positions, logits = parts
                        active += joining
                    self.peak = max(self.peak, len(active))
                    if not active:
                        continue
                    tokens = logits.argmax(-1)
                    keep = [n for n, s in enumerate(active) if not self._step(s, int(tokens[n]))]
                    if len(keep) < len(active):
                        for n, s in enumerate(active):
                            if n not in keep:
                                s.pieces.put(None)  # finished: the caller's loop ends
                        active = [active[n] for n in keep]
                        if not active:
                            cache = mask = positions = logits = None
                            continue
                        index = torch.tensor(keep)
                        cache.batch_select_indices(index)
                        mask, positions, tokens = mask[index], positions[index], tokens[index]
                    mask = torch.cat([mask, torch.ones(len(active), 1, dtype=mask.dtype)], dim=1)
                    positions = positions + 1
                    logits = self._model(input_ids=tokens.unsqueeze(1), attention_mask=mask, position_ids=positions,
                                         past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
            except Exception as err:  # every sequence of the batch fails with the reason; the decoder goes on
                log.exception("generation failed")
                for s in {id(s): s for s in active + joining}.values():
                    s.reason = "error"
                    s.started.set()
                    s.pieces.put(err)
                active, cache, mask, positions, logits = [], None, None, None, None

    def _step(self, s: _Sequence, token: int) -> bool:
        """Add `token` to `s` and hand over its new text; True when `s` has finished."""
        if s.cancel.is_set():
            s.reason = "cancelled"
            return True
        s.new.append(token)
        text = self._tokenizer.decode(s.new, skip_special_tokens=True)
        if len(text) > len(s.shown) and not text.endswith("\ufffd"):  # no half a UTF-8 character
            s.pieces.put(text[len(s.shown):])
            s.shown = text
        if token in s.stop_ids or any(stop in text for stop in s.stop_strings):
            s.reason = "stop"
            return True
        if len(s.new) >= s.max_new_tokens:
            s.reason = "length"
            return True
        if time.perf_counter() > s.deadline:
            s.reason = "timeout"
            return True
        return False

    def _submit(self, s: _Sequence) -> None:
        with self._load_lock:
            if self._decoder is None or not self._decoder.is_alive():
                # Decoding runs on its own thread: in the caller's thread it was 20x slower per
                # token (benchmarks/RESULTS.md, "decoding in the caller's thread").
                self._decoder = threading.Thread(target=self._decode_forever, name="rag-decoder", daemon=True)
                self._decoder.start()
                atexit.register(self.close)
        self._waiting.put(s)

    def close(self) -> None:
        """Stop the decoder thread (at exit: a daemon thread left inside torch made the process
        abort on the way out, "terminate called without an active exception", 2 runs in 3)."""
        decoder = self._decoder
        if decoder is not None and decoder.is_alive():
            self._waiting.put(_STOP)  # type: ignore[arg-type]
            decoder.join(timeout=10)

    def generate(
        self, messages: list[Message], max_new_tokens: int, stop: Sequence[str] = ("\n",), on_token: OnToken | None = None
    ) -> Generation:
        """Greedy completion; pieces go to `on_token` (in this thread) as they are decoded.

        If `on_token` raises (the client went away), the sequence leaves the batch at the next
        step and the exception propagates.

        Raises:
            LLMError: the model failed while decoding.
        """
        self.warm_up()
        ids = self.encode(messages)
        stop_ids = (self._newline_ids if "\n" in stop else frozenset()) | (frozenset() if self.ignore_eos else self._eos_ids)
        s = _Sequence(ids, max_new_tokens, stop_ids, [x for x in stop if x != "\n"], self.settings.timeout_s)
        self._submit(s)
        # The time limit runs from the moment the decoder takes the sequence, not while it waits
        # behind a full batch; each piece then comes within a step.
        s.started.wait()
        started = time.perf_counter()
        pieces: list[str] = []
        first = 0.0
        try:
            while (piece := s.pieces.get(timeout=self.settings.timeout_s + 30)) is not None:
                if isinstance(piece, Exception):
                    raise LLMError(f"generation failed: {piece}") from piece
                if not piece:
                    continue
                if not first:
                    first = time.perf_counter() - started
                pieces.append(piece)
                if on_token is not None:
                    on_token(piece)
        except BaseException:
            s.cancel.set()  # frees its place in the batch at the next step
            raise
        total = time.perf_counter() - started
        return Generation(
            text="".join(pieces),
            prompt_tokens=len(ids),
            new_tokens=len(s.new),
            first_token_s=first or total,
            total_s=total,
            finish_reason=s.reason,
        )


def _join(batch, joining):
    """One batch from two: caches, masks and logits of `joining` appended after `batch`'s rows,
    the shorter side padded on the left (masked, so it changes nothing)."""
    import torch
    import torch.nn.functional as F

    cache, mask, positions, logits = batch
    cache2, mask2, positions2, logits2 = joining
    width = max(mask.shape[1], mask2.shape[1])

    def left(t, n):  # pad the sequence axis (-2 for keys/values, -1 for masks) on the left
        return t if n == 0 else F.pad(t, (0, 0, n, 0)) if t.dim() == 4 else F.pad(t, (n, 0))

    a, b = width - mask.shape[1], width - mask2.shape[1]
    for mine, theirs in zip(cache.layers, cache2.layers):
        mine.keys = torch.cat([left(mine.keys, a), left(theirs.keys, b)])
        mine.values = torch.cat([left(mine.values, a), left(theirs.values, b)])
    return cache, torch.cat([left(mask, a), left(mask2, b)]), torch.cat([positions, positions2]), torch.cat([logits, logits2])


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [int(value)]


def _starts_with(ids: list[int], prefix: tuple[int, ...]) -> bool:
    return len(ids) >= len(prefix) and tuple(ids[: len(prefix)]) == prefix
