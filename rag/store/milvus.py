"""MilvusStore: the same rows in Milvus, a local Milvus Lite folder or a server/cluster, one client.

pymilvus's MilvusClient takes a URI: a path ending in ".db" runs Milvus Lite in-process on that
folder (`pip install pymilvus[milvus-lite]`), an http(s) URI talks to a Milvus server or cluster.
`RAG_MILVUS_URI=http://host:19530` (and `RAG_MILVUS_TOKEN` where the server needs one) selects a
server for every store that is not given a URI; nothing else differs.

Milvus Lite serves a folder from inside this process and locks it: one process at a time per
folder (a UI and a `rag add` running together need a server). Its server for a folder is shared
by every store on that folder and stopped when the last one closes.

Milvus does not enforce unique primary keys and counts a delete of an unknown id as deleted, so
`add` and `delete` look the ids up first to keep the VectorStore contract. Writes use "Strong"
consistency, so a search right after an add sees it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import uuid
from pathlib import Path

import numpy as np

from .base import StoreError

FORMAT_VERSION = 1
META_FILE = "milvus.json"
LITE_DIR = "milvus.db"
URI_ENV = "RAG_MILVUS_URI"
TOKEN_ENV = "RAG_MILVUS_TOKEN"
ID, VECTOR = "id", "vector"
BATCH = 5_000  # rows per insert: 20 MB at dim 1024, well under gRPC's 64 MB message limit
LOOKUP_BATCH = 1_000  # ids per "id in [...]" expression, which Milvus parses as text
MAX_K = 16_384  # Milvus's largest search limit
_lite_users: dict[str, int] = {}  # Milvus Lite folder -> open stores on it
_lite_lock = threading.Lock()


class MilvusStore:
    """Inner-product search over (id, vector) rows in a Milvus collection.

    Args:
        dim: vector size.
        uri: where Milvus is: a path ending in ".db" (Milvus Lite) or an http(s) URI (server).
            None: $RAG_MILVUS_URI, else a Milvus Lite folder in a temporary directory that
            `save(path)` moves under the index folder.
        collection: the collection's name; a fresh unique one if None (server stores are shared).
        token: server credentials ("user:password" or an API key); None: $RAG_MILVUS_TOKEN.
        index_type: the Milvus index ("FLAT" is exact; "HNSW" or "AUTOINDEX" on a server).
        index_params: that index's build parameters, e.g. {"M": 32, "efConstruction": 40}.
    """

    kind = "milvus"
    in_memory = False  # rows stay in Milvus (a server, or Lite's server on the folder)

    def __init__(
        self,
        dim: int,
        uri: str | Path | None = None,
        collection: str | None = None,
        token: str | None = None,
        index_type: str = "FLAT",
        index_params: dict | None = None,
    ) -> None:
        if dim < 1:
            raise ValueError(f"dim must be at least 1, got {dim}.")
        self.dim = dim
        self._temp_dir: str | None = None
        uri = uri if uri is not None else os.environ.get(URI_ENV) or None
        if uri is None:
            self._temp_dir = tempfile.mkdtemp(prefix="rag-milvus-")
            uri = os.path.join(self._temp_dir, LITE_DIR)
        self.uri = str(uri)
        self.collection = collection or f"rag_{uuid.uuid4().hex[:12]}"
        self.index_type = index_type
        self.index_params = dict(index_params or {})
        self._token = token if token is not None else os.environ.get(TOKEN_ENV, "")
        self._client = None
        self._open(create=True)

    @property
    def is_lite(self) -> bool:
        return not self.uri.startswith(("http://", "https://", "tcp://", "unix:"))

    # -- the protocol -----------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Insert rows.

        Raises:
            ValueError: shapes or dtypes do not fit, an id repeats in `ids`, or is already stored.
            StoreError: Milvus refused the write.
        """
        ids, vectors = _ids(ids), self._vectors(vectors)
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors.")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("ids repeat within one add.")
        taken = self._existing(ids)
        if taken:
            raise ValueError(f"ids already in the store: {sorted(taken)[:10]}")
        for start in range(0, len(ids), BATCH):
            rows = [{ID: int(i), VECTOR: v} for i, v in zip(ids[start : start + BATCH].tolist(), vectors[start : start + BATCH].tolist())]
            self._call("insert", self._client.insert, self.collection, rows)
        if self.is_lite and len(ids):
            # Milvus Lite searches unsealed rows slowly (measured: 1.2 s per query over 20k
            # unflushed rows, 20 ms once flushed; a flush of 50 rows takes ~40 ms). A server
            # seals segments itself, and flushing it per insert would only fragment them.
            self._call("flush", self._client.flush, self.collection)

    def delete(self, ids: np.ndarray) -> int:
        present = sorted(self._existing(np.unique(_ids(ids))))
        for start in range(0, len(present), LOOKUP_BATCH):
            self._call("delete", self._client.delete, self.collection, ids=present[start : start + LOOKUP_BATCH])
        return len(present)

    def search(self, vectors: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows per query; with `allowed`, a filter expression on the id inside Milvus's search."""
        vectors = self._vectors(vectors)
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}.")
        k = int(k)
        scores = np.full((len(vectors), k), -np.inf, dtype=np.float32)
        found = np.full((len(vectors), k), -1, dtype=np.int64)
        if len(vectors) == 0 or (allowed is not None and len(allowed) == 0):
            return scores, found
        params = {"metric_type": "IP", "params": self._search_params(k)}
        where = {} if allowed is None else {"filter": f"{ID} in {_ids(allowed).tolist()}"}
        results = self._call(
            "search", self._client.search, self.collection, data=vectors.tolist(), limit=min(k, MAX_K), search_params=params,
            output_fields=[ID], **where,
        )
        for row, hits in enumerate(results):
            for col, hit in enumerate(hits[:k]):
                scores[row, col] = hit["distance"]
                found[row, col] = hit[ID] if ID in hit else hit["entity"][ID]
        return scores, found

    def get(self, ids: np.ndarray) -> np.ndarray:
        ids = _ids(ids)
        vectors: dict[int, list[float]] = {}
        for start in range(0, len(ids), LOOKUP_BATCH):
            batch = np.unique(ids[start : start + LOOKUP_BATCH]).tolist()
            for row in self._call("get", self._client.get, self.collection, ids=batch, output_fields=[ID, VECTOR]):
                vectors[int(row[ID])] = row[VECTOR]
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        for row, id_ in enumerate(ids.tolist()):
            if id_ not in vectors:
                raise KeyError(id_)
            out[row] = np.asarray(vectors[id_], dtype=np.float32)
        return out

    def count(self) -> int:
        rows = self._call("count", self._client.query, self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def save(self, path: Path) -> None:
        """Make the rows durable and record where they are in `path`/milvus.json.

        A server keeps the rows itself (only milvus.json is written). A store made without a URI
        moves its temporary Milvus Lite folder to `path`/milvus.db and reopens it there, so the
        index folder holds everything; a Lite folder the caller named stays where it is.
        """
        path = Path(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
            self._call("flush", self._client.flush, self.collection)
            uri: str = self.uri
            if self.is_lite:
                target = path / LITE_DIR
                if self._temp_dir is not None:  # our own temporary folder: it moves into the index
                    self.close()
                    if target.exists():
                        shutil.rmtree(target)
                    shutil.move(self.uri, target)
                    self._cleanup_temp()
                    self.uri = str(target)
                    self._open(create=False)
                here = Path(self.uri).resolve()
                # Relative when inside `path`, so the index folder can be moved or renamed.
                uri = str(here.relative_to(path.resolve())) if here.is_relative_to(path.resolve()) else str(here)
            meta = {"format_version": FORMAT_VERSION, "kind": self.kind, "dim": self.dim, "uri": uri, "collection": self.collection}
            meta |= {"index_type": self.index_type, "index_params": self.index_params}
            (path / META_FILE).write_text(json.dumps(meta, indent=1))
        except OSError as err:
            raise StoreError(f"milvus store: cannot write {path}: {err}") from err

    @classmethod
    def load(cls, path: Path, dim: int) -> "MilvusStore":
        """Reopen the collection that `path`/milvus.json names.

        Raises:
            StoreError: the file is missing or damaged, Milvus cannot be reached, the collection
                is gone, or its vectors are not of size `dim`.
        """
        path = Path(path)
        try:
            meta = json.loads((path / META_FILE).read_text())
            if meta.get("format_version") != FORMAT_VERSION:
                raise StoreError(f"milvus store: {path / META_FILE} has format {meta.get('format_version')!r}, this code reads {FORMAT_VERSION}; rebuild the index")
            if meta.get("dim") != dim:
                raise StoreError(f"milvus store: {path} holds vectors of size {meta.get('dim')}, expected {dim}; rebuild the index")
            uri, collection = str(meta["uri"]), str(meta["collection"])
            index_type, index_params = str(meta["index_type"]), dict(meta["index_params"])
        except StoreError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise StoreError(f"milvus store: cannot read {path / META_FILE} ({type(err).__name__}: {err}); rebuild the index") from err
        if not uri.startswith(("http://", "https://", "tcp://", "unix:")):
            uri = str(path / uri)  # a relative Lite folder is inside the index folder; an absolute one stays
            if not Path(uri).exists():
                raise StoreError(f"milvus store: {uri} is missing; rebuild the index")
        store = cls.__new__(cls)
        store.dim, store.uri, store.collection = dim, uri, collection
        store.index_type, store.index_params = index_type, index_params
        store._temp_dir, store._client = None, None
        store._token = os.environ.get(TOKEN_ENV, "")
        store._open(create=False)
        return store

    def close(self) -> None:
        """Release the client, and stop Milvus Lite for this folder if no other store uses it."""
        if getattr(self, "_client", None) is not None:
            try:
                self._client.close()
            except Exception:  # closing a broken connection must not hide the error that broke it
                pass
            self._client = None
            if self.is_lite:
                _release_lite(self.uri)

    def drop(self) -> None:
        """Delete the collection (a server's rows are otherwise kept after the store is gone)."""
        self._call("drop", self._client.drop_collection, self.collection)

    @classmethod
    def discard(cls, path: Path) -> None:
        """Drop the server collection that `path`/milvus.json names; a Lite folder inside `path`
        goes with the folder, so nothing is done for it."""
        try:
            meta = json.loads((Path(path) / META_FILE).read_text())
        except (OSError, ValueError):
            return
        if not str(meta.get("uri", "")).startswith(("http://", "https://", "tcp://", "unix:")):
            return
        store = cls.load(Path(path), int(meta["dim"]))
        try:
            store.drop()
        finally:
            store.close()

    def __del__(self) -> None:
        self.close()
        self._cleanup_temp()

    # -- internals ---------------------------------------------------------------------------

    def _open(self, create: bool) -> None:
        from pymilvus import DataType, MilvusClient

        where = f"{'Milvus Lite at' if self.is_lite else 'Milvus server'} {self.uri}"
        if self.is_lite:
            _acquire_lite(self.uri)
        try:
            self._client = MilvusClient(uri=self.uri, token=self._token, timeout=30)
            exists = self._client.has_collection(self.collection)
        except Exception as err:  # pymilvus raises MilvusException, grpc errors, ConnectionConfigException...
            self._client = None
            if self.is_lite:
                _release_lite(self.uri)
            hint = " (is another process using this folder? Milvus Lite allows one)" if self.is_lite else ""
            raise StoreError(f"milvus store: cannot connect to {where}{hint}: {err}") from err
        if exists:
            schema = self._call("describe", self._client.describe_collection, self.collection)
            dims = [f.get("params", {}).get("dim") for f in schema["fields"] if f["name"] == VECTOR]
            if not dims or int(dims[0]) != self.dim:
                raise StoreError(f"milvus store: collection {self.collection!r} at {where} holds vectors of size {dims[0] if dims else '?'}, expected {self.dim}")
            self._call("load", self._client.load_collection, self.collection)
            return
        if not create:
            raise StoreError(f"milvus store: collection {self.collection!r} is missing at {where}; rebuild the index")
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(ID, DataType.INT64, is_primary=True)
        schema.add_field(VECTOR, DataType.FLOAT_VECTOR, dim=self.dim)
        index = self._client.prepare_index_params()
        index.add_index(VECTOR, index_type=self.index_type, metric_type="IP", params=self.index_params)
        self._call("create", self._client.create_collection, self.collection, schema=schema, index_params=index, consistency_level="Strong")

    def _existing(self, ids: np.ndarray) -> set[int]:
        found: set[int] = set()
        for start in range(0, len(ids), LOOKUP_BATCH):
            batch = ids[start : start + LOOKUP_BATCH].tolist()
            if batch:
                rows = self._call("lookup", self._client.query, self.collection, filter=f"{ID} in {batch}", output_fields=[ID])
                found.update(int(r[ID]) for r in rows)
        return found

    def _search_params(self, k: int) -> dict:
        if self.index_type.upper() == "HNSW":
            return {"ef": max(k, int(self.index_params.get("efSearch", 128)))}
        if self.index_type.upper().startswith("IVF"):
            return {"nprobe": int(self.index_params.get("nprobe", 32))}
        return {}

    def _call(self, what: str, method, *args, **kwargs):
        if self._client is None:
            raise StoreError(f"milvus store: {what} on a closed store")
        try:
            return method(*args, **kwargs)
        except Exception as err:  # any client or server failure becomes one error type naming the store
            raise StoreError(f"milvus store: {what} failed on collection {self.collection!r} at {self.uri}: {err}") from err

    def _vectors(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors must have shape (n, {self.dim}), got {vectors.shape}.")
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _cleanup_temp(self) -> None:
        if getattr(self, "_temp_dir", None):
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None


def _acquire_lite(uri: str) -> None:
    with _lite_lock:
        key = os.path.abspath(uri)
        _lite_users[key] = _lite_users.get(key, 0) + 1


def _release_lite(uri: str) -> None:
    """One store less on this Milvus Lite folder; the last one stops its server and unlocks it."""
    key = os.path.abspath(uri)
    with _lite_lock:
        left = _lite_users.get(key, 0) - 1
        if left > 0:
            _lite_users[key] = left
            return
        _lite_users.pop(key, None)
    from milvus_lite.server_manager import server_manager_instance

    server_manager_instance.release_server(key)


def _ids(ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
        raise ValueError(f"ids must be a 1-d integer array, got shape {ids.shape} of {ids.dtype}.")
    return np.ascontiguousarray(ids, dtype=np.int64)
