"""Embedder cold load: sentence-transformers (shipped) vs transformers alone (light_embedder.py).

    python -m benchmarks.embedder_load            # same vectors? + one timed fresh-process run each
    python -m benchmarks.embedder_load --child st|light   # one cold load + first encode, prints JSON

Whole-process A/B timings of the two `--child` commands are in RESULTS.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(kind: str) -> None:
    t0 = time.perf_counter()
    from rag.config import Settings

    path = Settings().embedding_path
    t_cfg = time.perf_counter()
    if kind == "st":
        from sentence_transformers import SentenceTransformer

        t_imp = time.perf_counter()
        model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    else:
        from benchmarks.light_embedder import MiniLM

        t_imp = time.perf_counter()
        model = MiniLM(path)
    t_load = time.perf_counter()
    model.encode(["How much did Meta offer?"])
    t_enc = time.perf_counter()
    import sys as _s

    heavy = sorted(m for m in ("sklearn", "scipy", "pandas", "sentence_transformers") if m in _s.modules)
    print(json.dumps({"kind": kind, "import_s": round(t_imp - t_cfg, 3), "load_s": round(t_load - t_imp, 3),
                      "first_encode_s": round(t_enc - t_load, 3), "total_s": round(t_enc - t0, 3), "heavy_modules": heavy}))


def compare() -> None:
    from sentence_transformers import SentenceTransformer

    from benchmarks.light_embedder import MiniLM
    from rag.config import Settings
    from rag.index.corpus import load_corpus

    s = Settings()
    texts = [d.text for d in load_corpus(s.corpus_dir, s.max_file_bytes).documents]  # type: ignore[arg-type]
    texts = [t for doc in texts for t in doc.split("\n") if t.strip()] + ["", "emoji 🚀 test", "x " * 600]
    a = SentenceTransformer(str(s.embedding_path), device="cpu", local_files_only=True).encode(texts, normalize_embeddings=True)
    b = MiniLM(s.embedding_path).encode(texts)
    cos = (a * b).sum(1)
    print(f"{len(texts)} texts (paragraphs, empty, emoji, over-long): min cosine {cos.min():.6f}, max abs diff {abs(a - b).max():.2e}")
    for kind in ("st", "light"):
        out = subprocess.run([sys.executable, "-m", "benchmarks.embedder_load", "--child", kind], cwd=ROOT, capture_output=True, text=True, check=True)
        print(out.stdout.strip())


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(sys.argv[2])
    else:
        compare()
