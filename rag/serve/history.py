"""Each user's chat conversations, kept across restarts in one SQLite file (standard library only).

A conversation belongs to one user, and every method takes that user: it reads and changes only
their rows. Another user's conversation id behaves exactly like an unknown one (`KeyError("no
such conversation")`, the same message), so not even an id's existence crosses users; ids are
`secrets.token_urlsafe(12)` (96 random bits), not guessable. Each user keeps at most
`max_conversations` (the least recently updated go first) of at most `max_messages` messages each
(the oldest go first), and a message is cut at `MAX_CONTENT_CHARS`, so the file is bounded per user.

The file is created 0600 (its folder made if missing), in WAL mode with a busy timeout, so the server
and a CLI can use it at once; one readable or writable by others, damaged, not SQLite, another
program's database or another version's is refused when opened, with a `HistoryError` naming it,
never an error at some later question. Deleted conversations are overwritten with zeros
(`secure_delete`) and the WAL emptied, so their text does not linger in the files.

One connection per `History`, shared by all threads under a lock: every method is a short
transaction (well under a millisecond), SQLite lets only one writer in at a time anyway, and a
single connection has no per-thread connections to set up or leak when a server's worker
threads come and go. Nothing user-given is ever part of the SQL: user names, ids, titles and
contents are bound parameters.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FORMAT = 1  # PRAGMA user_version of the file; another one is refused with a message
MAX_TITLE_CHARS = 80
MAX_CONTENT_CHARS = 100_000  # a longer message is cut here (a question is far shorter, an answer too)
MAX_META_CHARS = 1_000_000  # a message's meta as JSON (an answer with its citations is ~10-50 KB)
BUSY_TIMEOUT_MS = 5_000  # how long a write waits for another process's before it fails
NO_SUCH_CONVERSATION = "no such conversation"  # the one message for unknown and not-yours alike
UNTITLED = "Untitled conversation"

_SCHEMA = """
CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    title TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX conversations_by_user ON conversations (user, updated);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    conversation TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL,
    meta TEXT,
    created REAL NOT NULL
);
CREATE INDEX messages_by_conversation ON messages (conversation, id);
"""
_TABLES = {"conversations", "messages"}


class HistoryError(RuntimeError):
    """The history file cannot be used: one line saying which file and what is wrong with it."""


class Conversation(BaseModel):
    """One saved conversation, as its owner's list shows it."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(description="random and unguessable; pass it back with the same user")
    title: str = Field(description="its first question, one line, at most 80 characters")
    created: float = Field(description="Unix time it was started")
    updated: float = Field(description="Unix time of its last message")
    messages: int = Field(description="how many messages it holds now")


class Message(BaseModel):
    """One message of a conversation."""

    model_config = ConfigDict(frozen=True)

    role: Literal["user", "assistant"]
    content: str
    meta: dict[str, Any] = Field(default_factory=dict, description="what came with it (an answer's citations...); {} if nothing")
    created: float = Field(description="Unix time it was added")


class History:
    """The chat history file at `path`: every user's conversations, each user seeing only theirs.

    Opening creates the file (and its folder) if missing and checks it if not.

    Args:
        path: the SQLite file (Settings.history_file).
        max_conversations: kept per user; starting one more drops the least recently updated.
        max_messages: kept per conversation; appending one more drops the oldest.

    Raises:
        ValueError: a bound below 1.
        HistoryError: the file cannot be created or opened, is readable or writable by others,
            damaged, not SQLite, another program's database or another version's.
    """

    def __init__(self, path: Path | str, max_conversations: int = 50, max_messages: int = 200) -> None:
        if max_conversations < 1:
            raise ValueError("max_conversations must be at least 1.")
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1.")
        self.path = Path(path)
        self.max_conversations = max_conversations
        self.max_messages = max_messages
        self._lock = threading.Lock()
        self._last = 0.0  # the last time stamp given: they only grow, so "newest" is never a tie
        self._db = self._open()

    @classmethod
    def from_settings(cls, settings) -> History:
        return cls(settings.history_file, settings.history_conversations, settings.history_messages)

    # -- opening ---------------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        """Create or check the file and return the connection every method shares."""
        path = self.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # 0600 from the start: never a moment readable by others
        except OSError as err:
            raise HistoryError(f"history file {path}: cannot create or open it ({err.strerror or err}).") from err
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise HistoryError(f"history file {path} is not a regular file.")
            if st.st_mode & 0o077:
                raise HistoryError(f"history file {path} is readable or writable by others (mode {stat.S_IMODE(st.st_mode):o}): run chmod 600 {path}.")
        finally:
            os.close(fd)
        db = None
        try:
            db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if db.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
                raise HistoryError(f"history file {path}: SQLite cannot use WAL mode there (a network file system?).")
            db.execute("PRAGMA synchronous = NORMAL")  # WAL: a power cut may lose the last messages, never the file
            db.execute("PRAGMA foreign_keys = ON")  # deleting a conversation deletes its messages
            db.execute("PRAGMA secure_delete = ON")  # deleted text is overwritten, not left in free pages
            self._check_or_create(db)
        except HistoryError:
            if db is not None:
                db.close()
            raise
        except sqlite3.Error as err:
            if db is not None:
                db.close()
            raise HistoryError(f"history file {path} is damaged or not a SQLite database ({err}): move it away to start a new history.") from err
        return db

    def _check_or_create(self, db: sqlite3.Connection) -> None:
        path = self.path
        with _transaction(db, "BEGIN IMMEDIATE"):  # two processes opening a new file at once create the schema once
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if version == 0 and not tables:
                for statement in filter(str.strip, _SCHEMA.split(";")):  # not executescript: it would COMMIT
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {FORMAT}")
                return
            if version == 0:
                raise HistoryError(f"history file {path} is another program's SQLite database (tables {', '.join(sorted(tables))}): use another file.")
            if version != FORMAT:
                raise HistoryError(f"history file {path} is format {version}, this rag reads format {FORMAT}: use the rag that wrote it, or move it away.")
            if not _TABLES <= tables:
                raise HistoryError(f"history file {path} lacks the tables {', '.join(sorted(_TABLES - tables))}: move it away to start a new history.")
        problems = [row[0] for row in db.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            raise HistoryError(f"history file {path} is damaged ({'; '.join(problems)}): move it away to start a new history.")

    def close(self) -> None:
        """Close the file (its WAL is folded back in); the History cannot be used after."""
        with self._lock:
            self._db.close()

    # -- changing ----------------------------------------------------------------------------
    def start(self, user: str, title: str) -> str:
        """Start a conversation for `user` and return its id; their least recently updated ones
        beyond `max_conversations` are deleted.

        Args:
            title: what the list shows (the first question, usually): made one line, cut to 80
                characters; empty gives "Untitled conversation".
        """
        _check_user(user)
        if not isinstance(title, str):
            raise TypeError("title must be a string.")
        title = " ".join(title.split())[:MAX_TITLE_CHARS].rstrip() or UNTITLED
        conversation = secrets.token_urlsafe(12)
        with self._write() as db:
            now = self._now()
            db.execute("INSERT INTO conversations (id, user, title, created, updated) VALUES (?, ?, ?, ?, ?)",
                       (conversation, user, title, now, now))
            db.execute(
                "DELETE FROM conversations WHERE user = ? AND id NOT IN "
                "(SELECT id FROM conversations WHERE user = ? ORDER BY updated DESC, rowid DESC LIMIT ?)",
                (user, user, self.max_conversations),
            )
        return conversation

    def append(self, user: str, conversation_id: str, role: str, content: str, meta: dict[str, Any] | None = None) -> None:
        """Add a message to the end of `user`'s conversation; beyond `max_messages` the oldest go.

        A message over `MAX_CONTENT_CHARS` (100,000) characters is cut to that length.

        Args:
            role: "user" or "assistant".
            meta: anything JSON that belongs with it (an answer's citations...); at most
                `MAX_META_CHARS` as JSON.

        Raises:
            KeyError: no such conversation of this user (unknown, deleted or another user's).
            ValueError: a bad role, or meta that is not JSON or too long.
            TypeError: content not a string, meta not a dict.
        """
        _check_user(user)
        if role not in ("user", "assistant"):
            raise ValueError(f"role must be 'user' or 'assistant', not {role!r}.")
        if not isinstance(content, str):
            raise TypeError("content must be a string.")
        content = content[:MAX_CONTENT_CHARS]
        if meta is None:
            meta_json = None
        elif not isinstance(meta, dict):
            raise TypeError("meta must be a dict or None.")
        else:
            try:
                meta_json = json.dumps(meta, ensure_ascii=False)
            except (TypeError, ValueError) as err:
                raise ValueError(f"meta must be JSON-serialisable: {err}") from err
            if len(meta_json) > MAX_META_CHARS:
                raise ValueError(f"meta is {len(meta_json):,} characters as JSON, more than {MAX_META_CHARS:,}.")
        with self._write() as db:
            _own(db, user, conversation_id)
            now = self._now()
            db.execute("INSERT INTO messages (conversation, role, content, meta, created) VALUES (?, ?, ?, ?, ?)",
                       (conversation_id, role, content, meta_json, now))
            db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation_id))
            db.execute(
                "DELETE FROM messages WHERE conversation = ? AND id <= "
                "(SELECT id FROM messages WHERE conversation = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (conversation_id, conversation_id, self.max_messages),
            )

    def delete(self, user: str, conversation_id: str) -> None:
        """Delete `user`'s conversation and its messages (their text is overwritten on disk).

        Raises:
            KeyError: no such conversation of this user (unknown, deleted or another user's).
        """
        _check_user(user)
        with self._write(erase=True) as db:
            _own(db, user, conversation_id)
            db.execute("DELETE FROM conversations WHERE id = ? AND user = ?", (conversation_id, user))

    def clear(self, user: str) -> int:
        """Delete every conversation of `user`; returns how many there were."""
        _check_user(user)
        with self._write(erase=True) as db:
            return db.execute("DELETE FROM conversations WHERE user = ?", (user,)).rowcount

    # -- reading ------------------------------------------------------------------------------
    def conversations(self, user: str) -> list[Conversation]:
        """`user`'s conversations, the most recently updated first."""
        _check_user(user)
        with self._read() as db:
            rows = db.execute(
                "SELECT c.id, c.title, c.created, c.updated, "
                "(SELECT count(*) FROM messages AS m WHERE m.conversation = c.id) "
                "FROM conversations AS c WHERE c.user = ? ORDER BY c.updated DESC, c.rowid DESC",
                (user,),
            ).fetchall()
        return [Conversation(id=i, title=t, created=c, updated=u, messages=n) for i, t, c, u, n in rows]

    def messages(self, user: str, conversation_id: str) -> list[Message]:
        """The messages of `user`'s conversation, oldest first.

        Raises:
            KeyError: no such conversation of this user (unknown, deleted or another user's).
        """
        _check_user(user)
        with self._read() as db:
            _own(db, user, conversation_id)
            rows = db.execute("SELECT role, content, meta, created FROM messages WHERE conversation = ? ORDER BY id",
                              (conversation_id,)).fetchall()
        return [Message(role=r, content=c, meta=json.loads(m) if m else {}, created=t) for r, c, m, t in rows]

    # -- plumbing ------------------------------------------------------------------------------
    def _now(self) -> float:
        """Unix time, strictly growing within this History (two calls in one clock tick differ)."""
        self._last = max(time.time(), self._last + 1e-6)
        return self._last

    @contextmanager
    def _write(self, erase: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock (BEGIN IMMEDIATE: another process's writer makes
        this one wait up to the busy timeout, never fail halfway). `erase`: then empty the WAL,
        so deleted text is gone from both files."""
        with self._lock, _transaction(self._db, "BEGIN IMMEDIATE") as db:
            yield db
        if erase:
            with self._lock:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction under the lock: its queries see one state of the file."""
        with self._lock, _transaction(self._db, "BEGIN") as db:
            yield db


@contextmanager
def _transaction(db: sqlite3.Connection, begin: str) -> Iterator[sqlite3.Connection]:
    db.execute(begin)
    try:
        yield db
    except BaseException:
        if db.in_transaction:  # SQLite may have rolled back itself (a full disk...)
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _check_user(user: str) -> None:
    if not isinstance(user, str) or not user:
        raise ValueError("user must be a non-empty string.")


def _own(db: sqlite3.Connection, user: str, conversation_id: str) -> None:
    """Raise the one KeyError unless `conversation_id` is a conversation of `user`."""
    if not isinstance(conversation_id, str) or db.execute(
        "SELECT 1 FROM conversations WHERE id = ? AND user = ?", (conversation_id, user)
    ).fetchone() is None:
        raise KeyError(NO_SUCH_CONVERSATION)
