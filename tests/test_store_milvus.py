"""MilvusStore beyond the shared contract: where its rows live, RAG_MILVUS_URI, and failures."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from rag.store import StoreError, open_store
from rag.store.milvus import MilvusStore

DIM = 8


def unit(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_default_store_moves_its_lite_folder_into_the_index_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("RAG_MILVUS_URI", raising=False)
    store = MilvusStore(DIM)
    store.add(np.arange(5), unit(5))
    store.save(tmp_path / "build-1")
    assert (tmp_path / "build-1" / "milvus.db").is_dir()
    assert json.loads((tmp_path / "build-1" / "milvus.json").read_text())["uri"] == "milvus.db"
    store.add(np.array([9]), unit(1, seed=1))  # still usable where it now lives
    store.save(tmp_path / "build-1")
    store.close()
    (tmp_path / "build-1").rename(tmp_path / "moved")  # a relative URI survives the index folder's move
    loaded = open_store("milvus", tmp_path / "moved", DIM)
    try:
        assert loaded.count() == 6
    finally:
        loaded.close()


def test_rag_milvus_uri_names_the_store(tmp_path, monkeypatch):
    monkeypatch.setenv("RAG_MILVUS_URI", str(tmp_path / "shared.db"))
    store = MilvusStore(DIM, collection="chunks")
    store.add(np.arange(3), unit(3))
    assert store.uri == str(tmp_path / "shared.db")
    store.save(tmp_path / "index")
    assert not (tmp_path / "index" / "milvus.db").exists(), "a named Lite folder stays where it is"
    assert json.loads((tmp_path / "index" / "milvus.json").read_text())["uri"] == str((tmp_path / "shared.db").resolve())
    store.close()


def test_two_stores_share_one_lite_folder(tmp_path):
    uri = str(tmp_path / "one.db")
    chunks, sentences = MilvusStore(DIM, uri=uri, collection="chunks"), MilvusStore(DIM, uri=uri, collection="sentences")
    chunks.add(np.arange(4), unit(4))
    sentences.add(np.arange(7), unit(7, seed=2))
    chunks.close()  # the folder's server stays up for the other store
    assert sentences.count() == 7
    sentences.close()


def test_unreachable_server_is_a_store_error():
    with pytest.raises(StoreError, match=r"cannot connect to Milvus server http://127\.0\.0\.1:1"):
        MilvusStore(DIM, uri="http://127.0.0.1:1")


def test_collection_gone_or_resized_is_a_store_error(tmp_path):
    uri = str(tmp_path / "x.db")
    store = MilvusStore(DIM, uri=uri, collection="c")
    store.add(np.arange(2), unit(2))
    store.save(tmp_path / "index")
    store.drop()
    store.close()
    with pytest.raises(StoreError, match="collection 'c' is missing"):
        open_store("milvus", tmp_path / "index", DIM)
    wrong = MilvusStore(DIM * 2, uri=uri, collection="c")
    wrong.close()
    with pytest.raises(StoreError, match="holds vectors of size 16, expected 8"):
        MilvusStore(DIM, uri=uri, collection="c")


def test_standalone_server_is_reachable_only_through_its_loopback_bridge(milvus_standalone):
    """Milvus 2.3.5 listens on every interface for its gRPC ports, whatever `*.ip` says; in the
    fixture's network namespace none of them answers on any of this machine's addresses, and the
    client reaches the proxy only through the port bridged on 127.0.0.1."""
    import socket

    from pymilvus import MilvusClient

    from milvus_standalone import RUNNING, host_addresses, listening

    server = RUNNING[milvus_standalone]
    assert os.readlink(f"/proc/{server.pid}/ns/net") != os.readlink("/proc/self/ns/net"), "not in a network namespace of its own"
    inside = listening(server.pid)  # its own namespace, read through /proc
    assert any(addr in ("0.0.0.0", "::") for addr, _ in inside), f"no wildcard listener, the reason for the namespace: {inside}"
    ports = {port for _, port in inside} - {port for _, port in listening()}  # a host process may hold the same number
    addresses = host_addresses()
    assert "127.0.0.1" in addresses and len(ports) >= 8, (addresses, inside)
    reachable = []
    for address in addresses:
        for port in sorted(ports):
            try:
                socket.create_connection((address, port), timeout=1).close()
                reachable.append(f"{address}:{port}")
            except OSError:
                pass
    assert not reachable, f"Milvus ports reachable outside its namespace: {reachable}"
    bridged = int(milvus_standalone.rsplit(":", 1)[1])
    assert ("127.0.0.1", bridged) in listening() and not any(port == bridged for addr, port in listening() if addr != "127.0.0.1")
    client = MilvusClient(uri=milvus_standalone)
    assert isinstance(client.list_collections(), list)
    client.close()
