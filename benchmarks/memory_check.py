"""Resident memory with both models loaded, and whether a first-start conversion stays resident.

    python -m benchmarks.memory_check

Runs two fresh processes: (1) the usual start from the converted cache, (2) a first start
that converts the GGUF into an empty temporary cache. Each warms the whole pipeline up and
answers one question, then reports its current and peak RSS. If (2) ends with more resident
memory than (1), the de-quantised copy is being held.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys
import psutil
from rag.pipeline import Pipeline
p = Pipeline()
p.warm_up()
p.answer("How much money is Meta offering AI researchers?")
import gc; gc.collect()
gen = p.generator
seen = {}
for t in (gen.model.state_dict().values() if hasattr(gen, "model") else []):
    seen[t.data_ptr()] = t.numel() * t.element_size()  # tied embeddings are one tensor
params = sum(seen.values())
print(json.dumps({"rss_mb": round(psutil.Process().memory_info().rss / 2**20), "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "llm_weights_mb": round(params / 2**20)}))
"""


def child(cache_dir: str | None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if cache_dir:
        env["RAG_CACHE_DIR"] = cache_dir
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    print("from the converted cache:", json.dumps(child(None)))
    with tempfile.TemporaryDirectory() as tmp:
        print("first start (converts): ", json.dumps(child(tmp)))


if __name__ == "__main__":
    main()
