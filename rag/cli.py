"""Command line: python -m rag index | ask | eval | bench | serve."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from .config import Settings
from .env import apply_env_defaults


def _cmd_index(args: argparse.Namespace) -> int:
    from .corpus import load_corpus
    from .embedding import Embedder
    from .index import ensure_index

    settings = Settings()
    corpus = load_corpus(settings.corpus_dir, settings.max_file_bytes)  # type: ignore[arg-type]
    for problem in corpus.problems:
        print(f"warning: {problem}", file=sys.stderr)
    index = ensure_index(corpus, Embedder.from_settings(settings), settings, rebuild=args.rebuild, progress=True)
    m = index.manifest
    print(f"index ready at {settings.index_dir}: {len(index.documents)} documents, {m.n_chunks} chunks, {m.n_sentences} sentences")
    return 0


def _cmd_ask(args: argparse.Namespace) -> int:
    from .pipeline import Pipeline

    pipeline = Pipeline()
    question = " ".join(args.question)
    if args.json:
        print(pipeline.answer(question).model_dump_json(indent=2))
        return 0
    answer = pipeline.answer(question, on_token=lambda piece: print(piece, end="", flush=True))
    print("\r\033[K" if sys.stdout.isatty() else "\n", end="")
    print(answer.text)
    shown = answer.citations or answer.closest
    if shown:
        print("\nSources:" if answer.citations else "\nClosest passages:")
        for c in shown:
            where = f"page {c.page}, " if c.page is not None else ""
            print(f"  [{c.n}] {c.title} ({c.doc_id}, {where}chars {c.start}-{c.end})\n      \"{c.text}\"")
    print(f"\n({answer.route}: {answer.reason}; {answer.timings.get('total', 0):.2f} s)")  # why, e.g. which LLM server failed
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation import main as eval_main

    return eval_main(args)


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import main as bench_main

    return bench_main(args)


def _cmd_serve(args: argparse.Namespace) -> int:
    from .ui import launch

    launch(host=args.host, port=args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rag", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log what each stage does")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="build or check the index of corpus/")
    p.add_argument("--rebuild", action="store_true", help="rebuild even if the index is current")
    p.set_defaults(func=_cmd_index)

    p = sub.add_parser("ask", help="answer one question with sources")
    p.add_argument("question", nargs="+")
    p.add_argument("--json", action="store_true", help="print the Answer as JSON")
    p.set_defaults(func=_cmd_ask)

    p = sub.add_parser("eval", help="score answers against a golden JSONL set")
    p.add_argument("file", help="golden set, e.g. tests/golden/golden.jsonl")
    p.add_argument("--report", default="reports/eval", help="folder for report.json, report.md and the chart")
    p.add_argument("--limit", type=int, default=0, help="only the first N items")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("bench", help="time cold start, retrieval, first token and answers")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("serve", help="start the chat UI and the OpenAI-compatible API (/v1) on one port")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 opens it to the network (set RAG_API_KEY)")
    p.add_argument("--port", type=int, default=7860)
    p.set_defaults(func=_cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    apply_env_defaults()  # before any command imports torch
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from .corpus import EmptyCorpusError

    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, EmptyCorpusError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
