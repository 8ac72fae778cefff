"""Command line: python -m rag index | add | remove | list | migrate | ask | eval | bench | serve."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from ..config import Settings
from ..env import apply_env_defaults, quiet_libraries


def _cmd_index(args: argparse.Namespace) -> int:
    from ..index.corpus import load_corpus
    from ..index.embedding import Embedder
    from ..index.manifest import ensure_index, indexed_files

    settings = Settings()
    indexed = {} if args.rebuild else indexed_files(settings.index_dir)  # unchanged files are not converted again
    corpus = load_corpus(settings.corpus_dir, settings.max_file_bytes, indexed, settings=settings)  # type: ignore[arg-type]
    for problem in corpus.problems:
        print(f"warning: {problem}", file=sys.stderr)
    index = ensure_index(corpus, Embedder.from_settings(settings), settings, rebuild=args.rebuild, progress=True)
    m = index.manifest
    print(f"index ready at {settings.index_dir}: {len(m.documents)} documents, {m.n_chunks} chunks, {m.n_sentences} sentences")
    return 0


def _open_index(settings):
    """The embedder, after making sure there is an index to update: one that exists with these
    settings is left as it is (only its manifest is read; the corpus folder is synced when the
    app starts), else it is built from the corpus folder first."""
    from ..index.corpus import load_corpus
    from ..index.embedding import Embedder
    from ..index.manifest import Index, StaleIndex, ensure_index

    embedder = Embedder.from_settings(settings)
    try:
        Index.load(settings.index_dir, lazy=True).check_settings(embedder, settings)
    except StaleIndex:
        corpus = load_corpus(settings.corpus_dir, settings.max_file_bytes, settings=settings)  # type: ignore[arg-type]
        ensure_index(corpus, embedder, settings, progress=True)
    return embedder


def _cmd_add(args: argparse.Namespace) -> int:
    from ..index.corpus import check_collection, files_under, read_into
    from ..index.manifest import update_index

    settings = Settings()
    collection = check_collection(args.collection) if args.collection else None
    files, problems = files_under([Path(p) for p in args.paths])
    embedder = _open_index(settings)
    documents = []
    for path in files:
        doc, found = read_into(path, settings.max_file_bytes, collection, settings.corpus_dir, settings=settings)
        problems += found
        if doc is not None:
            documents.append(doc)
    index, report = update_index(settings, embedder, add=documents, progress=True)
    report.problems[:0] = problems
    for problem in report.problems:
        print(f"rejected: {problem}", file=sys.stderr)
    print(
        f"added {len(report.added)}, replaced {len(report.replaced)}, unchanged {len(report.unchanged)}, "
        f"rejected {len([p for p in report.problems if p.action in ('skipped',)])} in {report.seconds:.2f} s; "
        f"index: {len(index.manifest.documents)} documents, {index.manifest.n_chunks} chunks"
    )
    _compact_if_due(settings, report)
    return 0 if documents or not problems else 1


def _cmd_remove(args: argparse.Namespace) -> int:
    from ..index.manifest import update_index

    settings = Settings()
    embedder = _open_index(settings)
    index, report = update_index(settings, embedder, remove=list(args.doc_ids))
    m = index.manifest
    print(f"removed {', '.join(report.removed)} in {report.seconds:.2f} s; index: {len(m.documents)} documents, {m.n_chunks} chunks")
    _compact_if_due(settings, report)
    return 0


def _compact_if_due(settings, report) -> None:
    """The update is done and searchable; a bigger merge it left (see `inline_merge_chunks`) runs now, as its own change."""
    if not report.merge_due:
        return
    from ..index.manifest import compact_index

    print("merging segments (the update above is already searchable) ...", flush=True)
    _, merged = compact_index(settings)
    print(f"merged or rewrote {merged.merged} segments in {merged.seconds:.2f} s")


def _cmd_list(args: argparse.Namespace) -> int:
    from ..index.manifest import Index, StaleIndex

    settings = Settings()
    try:
        m = Index.load(settings.index_dir, lazy=True).manifest  # type: ignore[arg-type]  # the catalogue: no segment is read
    except StaleIndex as why:
        print(f"error: no usable index at {settings.index_dir} ({why}); run `python -m rag index`", file=sys.stderr)
        return 2
    rows = sorted(m.documents, key=lambda d: (d.added_at, d.doc_id))
    if args.collection:
        rows = [d for d in rows if d.collection == args.collection]
    if args.json:
        print(json.dumps([
            {"doc_id": d.doc_id, "title": d.title, "collection": d.collection, "chunks": d.chunks, "pages": d.pages, "added_at": d.added_at, "path": d.path}
            for d in rows
        ], indent=1))
        return 0
    print(f"{'doc id':<32} {'collection':<12} {'chunks':>6} {'pages':>5}  {'added':<19}  title")
    for d in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.added_at)) if d.added_at else "?"
        print(f"{d.doc_id[:32]:<32} {d.collection[:12]:<12} {d.chunks:>6} {d.pages or '':>5}  {when:<19}  {d.title[:60]}")
    if args.collection:
        print(f"{len(rows)} documents, {sum(d.chunks for d in rows)} chunks in collection {args.collection!r}")
    else:
        print(f"{len(rows)} documents, {m.n_chunks} chunks, {m.n_sentences} sentences in a {m.store} store at {settings.index_dir}")
    return 0


def _cmd_collections(args: argparse.Namespace) -> int:
    from ..index.manifest import Index, StaleIndex

    settings = Settings()
    try:
        index = Index.load(settings.index_dir, lazy=True)  # type: ignore[arg-type]
    except StaleIndex as why:
        print(f"error: no usable index at {settings.index_dir} ({why}); run `python -m rag index`", file=sys.stderr)
        return 2
    counts = index.collection_counts()
    if args.json:
        print(json.dumps({name: {"documents": d, "chunks": c} for name, (d, c) in counts.items()}, indent=1))
        return 0
    print(f"{'collection':<24} {'documents':>9} {'chunks':>7}")
    for name, (docs, chunks) in counts.items():
        print(f"{name[:24]:<24} {docs:>9} {chunks:>7}")
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from ..index.manifest import Index, migrate_index

    settings = Settings()
    before = Index.load(settings.index_dir, lazy=True)  # type: ignore[arg-type]
    if before.manifest.store == args.to:
        print(f"the index is already in a {args.to} store")
        return 0
    start = time.perf_counter()
    index = migrate_index(settings, args.to, progress=True)
    print(
        f"moved {index.manifest.n_chunks} chunk and {index.manifest.n_sentences} sentence vectors from {before.manifest.store} to {args.to} "
        f"in {time.perf_counter() - start:.1f} s; the index now uses {args.to}"
    )
    return 0


def _cmd_ask(args: argparse.Namespace) -> int:
    from ..pipeline import Pipeline

    pipeline = Pipeline()
    question = " ".join(args.question)
    if args.json:
        print(pipeline.answer(question).model_dump_json(indent=2))
        return 0
    if sys.stdout.isatty():  # the model's text as it comes, replaced by the checked answer
        answer = pipeline.answer(question, on_token=lambda piece: print(piece, end="", flush=True))
        print("\r\033[K", end="")
    else:  # piped: the checked answer only, once
        answer = pipeline.answer(question)
    print(answer.text)
    if answer.confidence is not None:
        from ..answering.confidence import confidence_label

        what = "that the articles don't state it" if answer.refused else "that this answer is right"
        print(f"Confidence {what}: {confidence_label(answer.confidence)[1]}")
    shown = answer.citations or answer.closest
    if shown:
        print("\nSources:" if answer.citations else "\nMay be related (the reader's best guess in *stars*, not stated as the answer):")
        for c in shown:
            where = (f"page {c.page}, " if c.page is not None else "") + ("read by OCR, " if c.ocr else "")
            text = c.text if not c.highlight else f"{c.text[: c.highlight[0]]}*{c.text[c.highlight[0] : c.highlight[1]]}*{c.text[c.highlight[1] :]}"
            print(f"  [{c.n}] {c.title} ({c.doc_id}, {where}chars {c.start}-{c.end})\n      \"{text}\"")
    print(f"\n({answer.route}: {answer.reason}; {answer.timings.get('total', 0):.2f} s)")  # why, e.g. which LLM server failed
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..eval.golden import main as eval_main

    return eval_main(args)


def _cmd_bench(args: argparse.Namespace) -> int:
    from ..eval.bench import main as bench_main

    return bench_main(args)


def _cmd_mcp(args: argparse.Namespace) -> int:
    from .mcp import run_stdio

    run_stdio()
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from .ui import launch

    launch(host=args.host, port=args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rag", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log what each stage does, with library warnings and load progress bars")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="build or check the index of corpus/")
    p.add_argument("--rebuild", action="store_true", help="rebuild even if the index is current")
    p.set_defaults(func=_cmd_index)

    p = sub.add_parser("add", help="index files or folders (only new or changed files are embedded)")
    p.add_argument("paths", nargs="+", help="files, or folders (read recursively)")
    p.add_argument("--collection", help="the collection they go into (default: 'default'; a file of corpus/NAME/ is in NAME)")
    p.set_defaults(func=_cmd_add)

    p = sub.add_parser("remove", help="remove documents from the index by doc id (see `list`)")
    p.add_argument("doc_ids", nargs="+")
    p.set_defaults(func=_cmd_remove)

    p = sub.add_parser("list", help="the indexed documents: collection, chunks, pages, when added")
    p.add_argument("--json", action="store_true")
    p.add_argument("--collection", help="only the documents of this collection")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("collections", help="the collections, with their document and chunk counts")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_collections)

    p = sub.add_parser("migrate", help="move the index's vectors to another store, e.g. --to milvus (no re-embedding)")
    p.add_argument("--to", required=True, help="a store name: faiss or milvus")
    p.set_defaults(func=_cmd_migrate)

    p = sub.add_parser("ask", help="answer one question with sources")
    p.add_argument("question", nargs="+")
    p.add_argument("--json", action="store_true", help="print the Answer as JSON")
    p.set_defaults(func=_cmd_ask)

    p = sub.add_parser("eval", help="score answers against a golden JSONL set")
    p.add_argument("file", nargs="+", help="golden set(s), e.g. tests/golden/golden.jsonl tests/golden/squad/squad.jsonl (a set with a corpus/ folder beside it is answered from that corpus)")
    p.add_argument("--report", default="reports/eval", help="folder for report.json, report.md and the chart")
    p.add_argument("--limit", type=int, default=0, help="only the first N items")
    p.add_argument("--paraphrase", action="store_true", help="also ask every answerable question reworded (a source clause, lower case, a lead-in) and report consistency")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("bench", help="time cold start, retrieval, first token and answers")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    p.set_defaults(func=_cmd_bench)

    from .users import register as users_commands

    users_commands(sub)  # rag users add/list/remove/rotate

    p = sub.add_parser("mcp", help="serve MCP over stdio, for a desktop client to launch (with users: RAG_MCP_KEY is the user's key)")
    p.set_defaults(func=_cmd_mcp)

    p = sub.add_parser("serve", help="start the chat UI and the OpenAI-compatible API (/v1) on one port")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 opens it to the network (set RAG_API_KEY)")
    p.add_argument("--port", type=int, default=7860)
    p.set_defaults(func=_cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    apply_env_defaults()  # before any command imports torch
    args = build_parser().parse_args(argv)
    quiet_libraries(args.verbose)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose:
        logging.getLogger("rag").setLevel(logging.DEBUG)  # rag's debug lines, library warnings among them
    from ..index.corpus import EmptyCorpusError
    from ..index.manifest import StaleIndex
    from .history import HistoryError
    from .users import UsersFileError

    try:
        return args.func(args)
    except KeyError as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, EmptyCorpusError, StaleIndex, UsersFileError, HistoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
