"""The local LLM (SmolLM2-135M-Instruct from its packaged GGUF): load once, prompt, stream tokens."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel

from .config import Settings

log = logging.getLogger(__name__)



class Generation(BaseModel):
    """One finished completion, with the counts the benchmark reports."""

    text: str
    prompt_tokens: int
    new_tokens: int
    first_token_s: float
    total_s: float


class Generator(Protocol):
    """What the pipeline needs from an LLM backend."""

    def count_tokens(self, messages: list[dict[str, str]]) -> int: ...

    def stream(self, messages: list[dict[str, str]], max_new_tokens: int) -> Iterator[str]:
        """Yield text pieces as they are generated; the last item is a Generation."""
        ...


def cached_model_dir(settings: Settings) -> Path:
    """Where the de-quantised weights of the GGUF are cached (one folder per GGUF and dtype)."""
    gguf = settings.gguf_path
    stamp = f"{gguf.stat().st_size}-{int(gguf.stat().st_mtime)}"
    return settings.cache_dir / f"{gguf.stem}-{settings.dtype}-{stamp}"


def convert_gguf(settings: Settings) -> Path:
    """De-quantise the packaged GGUF once (~20 s) and cache it as safetensors (~2 s to load).

    The conversion is written to a temporary folder and renamed into place, so an interrupted
    first start leaves no half-written cache behind.
    """
    target = cached_model_dir(settings)
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = settings.gguf_path
    print(f"[rag] First start: converting {gguf.name} to {settings.dtype} safetensors (once, ~20 s)...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A GGUF-loaded model refuses save_pretrained until its quantizer is detached.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model = model.to(getattr(torch, settings.dtype))
    tmp = target.with_name(target.name + f".tmp-{threading.get_ident()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(target)
    except OSError:  # another process won the race; use its copy
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"[rag] Cached converted weights in {target} ({time.perf_counter() - started:.0f} s).", file=sys.stderr, flush=True)
    return target


def convert_in_subprocess(settings: Settings) -> Path:
    """convert_gguf() in a child process, so this one never holds the de-quantised copy.

    Converting in-process left ~290 MB more resident for the life of the server (the fp32
    de-quantised model is freed to the allocator, not to the OS); see benchmarks/memory_check.py.
    """
    target = cached_model_dir(settings)
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    import os
    import subprocess

    env = dict(os.environ)
    here = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = here + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    code = "import sys; from rag.config import Settings; from rag.generation import convert_gguf; convert_gguf(Settings.model_validate_json(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", code, settings.model_dump_json()], env=env)  # progress goes to our stderr
    if done.returncode != 0:
        raise RuntimeError(f"converting {settings.gguf_path.name} failed (exit {done.returncode}); see the messages above")
    return target


class TransformersGenerator:
    """Greedy decoding with transformers on CPU, by a plain forward-pass loop.

    The loop (instead of `model.generate`) saves the per-step bookkeeping of generate and stops
    on the first token that holds a newline (answers are one line). `prefix_cache=True` starts
    every prompt from a saved KV cache of the fixed system turn (~70 ms less prefill); it is
    off by default because in bfloat16 the separately computed prefix changed 1 answer in 6
    (for the worse). Each choice is measured in benchmarks/RESULTS.md.

    One model is shared by every thread; a lock serialises generation because a forward pass
    with its KV cache is not re-entrant, and two interleaved generations would only slow each
    other down on two cores anyway.
    """

    def __init__(self, settings: Settings, prefix_cache: bool = False) -> None:
        self.settings = settings
        self.prefix_cache = prefix_cache
        self._model = None
        self._tokenizer = None
        self._stop_ids: frozenset[int] = frozenset()
        self._prefix: tuple[tuple[int, ...], object] | None = None  # (token ids, KV cache)
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    def warm_up(self) -> None:
        """Load the weights now (and convert the GGUF if this is the first start)."""
        if self._model is not None:
            return
        with self._load_lock:
            if self._model is not None:
                return
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            torch.set_num_threads(self.settings.threads)
            path = convert_in_subprocess(self.settings)
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, self.settings.dtype))
            vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
            newline = {i for i, t in enumerate(vocab) if t and ("\n" in t or "\u010a" in t)}  # byte-level BPE spells \n as U+010A
            self._stop_ids = frozenset(newline | set(_as_list(model.generation_config.eos_token_id)) | {tokenizer.eos_token_id})
            self._tokenizer = tokenizer
            self._model = model.eval()

    @property
    def tokenizer(self):
        self.warm_up()
        return self._tokenizer

    def encode(self, messages: list[dict[str, str]]) -> list[int]:
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        return list(ids["input_ids"])

    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        return len(self.encode(messages))

    def _start_cache(self, messages: list[dict[str, str]], ids: list[int]):
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

    def _decode(self, messages: list[dict[str, str]], ids: list[int], max_new_tokens: int, out: "queue.Queue") -> int:
        """Greedy loop; puts text pieces on `out` as soon as they are whole characters."""
        import torch

        deadline = time.perf_counter() + self.settings.generation_timeout_s
        new: list[int] = []
        shown = ""
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
                if token in self._stop_ids or time.perf_counter() > deadline:
                    break
                step = torch.tensor([[token]])
        return len(new)

    def stream(self, messages: list[dict[str, str]], max_new_tokens: int) -> Iterator[str | Generation]:
        import queue

        self.warm_up()
        ids = self.encode(messages)
        pieces_q: queue.Queue = queue.Queue()
        result: dict[str, object] = {}
        end = object()
        # The per-piece timeout below must not start while this request waits for the lock
        # behind other users' generations (each bounded by generation_timeout_s).
        running = threading.Event()

        def run() -> None:
            try:
                with self._run_lock:
                    running.set()
                    result["new_tokens"] = self._decode(messages, ids, max_new_tokens, pieces_q)
            except Exception as err:  # surfaced to the caller below, never swallowed
                result["error"] = err
            finally:
                running.set()
                pieces_q.put(end)

        started = time.perf_counter()
        worker = threading.Thread(target=run, name="rag-generate", daemon=True)
        worker.start()
        running.wait()
        pieces: list[str] = []
        first = 0.0
        while (piece := pieces_q.get(timeout=self.settings.generation_timeout_s + 30)) is not end:
            if not piece:
                continue
            if not first:
                first = time.perf_counter() - started
            pieces.append(piece)
            yield piece
        worker.join()
        if "error" in result:
            raise RuntimeError(f"generation failed: {result['error']}") from result["error"]  # type: ignore[arg-type]
        total = time.perf_counter() - started
        yield Generation(
            text="".join(pieces),
            prompt_tokens=len(ids),
            new_tokens=int(result.get("new_tokens", 0)),
            first_token_s=first or total,
            total_s=total,
        )


def _as_list(value) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [int(value)]


def _starts_with(ids: list[int], prefix: tuple[int, ...]) -> bool:
    return len(ids) >= len(prefix) and tuple(ids[: len(prefix)]) == prefix


def make_generator(settings: Settings) -> Generator:
    """The backend named in settings (`RAG_BACKEND`)."""
    if settings.backend == "llamacpp":
        from .llamacpp import LlamaCppGenerator

        return LlamaCppGenerator(settings)
    return TransformersGenerator(settings)
