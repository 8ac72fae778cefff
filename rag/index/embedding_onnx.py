"""The embedding model exported once to ONNX (optionally int8), cached, and run by onnxruntime.

The packaged sentence-transformers weights stay the source: on first use they are exported
(mean pooling over the attention mask and L2 normalisation inside the graph, as the
sentence-transformers modules do them) and, for `onnx-int8`, given int8 weights (one scale per
output channel) by onnxruntime's dynamic quantisation; onnxruntime fuses the graph when it loads
it. The result is written
to a temporary folder and renamed into place under `cache_dir`, keyed by the source weights'
sha256 and this file's RECIPE, so it is made once and a kill leaves no half-written copy;
a copy whose bytes no longer match its meta.json is made again (benchmarks/fast_embedding.py).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..env import apply_env_defaults, file_sha256

log = logging.getLogger(__name__)

RECIPE = 2
"""Version of the export below: a change makes a new cache entry and a new embedding identity.
r2: the plain export, quantised per channel (every MatMul with weights), onnxruntime's own fusions
at load; r1 (BERT optimiser, QAttention) paired 3.42x against torch, r2 3.74x, same cosine."""
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
MAX_SEQ_LENGTH_FILE = "sentence_bert_config.json"
BATCH = 4  # texts per forward pass: int8 runs fastest on small batches here (benchmarks/fast_embedding.py)


@dataclass(frozen=True)
class Recipe:
    """How a backend's ONNX file is made from the torch weights."""

    optimize: bool = False  # onnxruntime's BERT optimiser offline (fused Attention, SkipLayerNorm, BiasGelu): slower here
    quantize: bool = False  # int8 weights, activations quantised per call (onnxruntime dynamic)
    per_channel: bool = True  # one int8 scale per output column: per-tensor scales cost MiniLM cosine 0.95 (benchmarks)
    quantize_attention: bool = False  # the fused attention's Q/K/V projection in int8 too (QAttention)


RECIPES = {"onnx": Recipe(optimize=False), "onnx-int8": Recipe(optimize=False, quantize=True)}
"""The onnxruntime backends of Settings.embedding_backend ("torch" is sentence-transformers itself)."""


def max_seq_length(model_path: Path) -> int:
    """Tokens the sentence-transformers model reads (longer texts are cut), from its config."""
    config = Path(model_path) / MAX_SEQ_LENGTH_FILE
    if config.exists():
        return int(json.loads(config.read_text(encoding="utf-8")).get("max_seq_length") or 512)
    return 512


def export(model_path: Path, out: Path, recipe: Recipe) -> None:
    """Write the sentence-transformers model at `model_path` as one ONNX file `out`.

    Inputs input_ids, attention_mask and token_type_ids (int64, batch x sequence, both axes
    dynamic); output sentence_embedding (batch x dim, unit length).
    """
    apply_env_defaults()  # before torch loads
    import warnings

    import torch
    from transformers import AutoModel, AutoTokenizer

    class SentenceEmbedding(torch.nn.Module):
        """The transformer, then sentence-transformers' Pooling (mean over real tokens) and Normalize."""

        def __init__(self, bert) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            tokens = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            summed = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(summed, p=2.0, dim=1)

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" of a model the user never asked to load
    bert = AutoModel.from_pretrained(str(model_path), attn_implementation="eager", local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)
    # A padded example: the mask is traced as an input, never assumed all ones.
    example = tokenizer(["a short text", "a longer text, so that the first one is padded"], padding=True, return_tensors="pt")
    raw = out.with_name("raw.onnx") if recipe.optimize or recipe.quantize else out
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            SentenceEmbedding(bert), tuple(example[name] for name in INPUTS), str(raw), dynamo=False, opset_version=17,
            input_names=list(INPUTS), output_names=["sentence_embedding"],
            dynamic_axes={**{name: {0: "batch", 1: "sequence"} for name in INPUTS}, "sentence_embedding": {0: "batch"}},
        )
    fused = raw
    if recipe.optimize:
        from onnxruntime.transformers.optimizer import optimize_model

        fused = out.with_name("fused.onnx") if recipe.quantize else out
        config = bert.config
        optimize_model(str(raw), model_type="bert", num_heads=config.num_attention_heads, hidden_size=config.hidden_size).save_model_to_file(str(fused))
    if recipe.quantize:
        from onnx import TensorProto
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # The fused graph's contrib ops defeat ONNX shape inference; their outputs are float.
        ops = ["MatMul", "Attention"] if recipe.quantize_attention else ["MatMul"]
        logging.disable(logging.WARNING)  # its advice to pre-process for static quantisation does not apply
        try:
            quantize_dynamic(
                str(fused), str(out), op_types_to_quantize=ops, per_channel=recipe.per_channel, weight_type=QuantType.QInt8,
                extra_options={"DefaultTensorType": TensorProto.FLOAT},
            )
        finally:
            logging.disable(logging.NOTSET)
    for step in {raw, fused} - {out}:
        step.unlink(missing_ok=True)


def cached_export(model_path: Path, source_sha256: str, backend: str, cache_dir: Path) -> Path:
    """The ONNX file of `backend` for these weights: from the cache, else exported now (once).

    A cached copy is used only when its bytes still have the sha256 its meta.json records;
    otherwise (damaged, half-deleted) it is made again.

    Raises:
        ValueError: `backend` has no recipe.
    """
    if backend not in RECIPES:
        raise ValueError(f"no ONNX recipe for embedding backend {backend!r}; one of {sorted(RECIPES)}")
    folder = Path(cache_dir) / "embedding" / f"{source_sha256[:16]}-{backend}-r{RECIPE}"
    model = folder / "model.onnx"
    if _intact(folder, source_sha256):
        return model
    if folder.exists():
        log.warning("embedding: the cached %s export in %s is damaged; making it again", backend, folder)
        shutil.rmtree(folder, ignore_errors=True)
    print(f"[rag] First use of the {backend} embedding backend: exporting the model (once, ~30 s)...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        export(model_path, tmp / "model.onnx", RECIPES[backend])
        meta = {"backend": backend, "recipe": RECIPE, "source_sha256": source_sha256, "sha256": file_sha256(tmp / "model.onnx")}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        try:
            tmp.rename(folder)
        except OSError:  # another process won the race; use its copy
            if not _intact(folder, source_sha256):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"[rag] Cached the {backend} embedding model in {folder} ({time.perf_counter() - started:.0f} s).", file=sys.stderr, flush=True)
    return model


def _intact(folder: Path, source_sha256: str) -> bool:
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        return meta.get("source_sha256") == source_sha256 and meta.get("recipe") == RECIPE and file_sha256(folder / "model.onnx") == meta.get("sha256")
    except (OSError, ValueError, AttributeError):
        return False


class OnnxSentenceModel:
    """Tokenizer plus an onnxruntime session: sentence-transformers' encode() for the exported graph.

    Texts are sorted by length and batched, as sentence-transformers does, so a batch pads little.

    Args:
        onnx_path: the exported file (cached_export).
        model_path: the sentence-transformers folder, for its tokenizer and max sequence length.
        threads: onnxruntime's intra-op threads (the cores).
        runtime_fusions: onnxruntime's own graph optimisations when loading (all levels);
            False keeps only the basic ones (constant folding), to measure what fusing is worth.
    """

    def __init__(self, onnx_path: Path, model_path: Path, threads: int, runtime_fusions: bool = True) -> None:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)
        self.max_length = max_seq_length(model_path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        if not runtime_fusions:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        # Idle threads sleep, like OMP_WAIT_POLICY=PASSIVE for torch (rag/env.py): spinning ones
        # would hold the cores the LLM's decoder thread needs right after a question is embedded.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.dim = int(self.session.get_outputs()[0].shape[-1])

    def encode(self, texts: list[str], batch_size: int = BATCH) -> np.ndarray:
        """Unit-length float32 rows, one per text, in the order given."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for part, feed in token_batches(self.tokenizer, texts, self.max_length, batch_size):
            out[part] = self.session.run(None, feed)[0]
        return out


def token_batches(tokenizer, texts: list[str], max_length: int, batch_size: int):
    """(positions in `texts`, model inputs) per batch: int64 arrays of input_ids, attention_mask
    and token_type_ids.

    All texts are tokenized in one call (cut to `max_length` tokens), sorted by token count and
    padded per batch, so a batch pads only to its own longest text.
    """
    if not texts:
        return
    encoded = tokenizer(texts, truncation="longest_first", max_length=max_length)
    ids, types = encoded["input_ids"], encoded["token_type_ids"]
    order = sorted(range(len(texts)), key=lambda i: -len(ids[i]))
    pad = int(tokenizer.pad_token_id or 0)
    for start in range(0, len(order), batch_size):
        part = order[start : start + batch_size]
        width = len(ids[part[0]])
        feed = {name: np.zeros((len(part), width), dtype=np.int64) for name in INPUTS}
        feed["input_ids"].fill(pad)
        for row, i in enumerate(part):
            n = len(ids[i])
            feed["input_ids"][row, :n] = ids[i]
            feed["attention_mask"][row, :n] = 1
            feed["token_type_ids"][row, :n] = types[i]
        yield part, feed
