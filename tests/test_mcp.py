"""The MCP server, driven by the official SDK's own client: over stdio (`python -m rag mcp` as a
subprocess, what a desktop client launches) against the seed articles; the HTTP transport at
/mcp/ behind per-user keys is in tests/test_team.py (it shares that server)."""

from __future__ import annotations

import os
import shutil
import sys

import anyio
import pytest
from mcp import Client, StdioServerParameters

from conftest import CORPUS, REPO

pytestmark = pytest.mark.slow


def stdio(root, **env) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable, args=["-m", "rag", "mcp"], cwd=str(REPO),
        env={
            **{k: v for k, v in os.environ.items() if k.startswith(("PATH", "HOME", "XDG_", "LANG"))},
            "RAG_CORPUS_DIR": str(root / "corpus"), "RAG_INDEX_DIR": str(root / "index"),
            "RAG_USERS_FILE": str(root / "users.json"), "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **env,
        },
    )


@pytest.fixture(scope="module")
def seed(tmp_path_factory, pipeline):
    """A folder with the seed corpus and a copy of the session's index (no rebuild)."""
    root = tmp_path_factory.mktemp("mcp")
    shutil.copytree(CORPUS, root / "corpus")
    pipeline.index  # built once per session
    shutil.copytree(pipeline.settings.index_dir, root / "index", symlinks=True)
    return root


def run(coro, *args):
    """Run an async client session on a thread of its own: Playwright's sync API (the browser
    tests of the same session) keeps an event loop running on the main thread."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(anyio.run, coro, *args).result()


def test_stdio_tools_answer_refuse_search_and_open_a_citation(seed):
    async def session():
        async with Client(stdio(seed), read_timeout_seconds=300) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert set(tools) == {"ask", "search", "list_documents"}
            assert "refused" in tools["ask"].description and "do not" in tools["ask"].description  # tells the model what a refusal means

            answered = await client.call_tool("ask", {"question": "What retention rate did Cohere have?"})
            a = answered.structured_content
            assert not answered.is_error and not a["refused"] and "64" in a["answer"] and a["citations"]
            cited = a["citations"][0]
            text = (await client.read_resource(cited["uri"])).contents[0].text
            assert text[cited["start"] : cited["end"]] == cited["text"]  # the citation opens at its offsets

            refused = (await client.call_tool("ask", {"question": "What is the tallest mountain in Europe?"})).structured_content
            assert refused["refused"] and refused["citations"] == []

            passages = (await client.call_tool("search", {"query": "Cohere retention rate", "k": 3})).structured_content["passages"]
            assert len(passages) == 3 and any("Cohere" in p["text"] for p in passages)
            for p in passages:
                assert (await read(client, p["uri"]))[p["start"] : p["end"]] == p["text"]

            docs = (await client.call_tool("list_documents", {})).structured_content["documents"]
            assert len(docs) == len(list(CORPUS.iterdir()))

            bad = await client.call_tool("search", {"query": "Cohere", "k": 0})
            assert bad.is_error and "k must be between 1 and 20" in bad.content[0].text
            missing = await client.call_tool("ask", {})
            assert missing.is_error and "question" in missing.content[0].text
            long = await client.call_tool("ask", {"question": "why " * 600})
            assert long.is_error and "the limit is 2000" in long.content[0].text
            unknown = await client.call_tool("ask", {"question": "Who?", "collection": "nosuch"})
            assert unknown.is_error and "No collection 'nosuch'" in unknown.content[0].text
            with pytest.raises(Exception, match="No document"):
                await client.read_resource("rag://documents/not-there")
            again = await client.call_tool("ask", {"question": "What retention rate did Cohere have?"})  # still up
            assert not again.is_error and again.structured_content["answer"] == a["answer"]

    run(session)


async def read(client, uri: str) -> str:
    return (await client.read_resource(uri)).contents[0].text


def test_stdio_with_a_users_file_needs_a_users_key(seed, tmp_path):
    """With users, stdio answers as the user whose key RAG_MCP_KEY holds, and will not start without one."""
    import subprocess

    root = tmp_path
    shutil.copytree(seed / "corpus", root / "corpus")
    shutil.copytree(seed / "index", root / "index", symlinks=True)
    env = {**os.environ, "RAG_USERS_FILE": str(root / "users.json"), "RAG_CORPUS_DIR": str(root / "corpus"), "RAG_INDEX_DIR": str(root / "index"), "PYTHONPATH": str(REPO)}
    added = subprocess.run([sys.executable, "-m", "rag", "users", "add", "eve", "--collections", "nothing-here"], env=env, capture_output=True, text=True, cwd=REPO)
    key = added.stdout.strip().splitlines()[-1]
    refused = subprocess.run([sys.executable, "-m", "rag", "mcp"], env=env, capture_output=True, text=True, cwd=REPO, timeout=120, input="")
    assert refused.returncode == 2 and "RAG_MCP_KEY" in refused.stderr

    async def session():
        async with Client(stdio(root, RAG_MCP_KEY=key), read_timeout_seconds=300) as client:
            docs = (await client.call_tool("list_documents", {})).structured_content["documents"]
            assert docs == []  # eve reads a collection that has no documents
            a = (await client.call_tool("ask", {"question": "What retention rate did Cohere have?"})).structured_content
            assert a["refused"] and a["citations"] == [] and a["closest"] == []

    run(session)
