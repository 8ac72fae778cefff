"""Time the question embedding right after a generation (and once more), and seconds per token.

    python benchmarks/omp_stall.py                       # this checkout's default (idle threads sleep)
    OMP_WAIT_POLICY= python benchmarks/omp_stall.py      # libgomp's default: idle threads spin
"""
import sys, time, statistics
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[1]))
from rag.pipeline import Pipeline
from rag.bench import QUESTIONS
from rag.generation import Generation
p = Pipeline(); p.warm_up()
emb, tok = [], []
for i, q in enumerate(QUESTIONS[:5]):
    t = time.perf_counter(); msgs = None
    hits = p.retriever.search(q, 4)
    from rag.prompt import build_messages
    msgs = build_messages(q, p.retriever.evidence(q, hits, 3))
    for it in p.generator.stream(msgs, 24): pass
    tok.append(it.total_s / max(it.new_tokens, 1))
    t = time.perf_counter(); p.embedder.encode([q + "x"]); a = time.perf_counter() - t
    t = time.perf_counter(); p.embedder.encode([q + "y"]); b = time.perf_counter() - t
    emb.append((round(a*1000), round(b*1000)))
print("embed right after generation, then again (ms):", emb, "s/token median", round(statistics.median(tok), 3))
