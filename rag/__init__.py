"""rag: cited answers from a folder of articles, offline, on a laptop CPU."""

from .config import Settings
from .pipeline import Pipeline, answer
from .types import Answer, Citation

__all__ = ["answer", "Answer", "Citation", "Settings", "Pipeline"]
