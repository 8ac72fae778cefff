"""Where a script's result goes: benchmarks/results/<date>-<commit>-<name>, so every number names its code."""

from __future__ import annotations

import platform
import subprocess
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


ROOT = RESULTS.parent.parent


def commit(mark_dirty: bool = True) -> str:
    """The checkout's short commit, with "-dirty" when tracked files have uncommitted changes
    (unless `mark_dirty` is False); "nogit" outside a git checkout."""
    short = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip() or "nogit"
    if not mark_dirty:
        return short
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return f"{short}-dirty" if dirty else short


def cpu_model() -> str:
    """The CPU's model name, for a result's header."""
    try:
        with open("/proc/cpuinfo") as fh:
            return next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), platform.processor())
    except OSError:
        return platform.processor()


def result_path(name: str) -> Path:
    """benchmarks/results/YYYY-MM-DD-<short commit>[-dirty]-<name>, e.g. 2026-11-28-ab12cd3-ablation.md."""
    RESULTS.mkdir(exist_ok=True)
    return RESULTS / f"{time.strftime('%Y-%m-%d')}-{commit()}-{name}"
