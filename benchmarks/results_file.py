"""Where a script's result goes: benchmarks/results/<date>-<commit>-<name>, so every number names its code."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def result_path(name: str) -> Path:
    """benchmarks/results/YYYY-MM-DD-<short commit>[-dirty]-<name>, e.g. 2026-11-28-ab12cd3-ablation.md."""
    root = RESULTS.parent.parent
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip() or "nogit"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True).stdout.strip()
    RESULTS.mkdir(exist_ok=True)
    return RESULTS / f"{time.strftime('%Y-%m-%d')}-{commit}{'-dirty' if dirty else ''}-{name}"
