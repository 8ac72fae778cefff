"""A team's users, the collections each may read, and their API keys, in one JSON file (`rag users`).

A key is `rag_` and 256 random bits (`secrets.token_urlsafe(32)`), printed once by `rag users add`
or `rotate` and never stored: the file keeps a random salt per user and sha256(salt + key). A fast
salted hash is the right one here, not bcrypt or scrypt: a key is not a password a person chose but
256 random bits, so there is no dictionary to try and nothing to brute-force however fast the hash
(GitHub's and Stripe's tokens are kept the same way); the salt only makes equal keys hash apart.

The file is `{"format": 1, "users": {NAME: {collections, admin, created_at, rotated_at, salt,
hash}}}`, written atomically (a 0600 temp file beside it, fsync, rename, fsync of the folder) under
a lock, so it is never readable by others, never half written, and two `rag users add` at once keep
both users. One readable or writable by group or others, or damaged, is refused with a
`UsersFileError` that says which file and what to fix.

A running server sees `rag users remove` and `rotate` from another process at once: every check
stats the file (one stat) and reads it again when it changed. If it becomes damaged or is deleted
while running, no key is accepted until it is fixed (the error is logged): a broken users file
never opens the server to everyone. Without a users file at start (`Users.open` gives None) the
server has no users: `RAG_API_KEY`, or open on 127.0.0.1. POSIX only (file modes, `fcntl`).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..index.corpus import COLLECTION_NAME, check_collection
from .access import ALL

log = logging.getLogger(__name__)

FORMAT = 1  # the users file's format; another one is refused with a message (no silent guessing)
KEY_PREFIX = "rag_"  # says what a leaked string is (and lets secret scanners find it)
MAX_KEY_CHARS = 512  # a longer "key" is not one of ours: refused before hashing anything
SALT_BYTES = 16
_HEX = re.compile(r"[0-9a-f]*")


check_collection_name = check_collection  # one rule for collection names: rag/index/corpus.py


def check_user_name(name: str) -> str:
    """A user name as given, if it is one (the same rule as a collection's).

    Raises:
        ValueError: it is not.
    """
    if not isinstance(name, str) or not COLLECTION_NAME.fullmatch(name) or not name.strip("."):
        raise ValueError(f"{name!r} is not a user name: use 1-64 letters, digits, '.', '-' or '_'.")
    return name


class User(BaseModel):
    """One user as the users file has them (never their key or its hash)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    collections: list[str] = Field(min_length=1, description=f"what they may read; {ALL!r}: every collection, present and future (admins, usually)")
    admin: bool = Field(False, description="may add, upload and remove documents")
    created_at: float = Field(description="Unix time the user was added")
    rotated_at: float | None = Field(None, description="Unix time of the last `rag users rotate`; None: the first key")

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        return check_user_name(name)

    @field_validator("collections")
    @classmethod
    def _collections(cls, names: list[str]) -> list[str]:
        return list(dict.fromkeys(n if n == ALL else check_collection_name(n) for n in names))


class UsersFileError(RuntimeError):
    """The users file cannot be used: one line saying which file and what is wrong with it."""


class _Entry:
    """A user with their salt and key hash (what the file stores; never leaves this module)."""

    __slots__ = ("user", "salt", "digest")

    def __init__(self, user: User, salt: bytes, digest: bytes) -> None:
        self.user = user
        self.salt = salt
        self.digest = digest

    @classmethod
    def new(cls, user: User) -> tuple[_Entry, str]:
        """An entry for `user` with a fresh key, and that key."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        salt = secrets.token_bytes(SALT_BYTES)
        return cls(user, salt, _hash(salt, key.encode("ascii"))), key

    def to_json(self) -> dict[str, Any]:
        return {**self.user.model_dump(exclude={"name"}), "salt": self.salt.hex(), "hash": self.digest.hex()}


_Stamp = tuple[int, ...]  # (device, inode, size, mtime_ns, ctime_ns, mode): the file changed (or was chmod-ed) when this did


def _stamp(st: os.stat_result) -> _Stamp:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


def _hash(salt: bytes, key: bytes) -> bytes:
    return hashlib.sha256(salt + key).digest()


class _State(NamedTuple):
    """The file as last read, swapped in whole so a check never sees half of two reads."""

    stamp: _Stamp | None  # None: there was no file
    entries: dict[str, _Entry]
    error: UsersFileError | None  # the file is broken: nobody authenticates


_PATH_LOCKS: dict[str, threading.Lock] = {}
_PATH_LOCKS_GUARD = threading.Lock()


def _path_lock(path: Path) -> threading.Lock:
    """One lock per users file in this process (any number of `Users` on it share it)."""
    with _PATH_LOCKS_GUARD:
        return _PATH_LOCKS.setdefault(str(path.absolute()), threading.Lock())


class Users:
    """The users file at `path`: who may read what, and whose key is which.

    Reads follow the file as other processes change it (one stat per check); changes are
    read-modify-write under a lock that holds across threads and processes.

    Args:
        path: the users file (Settings.users_file); it need not exist yet (`add` creates it).
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = _path_lock(self.path)
        self._read_lock = threading.Lock()  # one reload at a time; checks of an unchanged file never wait on a writer
        self._state: _State | None = None  # the file as last read; None: not looked at yet
        self._logged: _Stamp | None = None  # the broken file whose error was logged last

    @classmethod
    def open(cls, path: Path | str) -> Users | None:
        """The users in `path`, read and checked now; None when there is no such file (then the
        server has no users, as a single user's rag).

        Raises:
            UsersFileError: it is damaged, or readable or writable by others.
        """
        users = cls(path)
        if not users.path.exists():
            return None
        users._current(strict=True)
        return users

    # -- reading -------------------------------------------------------------------------
    def list(self) -> list[User]:
        """Every user, by name (an empty list when the file is missing).

        Raises:
            UsersFileError: the file is damaged or readable by others.
        """
        entries = self._current(strict=True)
        return [entries[name].user.model_copy(deep=True) for name in sorted(entries)]

    def get(self, name: str) -> User | None:
        """The user called `name` as the file says now; None if there is none (or the file is
        broken: a removed or unreadable user reads nothing)."""
        entries = self._current()
        entry = entries.get(name) if isinstance(name, str) else None
        return entry.user.model_copy(deep=True) if entry is not None else None

    def authenticate(self, key: str) -> User | None:
        """The user whose key this is, or None: for a wrong, revoked, rotated, empty or oversized
        key, a non-string, or while the file is broken or missing. Never raises.

        The key is hashed with every user's salt and each hash compared in constant time, with
        no early exit, so an unknown key takes as long as a wrong or revoked one.
        """
        if not isinstance(key, str) or not key or len(key) > MAX_KEY_CHARS or not key.isascii():
            return None
        try:
            entries = self._current()
        except Exception:  # never let a check raise: a failure is a refusal
            log.exception("users file %s could not be checked: no key is accepted", self.path)
            return None
        raw = key.encode("ascii")
        found = None
        for entry in entries.values():
            if hmac.compare_digest(_hash(entry.salt, raw), entry.digest):
                found = entry.user
        return found.model_copy(deep=True) if found is not None else None

    def check_password(self, name: str, key: str) -> bool:
        """Gradio's auth hook: `key` is a user's key and `name` that user's name (both compared in
        constant time)."""
        user = self.authenticate(key)
        given = name.encode("utf-8", "surrogatepass") if isinstance(name, str) else b""
        expected = user.name.encode("utf-8") if user is not None else b"\x00"
        return hmac.compare_digest(given, expected) and user is not None

    # -- changing ------------------------------------------------------------------------
    def add(self, name: str, collections: Iterable[str], admin: bool = False) -> str:
        """Add a user who may read `collections` (`"*"`: all), and return their key (shown once:
        only its hash is kept). Creates the file and its folder on the first user.

        Raises:
            ValueError: the name or a collection name is not valid, or the user exists.
            UsersFileError: the file is damaged or readable by others.
        """
        check_user_name(name)
        names = [collections] if isinstance(collections, str) else list(collections)
        names = [n if n == ALL else check_collection_name(n) for n in names]
        if not names:
            raise ValueError(f"give the collections {name!r} may read, e.g. hr,default ({ALL!r}: all)")
        user = User(name=name, collections=names, admin=bool(admin), created_at=time.time())
        with self._changing() as entries:
            if user.name in entries:
                raise ValueError(f"user {user.name!r} already exists (`rag users rotate {user.name}` gives them a new key)")
            entries[user.name], key = _Entry.new(user)
        return key

    def remove(self, name: str) -> None:
        """Remove a user: their key stops working at once (in every running server).

        Raises:
            KeyError: there is no such user.
            UsersFileError: the file is damaged or readable by others.
        """
        with self._changing() as entries:
            if name not in entries:
                raise KeyError(f"no user {name!r} in {self.path}")
            del entries[name]

    def rotate(self, name: str) -> str:
        """Give a user a new key and return it; the old one stops working at once.

        Raises:
            KeyError: there is no such user.
            UsersFileError: the file is damaged or readable by others.
        """
        with self._changing() as entries:
            if name not in entries:
                raise KeyError(f"no user {name!r} in {self.path}")
            user = entries[name].user.model_copy(update={"rotated_at": time.time()})
            entries[name], key = _Entry.new(user)
        return key

    # -- the file ------------------------------------------------------------------------
    def _current(self, strict: bool = False) -> dict[str, _Entry]:
        """The users as the file holds them now, read again only if it changed since last time
        (one stat otherwise).

        A broken file gives no users (logged once per change), or raises with `strict`.
        """
        stamp = self._stat()
        state = self._state
        if state is None or state.stamp != stamp:
            with self._read_lock:
                state = self._state
                if state is None or state.stamp != stamp:
                    state = self._reload(state)
        if state.error is None:
            return state.entries
        if strict:
            raise state.error
        if self._logged != state.stamp:
            self._logged = state.stamp
            log.error("%s; no key is accepted until it is fixed", state.error)
        return {}

    def _stat(self) -> _Stamp | None:
        """The file's stamp; None when there is none."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        except OSError as err:  # e.g. its folder is not searchable: reading it will say why
            return (-1, err.errno or 0)
        return _stamp(st)

    def _reload(self, previous: _State | None) -> _State:
        try:
            entries, stamp = self._read()
            state = _State(stamp, entries, None)
        except FileNotFoundError:
            state = _State(None, {}, None)
            if previous is not None and previous.stamp is not None:
                log.error("users file %s was deleted: no key is accepted until it is back (`rag users add` makes a new one)", self.path)
        except UsersFileError as err:
            state = _State(self._stat(), {}, err)
        if previous is not None and previous.error is not None and state.error is None and state.stamp is not None:
            log.warning("users file %s is usable again: %d users", self.path, len(state.entries))
        self._state = state
        return state

    def _read(self) -> tuple[dict[str, _Entry], _Stamp]:
        """Read and check the file: its mode first (on the open file), then its contents.

        Raises:
            UsersFileError: what is wrong with it, in one line.
            FileNotFoundError: there is none.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise  # no file is not a broken one
        except OSError as err:
            raise UsersFileError(f"users file {self.path} cannot be read: {err.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise UsersFileError(f"users file {self.path} is not a regular file")
            mode = stat.S_IMODE(st.st_mode)
            if mode & 0o077:
                what = " and ".join(w for w, bits in (("readable", 0o044), ("writable", 0o022), ("executable", 0o011)) if mode & bits)
                raise UsersFileError(f"users file {self.path} is {what} by others (mode {mode:04o}): chmod 600 it")
            data = f.read()
        stamp = _stamp(st)
        return self._parse(data), stamp

    def _parse(self, data: bytes) -> dict[str, _Entry]:
        where = f"users file {self.path}"
        try:
            doc = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise UsersFileError(f"{where} is not UTF-8 text: restore it from a backup or remove it and add the users again") from None
        except json.JSONDecodeError as err:
            raise UsersFileError(f"{where} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}): restore it from a backup or remove it and add the users again") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("users"), dict) or "format" not in doc:
            raise UsersFileError(f'{where} is not a rag users file (expected {{"format": {FORMAT}, "users": {{...}}}})')
        if doc["format"] != FORMAT:
            raise UsersFileError(f"{where} has format {doc['format']!r}; this rag reads format {FORMAT}")
        entries = {}
        for name, raw in doc["users"].items():
            if not isinstance(raw, dict):
                raise UsersFileError(f"{where}: user {name!r} is not an object")
            fields = dict(raw)
            salt, digest = fields.pop("salt", None), fields.pop("hash", None)
            if not (isinstance(salt, str) and len(salt) == 2 * SALT_BYTES and _HEX.fullmatch(salt)):
                raise UsersFileError(f"{where}: user {name!r} has no valid salt ({2 * SALT_BYTES} hex digits)")
            if not (isinstance(digest, str) and len(digest) == 64 and _HEX.fullmatch(digest)):
                raise UsersFileError(f"{where}: user {name!r} has no valid hash (64 hex digits)")
            try:
                user = User.model_validate({**fields, "name": name})
            except ValidationError as err:
                first = err.errors()[0]
                field = ".".join(str(p) for p in first["loc"]) or "entry"
                raise UsersFileError(f"{where}: user {name!r}: {field}: {first['msg']}") from None
            entries[name] = _Entry(user, bytes.fromhex(salt), bytes.fromhex(digest))
        return entries

    @contextmanager
    def _changing(self) -> Iterator[dict[str, _Entry]]:
        """Read the file afresh under both locks, let the block change the users, write it back
        (only if the block did not raise)."""
        with self._lock, self._file_lock():
            try:
                entries, stamp = self._read()
            except FileNotFoundError:
                entries, stamp = {}, None
            changed = dict(entries)
            yield changed
            new_stamp = self._write(changed, stamp)
            with self._read_lock:
                self._state = _State(new_stamp, changed, None)

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        """An exclusive `flock` on the sidecar `<file>.lock` (kept, never deleted: deleting a lock
        file lets two processes lock two different files)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _write(self, entries: dict[str, _Entry], previous: _Stamp | None) -> _Stamp:
        """Replace the file atomically with `entries`; the result's stamp.

        Its mtime is made later than the previous file's: a new file can reuse the inode of one
        replaced a moment ago, and two writes within one tick of a coarse file clock could then
        look unchanged to a server that compares stamps, which would keep a rotated key working.
        """
        text = json.dumps({"format": FORMAT, "users": {name: entries[name].to_json() for name in sorted(entries)}}, indent=2) + "\n"
        folder = self.path.parent
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{self.path.name}.", suffix=".tmp")  # O_CREAT | O_EXCL, mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                os.fchmod(f.fileno(), 0o600)  # exactly 0600, whatever the umask
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            mtime = max(time.time_ns(), (previous[3] if previous else 0) + 1_000)
            os.utime(tmp, ns=(mtime, mtime))
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash
        finally:
            os.close(dir_fd)
        st = os.stat(self.path)
        return _stamp(st)


# -- rag users add | list | remove | rotate ------------------------------------------------------
def register(subparsers: Any) -> None:
    """Add `users` and its sub-commands to the parser of `python -m rag` (`subparsers`: what
    `ArgumentParser.add_subparsers()` returned)."""
    users = subparsers.add_parser("users", help="the team's users: who may read which collections, and their API keys")
    sub = users.add_subparsers(dest="users_command", required=True)

    p = sub.add_parser("add", help="add a user and print their new key (once)")
    p.add_argument("name", help="1-64 letters, digits, '.', '-' or '_'")
    p.add_argument("--collections", required=True, help=f"comma-separated collections they may read, e.g. hr,default; {ALL!r}: all")
    p.add_argument("--admin", action="store_true", help="may also add, upload and remove documents")
    p.set_defaults(func=_cmd_add)

    p = sub.add_parser("list", help="the users, their collections and when they were added (never keys)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("remove", help="remove a user: their key stops working at once")
    p.add_argument("name")
    p.set_defaults(func=_cmd_remove)

    p = sub.add_parser("rotate", help="give a user a new key (printed once); the old one stops working at once")
    p.add_argument("name")
    p.set_defaults(func=_cmd_rotate)


def _users_file() -> Path:
    from ..config import Settings

    return Path(Settings().users_file)  # type: ignore[arg-type]


def _fail(message: object) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _show_key(name: str, key: str) -> None:
    print(f"Key for {name} (shown this once, never again: only a salted hash of it is stored):")
    print(key)


def _cmd_add(args: argparse.Namespace) -> int:
    collections = [c.strip() for c in args.collections.split(",") if c.strip()]
    try:
        key = Users(_users_file()).add(args.name, collections, admin=args.admin)
    except (ValueError, UsersFileError) as err:
        return _fail(err)
    print(f"Added {args.name}{' (admin)' if args.admin else ''}, who may read: {', '.join(collections)}.")
    _show_key(args.name, key)
    return 0


def _cmd_rotate(args: argparse.Namespace) -> int:
    try:
        key = Users(_users_file()).rotate(args.name)
    except KeyError as err:
        return _fail(err.args[0])
    except UsersFileError as err:
        return _fail(err)
    print(f"New key for {args.name}; the old one no longer works.")
    _show_key(args.name, key)
    return 0


def _cmd_remove(args: argparse.Namespace) -> int:
    try:
        Users(_users_file()).remove(args.name)
    except KeyError as err:
        return _fail(err.args[0])
    except UsersFileError as err:
        return _fail(err)
    print(f"Removed {args.name}: their key no longer works.")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    path = _users_file()
    try:
        users = Users(path).list()
    except UsersFileError as err:
        return _fail(err)
    if args.json:
        print(json.dumps([u.model_dump(mode="json") for u in users], indent=2))
        return 0
    if not users:
        print(f"No users in {path}" + ("." if path.exists() else ": without a users file everyone reads everything."))
        return 0
    rows = [("NAME", "ADMIN", "COLLECTIONS", "CREATED")] + [
        (u.name, "yes" if u.admin else "no", ",".join(u.collections), datetime.fromtimestamp(u.created_at).strftime("%Y-%m-%d %H:%M")) for u in users
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3])
    return 0
