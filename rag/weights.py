"""Model weights trained here and shipped in rag/models/<name>/: checked against a sha256 manifest
before they are loaded, and the manifest written when a training run is adopted."""

from __future__ import annotations

import json
from pathlib import Path

from .env import file_sha256

WEIGHTS = "model.safetensors"
MANIFEST = "manifest.json"


class WeightsError(RuntimeError):
    """Shipped weights cannot be loaded; the message names the file and how to restore it."""


def check(folder: Path, fmt: str, name: str) -> dict:
    """The manifest of a weights folder, after checking the weights against it.

    Raises:
        WeightsError: the folder, manifest or weights file is missing, or the weights' sha256
            differs from the manifest; the message names the file and how to restore it.
    """
    restore = f"restore it with `git checkout -- rag/models/{name}` (or reinstall rag)"
    manifest_path = folder / MANIFEST
    weights = folder / WEIGHTS
    if not manifest_path.is_file():
        raise WeightsError(f"The {name}'s manifest {manifest_path} is missing; {restore}.")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise WeightsError(f"The {name}'s manifest {manifest_path} is unreadable ({err}); {restore}.") from err
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        raise WeightsError(f"{manifest_path} is not a {fmt!r} manifest; {restore}.")
    if not weights.is_file():
        raise WeightsError(f"The {name}'s weights {weights} are missing; {restore}.")
    digest = file_sha256(weights)
    if digest != manifest.get("sha256"):
        raise WeightsError(
            f"The {name}'s weights {weights} are damaged (sha256 {digest[:12]}…, expected {str(manifest.get('sha256'))[:12]}…); {restore}."
        )
    return manifest


def load(folder: Path, model_class: str, threads: int, quantize: bool):
    """(tokenizer, model) of a checked weights folder, in eval mode on CPU, the linear layers in
    int8 when `quantize` (dynamic quantisation; measured per model in benchmarks/).

    `model_class` names the transformers Auto class, e.g. "AutoModelForQuestionAnswering".
    """
    import torch
    import transformers
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(threads)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = getattr(transformers, model_class).from_pretrained(folder, dtype=torch.float32).eval()
    if quantize:
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return tokenizer, model


def write_manifest(folder: Path, record: dict, fmt: str) -> dict:
    """Write `folder`'s manifest: format, weights sha256 and size, and the training record."""
    weights = folder / WEIGHTS
    manifest = {
        "format": fmt,
        "file": WEIGHTS,
        "sha256": file_sha256(weights),
        "bytes": weights.stat().st_size,
        "dtype": "float16",
        "trained_on": record.get("device"),
        "record": "record.json",
        "max_len": record.get("args", {}).get("max_len"),
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest
