"""rag: cited answers from a folder of articles, offline, on a laptop CPU."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Settings
    from .pipeline import Pipeline, answer
    from .types import Answer, Citation

__all__ = ["answer", "Answer", "Citation", "Settings", "Pipeline"]

# `import rag` stays cheap (no torch, faiss or bm25s): each name is imported on first use.
_HOME = {"answer": "pipeline", "Pipeline": "pipeline", "Answer": "types", "Citation": "types", "Settings": "config"}


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'rag' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value
    return value
