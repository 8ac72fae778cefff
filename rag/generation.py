"""The local LLM (SmolLM2-135M-Instruct from its packaged GGUF): load once, prompt, stream tokens."""

from __future__ import annotations

import logging
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


class TransformersGenerator:
    """Greedy decoding with transformers on CPU.

    One model is shared by every thread; a lock serialises generation because a forward pass
    with its KV cache is not re-entrant, and two interleaved generations would only slow each
    other down on two cores anyway.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._model = None
        self._tokenizer = None
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
            path = convert_gguf(self.settings)
            self._tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, self.settings.dtype))
            self._model = model.eval()

    @property
    def tokenizer(self):
        self.warm_up()
        return self._tokenizer

    def encode(self, messages: list[dict[str, str]]):
        return self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )

    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        return int(self.encode(messages)["input_ids"].shape[1])

    def stream(self, messages: list[dict[str, str]], max_new_tokens: int) -> Iterator[str | Generation]:
        import torch
        from transformers import TextIteratorStreamer

        self.warm_up()
        inputs = self.encode(messages)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        streamer = TextIteratorStreamer(self._tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=self.settings.generation_timeout_s + 30)
        result: dict[str, object] = {}
        # The streamer's timeout is per token: it must not start while this request waits for
        # the lock behind other users' generations (each bounded by max_time).
        running = threading.Event()

        def run() -> None:
            try:
                with self._run_lock, torch.inference_mode():
                    running.set()
                    out = self._model.generate(
                        **inputs,
                        streamer=streamer,
                        max_new_tokens=max_new_tokens,
                        do_sample=False,
                        max_time=self.settings.generation_timeout_s,
                        pad_token_id=self._tokenizer.eos_token_id,
                        stop_strings=["\n"],  # answers are one line; stop instead of rambling
                        tokenizer=self._tokenizer,
                    )
                result["new_tokens"] = int(out.shape[1] - prompt_tokens)
            except Exception as err:  # surfaced to the caller below, never swallowed
                result["error"] = err
                streamer.end()
            finally:
                running.set()

        started = time.perf_counter()
        worker = threading.Thread(target=run, name="rag-generate", daemon=True)
        worker.start()
        running.wait()
        pieces: list[str] = []
        first = 0.0
        for piece in streamer:
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
            prompt_tokens=prompt_tokens,
            new_tokens=int(result.get("new_tokens", 0)),
            first_token_s=first or total,
            total_s=total,
        )


def make_generator(settings: Settings) -> Generator:
    """The backend named in settings (`RAG_BACKEND`)."""
    if settings.backend == "llamacpp":
        from .llamacpp import LlamaCppGenerator

        return LlamaCppGenerator(settings)
    return TransformersGenerator(settings)
