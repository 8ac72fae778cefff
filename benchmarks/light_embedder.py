"""A proposed drop-in for the model inside rag.index.embedding.Embedder, without sentence-transformers.

Why: `import sentence_transformers` imports scikit-learn, which imports scipy.stats, pandas,
joblib and narwhals - none of which the embedder uses - and that import is most of the
embedder's cold load. all-MiniLM-L6-v2 is a BERT encoder + mean pooling + L2 normalisation
(its modules.json says so), which transformers alone computes in a dozen lines.

`benchmarks/embedder_load.py` checks that the vectors match sentence-transformers' and times
both loads in fresh processes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


class MiniLM:
    """The subset of SentenceTransformer that rag.index.embedding uses: encode, tokenizer, dimension."""

    def __init__(self, model_path: Path) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        path = Path(model_path)
        modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((path / "modules.json").read_text())]
        pooling = json.loads((path / "1_Pooling" / "config.json").read_text())
        if modules != ["Transformer", "Pooling", "Normalize"] or not pooling.get("pooling_mode_mean_tokens"):
            raise ValueError(f"{path} is not a mean-pooled, normalised encoder; use sentence-transformers")
        self.max_seq_length = int(json.loads((path / "sentence_bert_config.json").read_text())["max_seq_length"])
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.dim = int(pooling["word_embedding_dimension"])

    def get_embedding_dimension(self) -> int:
        return self.dim

    def encode(self, texts: list[str], batch_size: int = 32, **_) -> np.ndarray:
        torch = self._torch
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                batch = self.tokenizer(
                    texts[i : i + batch_size], padding=True, truncation=True, max_length=self.max_seq_length, return_tensors="pt"
                )
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(mean, p=2, dim=1).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), dtype=np.float32)
