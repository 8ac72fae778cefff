"""Users and their keys (rag/serve/users.py): the file never holds a key and is never readable by
others, only a current key of a current user authenticates, a running server sees another
process's change at once, a broken or deleted file accepts no key, and concurrent adds lose
nobody. Pure logic, in tmp_path (fast tier)."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from rag.serve import users as users_module
from rag.serve.users import COLLECTION_NAME, User, Users, UsersFileError, check_collection_name, register

REPO = Path(__file__).resolve().parents[1]
KEY = re.compile(r"\brag_[A-Za-z0-9_-]{20,}")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "team" / "users.json"  # its folder does not exist yet: the first add makes it


def mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_add_list_get_rotate_remove(path):
    users = Users(path)
    ann = users.add("ann", ["hr", "default"])
    root = users.add("root", ["*"], admin=True)
    assert ann != root and ann.startswith("rag_") and len(ann) == 4 + 43  # 32 random bytes, base64url
    assert [(u.name, u.collections, u.admin, u.rotated_at) for u in users.list()] == [("ann", ["hr", "default"], False, None), ("root", ["*"], True, None)]
    assert users.get("ann").collections == ["hr", "default"] and users.get("bob") is None
    assert users.authenticate(ann).name == "ann" and users.authenticate(root).name == "root"

    new = users.rotate("ann")
    assert new != ann and users.authenticate(new).name == "ann" and users.authenticate(ann) is None
    assert users.get("ann").rotated_at is not None and users.get("ann").created_at <= users.get("ann").rotated_at

    users.remove("ann")
    assert [u.name for u in users.list()] == ["root"] and users.authenticate(new) is None
    assert [u.name for u in Users.open(path).list()] == ["root"]  # on disk, not only in this instance


def test_errors_of_add_remove_and_rotate(path):
    users = Users(path)
    users.add("ann", ["hr"])
    with pytest.raises(ValueError, match="already exists"):
        users.add("ann", ["default"])
    with pytest.raises(KeyError, match="bob"):
        users.remove("bob")
    with pytest.raises(KeyError, match="bob"):
        users.rotate("bob")
    for name in ["", "a b", "../etc", "x" * 65, "ünï", "..", None]:
        with pytest.raises(ValueError):
            users.add(name, ["hr"])
    with pytest.raises(ValueError, match="collections"):
        users.add("bob", [])
    with pytest.raises(ValueError, match="not a collection name"):
        users.add("bob", ["hr", "a/b"])
    assert [u.name for u in users.list()] == ["ann"]


def test_open_without_a_file_is_none_and_creates_nothing(path):
    assert Users.open(path) is None
    assert Users(path).list() == [] and Users(path).authenticate("rag_x") is None
    assert not path.parent.exists()


def test_the_file_holds_salted_hashes_never_a_key(path):
    users = Users(path)
    keys = [users.add("ann", ["hr"]), users.add("bob", ["*"], admin=True)]
    keys.append(users.rotate("ann"))
    raw = path.read_text(encoding="utf-8")
    for key in keys:
        assert key not in raw and key.removeprefix("rag_") not in raw and key[4:20] not in raw
    doc = json.loads(raw)
    assert doc["format"] == 1 and set(doc["users"]) == {"ann", "bob"}
    bob = doc["users"]["bob"]
    assert set(bob) == {"collections", "admin", "created_at", "rotated_at", "salt", "hash"}
    assert len(bytes.fromhex(bob["salt"])) == 16 and bob["salt"] != doc["users"]["ann"]["salt"]
    assert bob["hash"] == hashlib.sha256(bytes.fromhex(bob["salt"]) + keys[1].encode()).hexdigest()  # known answer


def test_mode_is_0600_after_every_write_whatever_the_umask(path):
    old = os.umask(0)  # the most permissive umask: the file must still be 0600
    try:
        users = Users(path)
        users.add("ann", ["hr"])
        assert mode(path) == 0o600
        users.rotate("ann")
        assert mode(path) == 0o600
        users.add("bob", ["default"])
        assert mode(path) == 0o600
        users.remove("bob")
        assert mode(path) == 0o600
    finally:
        os.umask(old)
    assert mode(path.with_name("users.json.lock")) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["users.json", "users.json.lock"]  # no temp file left


def test_no_moment_with_a_file_readable_by_others(path, monkeypatch):
    """The new file is 0600 before it takes the users file's name, and holds all of its text."""
    seen = []
    real_replace = os.replace

    def replace(src, dst):
        seen.append((mode(Path(src)), Path(src).parent == Path(dst).parent, json.loads(Path(src).read_text())["format"]))
        real_replace(src, dst)

    old = os.umask(0)
    monkeypatch.setattr(users_module.os, "replace", replace)
    try:
        users = Users(path)
        users.add("ann", ["hr"])
        users.rotate("ann")
    finally:
        os.umask(old)
    assert seen == [(0o600, True, 1), (0o600, True, 1)]


@pytest.mark.parametrize("case", ["rotated", "removed", "one more char", "one less char", "other case", "empty", "huge", "huge prefix", "non-ascii", "None", "bytes", "int"])
def test_keys_that_do_not_authenticate(path, case):
    users = Users(path)
    key = users.add("ann", ["hr"])
    users.add("bob", ["default"])
    if case == "rotated":
        users.rotate("ann")
    if case == "removed":
        users.remove("ann")
    given = {
        "one more char": key + "x",
        "one less char": key[:-1],
        "other case": key.swapcase(),
        "empty": "",
        "huge": "rag_" + "a" * 600,
        "huge prefix": key + " " * 600,
        "non-ascii": key[:-1] + "é",
        "None": None,
        "bytes": key.encode(),
        "int": 12345,
    }.get(case, key)
    assert users.authenticate(given) is None
    assert users.check_password("ann", given) is False
    assert users.authenticate(users.rotate("bob")).name == "bob"  # the others still work


def test_every_users_hash_is_computed_whatever_the_key(path, monkeypatch):
    """No early exit: a right key for the first user costs as many hashes as a wrong one."""
    users = Users(path)
    keys = [users.add(f"u{i}", ["hr"]) for i in range(5)]
    calls = []
    real = users_module._hash
    monkeypatch.setattr(users_module, "_hash", lambda salt, key: calls.append(1) or real(salt, key))
    for given in [keys[0], keys[4], "rag_" + "x" * 43]:
        calls.clear()
        users.authenticate(given)
        assert len(calls) == 5


def test_check_password_wants_the_name_of_the_keys_user(path):
    users = Users(path)
    ann, bob = users.add("ann", ["hr"]), users.add("bob", ["default"])
    assert users.check_password("ann", ann) is True
    assert users.check_password("bob", bob) is True
    assert users.check_password("bob", ann) is False  # someone else's key
    assert users.check_password("ann ", ann) is False and users.check_password("Ann", ann) is False
    assert users.check_password("", ann) is False and users.check_password(None, ann) is False
    assert users.check_password("ann", "") is False and users.check_password("ann", "wrong") is False


@pytest.mark.parametrize("bits, word", [(0o644, "readable"), (0o604, "readable"), (0o640, "readable"), (0o620, "writable"), (0o602, "writable")])
def test_a_file_others_may_read_or_write_is_refused(path, bits, word):
    Users(path).add("ann", ["hr"])
    path.chmod(bits)
    with pytest.raises(UsersFileError) as err:
        Users.open(path)
    message = str(err.value)
    assert word in message and str(path) in message and f"{bits:04o}" in message and "chmod 600" in message and "\n" not in message
    with pytest.raises(UsersFileError, match=word):
        Users(path).add("bob", ["hr"])  # nor changed: the admin must see it
    with pytest.raises(UsersFileError):
        Users(path).list()


@pytest.mark.parametrize("text, says", [
    ('{"format": 1, "users": {"ann": ', "not valid JSON"),
    ("", "not valid JSON"),
    ("[]", "not a rag users file"),
    ('{"users": {}}', "not a rag users file"),
    ('{"format": 2, "users": {}}', "format 2"),
    ('{"format": 1, "users": {"ann": []}}', "ann"),
    ('{"format": 1, "users": {"ann": {"collections": ["hr"], "admin": false, "created_at": 1.0, "rotated_at": null, "salt": "00"}}}', "salt"),
    ('{"format": 1, "users": {"ann": {"collections": ["hr"], "admin": false, "created_at": 1.0, "rotated_at": null, "salt": "' + "0" * 32 + '"}}}', "hash"),
    ('{"format": 1, "users": {"a/b": {"collections": ["hr"], "admin": false, "created_at": 1.0, "rotated_at": null, "salt": "' + "0" * 32 + '", "hash": "' + "0" * 64 + '"}}}', "not a user name"),
    ('{"format": 1, "users": {"ann": {"collections": ["../hr"], "admin": false, "created_at": 1.0, "rotated_at": null, "salt": "' + "0" * 32 + '", "hash": "' + "0" * 64 + '"}}}', "collection"),
])
def test_a_damaged_file_is_refused_saying_why(path, text, says):
    path.parent.mkdir()
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    with pytest.raises(UsersFileError) as err:
        Users.open(path)
    message = str(err.value)
    assert says in message and message.startswith(f"users file {path}") and "\n" not in message
    with pytest.raises(UsersFileError):
        Users(path).add("bob", ["hr"])  # a damaged file is never overwritten
    assert path.read_text(encoding="utf-8") == text


def test_a_running_server_sees_another_instances_changes_at_once(path):
    admin = Users(path)
    key = admin.add("ann", ["hr"])
    server = Users.open(path)
    assert server.authenticate(key).name == "ann"
    for _ in range(20):  # two quick rotations between checks: the second file may reuse the inode the server read
        old, between, key = key, admin.rotate("ann"), admin.rotate("ann")
        assert server.authenticate(old) is None and server.authenticate(between) is None and server.authenticate(key).name == "ann"
    bob = admin.add("bob", ["default"])
    assert server.authenticate(bob).name == "bob" and server.get("bob").collections == ["default"]
    admin.remove("ann")
    assert server.authenticate(key) is None and server.get("ann") is None and server.check_password("ann", key) is False


def test_a_check_of_an_unchanged_file_costs_one_stat(path, monkeypatch):
    users = Users(path)
    key = users.add("ann", ["hr"])
    server = Users.open(path)
    stats = []
    real = os.stat
    monkeypatch.setattr(users_module.os, "stat", lambda *a, **k: stats.append(a[0]) or real(*a, **k))
    for _ in range(10):
        assert server.authenticate(key).name == "ann"
    assert len(stats) == 10


def test_a_running_server_sees_another_process_rotate_and_remove(path):
    admin = Users(path)
    ann, bob = admin.add("ann", ["hr"]), admin.add("bob", ["hr"])
    server = Users.open(path)
    assert server.authenticate(ann) and server.authenticate(bob)
    code = "import sys; from rag.serve.users import Users; u = Users(sys.argv[1]); print(u.rotate('ann')); u.remove('bob')"
    done = subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    new = done.stdout.strip()
    assert server.authenticate(ann) is None and server.authenticate(bob) is None
    assert server.authenticate(new).name == "ann"


def test_a_file_broken_or_deleted_while_running_accepts_no_key(path, caplog):
    admin = Users(path)
    key = admin.add("ann", ["hr"])
    good = path.read_bytes()
    server = Users.open(path)
    assert server.authenticate(key).name == "ann"

    with caplog.at_level(logging.ERROR, logger="rag.serve.users"):
        path.write_text('{"format": 1, "users": {"ann": ', encoding="utf-8")  # damaged in place (same inode)
        assert server.authenticate(key) is None and server.get("ann") is None and server.check_password("ann", key) is False
    assert any(str(path) in r.getMessage() and "no key is accepted" in r.getMessage() for r in caplog.records)

    path.write_bytes(good)
    assert server.authenticate(key).name == "ann"  # fixed: back at once

    path.chmod(0o644)
    assert server.authenticate(key) is None  # readable by others counts as broken, while running too
    path.chmod(0o600)
    assert server.authenticate(key).name == "ann"

    path.unlink()
    assert server.authenticate(key) is None and server.get("ann") is None  # deleted: closed, not open to all


def test_concurrent_adds_lose_no_user(tmp_path):
    """16 threads add a user each at once, half through a symlinked folder (another path string,
    so another in-process lock: only the file lock keeps them apart)."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    start = threading.Barrier(16)
    keys: dict[str, str] = {}
    errors: list[BaseException] = []

    def add(i: int) -> None:
        users = Users(tmp_path / ("real" if i % 2 else "link") / "users.json")
        start.wait()
        try:
            keys[f"u{i}"] = users.add(f"u{i}", ["hr"])
        except BaseException as err:  # noqa: BLE001 (reported below)
            errors.append(err)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    users = Users.open(real / "users.json")
    assert sorted(u.name for u in users.list()) == sorted(f"u{i}" for i in range(16))
    assert all(users.authenticate(key).name == name for name, key in keys.items())


@pytest.mark.parametrize("name", ["hr", "default", "team-2.docs", "a_b", "x" * 64, "A9"])
def test_collection_names_that_are_valid(name):
    assert check_collection_name(name) == name and COLLECTION_NAME.fullmatch(name)


@pytest.mark.parametrize("name", ["", "x" * 65, ".", "..", "a/b", "a b", "hr\n", "é", "*", None, 3])
def test_collection_names_that_are_not(name):
    with pytest.raises(ValueError, match="not a collection name"):
        check_collection_name(name)


def test_the_user_model_checks_its_fields():
    assert User(name="ann", collections=["hr", "hr", "*"], created_at=1.0).collections == ["hr", "*"]
    for bad in [dict(name="a b", collections=["hr"]), dict(name="ann", collections=[]), dict(name="ann", collections=["a/b"])]:
        with pytest.raises(ValueError):
            User(created_at=1.0, **bad)


# -- rag users ... ----------------------------------------------------------------------------
def rag_users(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["users", *argv])
    return args.func(args)


@pytest.fixture
def cli_file(path, monkeypatch) -> Path:
    monkeypatch.setenv("RAG_USERS_FILE", str(path))
    return path


def test_cli_add_list_rotate_remove(cli_file, capsys):
    assert rag_users("add", "ann", "--collections", "hr, default") == 0
    out = capsys.readouterr().out
    [key] = KEY.findall(out)
    assert "never again" in out and Users.open(cli_file).authenticate(key).name == "ann"
    assert rag_users("add", "root", "--collections", "*", "--admin") == 0
    [root] = KEY.findall(capsys.readouterr().out)

    assert rag_users("list") == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()]
    assert rows[0][:3] == ["NAME", "ADMIN", "COLLECTIONS"] and rows[1][:3] == ["ann", "no", "hr,default"] and rows[2][:3] == ["root", "yes", "*"]
    assert not KEY.search(out) and "hash" not in out and "salt" not in out

    assert rag_users("list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(u["name"], u["collections"], u["admin"]) for u in listed] == [("ann", ["hr", "default"], False), ("root", ["*"], True)]
    assert all(set(u) == {"name", "collections", "admin", "created_at", "rotated_at"} for u in listed)

    assert rag_users("rotate", "ann") == 0
    out = capsys.readouterr().out
    [new] = KEY.findall(out)
    assert "never again" in out and new != key
    users = Users.open(cli_file)
    assert users.authenticate(key) is None and users.authenticate(new).name == "ann"

    assert rag_users("remove", "ann") == 0
    assert users.authenticate(new) is None and users.authenticate(root).name == "root"


@pytest.mark.parametrize("argv, says", [
    (["remove", "bob"], "no user 'bob'"),
    (["rotate", "bob"], "no user 'bob'"),
    (["add", "ann", "--collections", "hr"], "already exists"),
    (["add", "b o b", "--collections", "hr"], "not a user name"),
    (["add", "bob", "--collections", "hr,a/b"], "not a collection name"),
    (["add", "bob", "--collections", ","], "collections"),
])
def test_cli_errors_say_why_and_return_2(cli_file, capsys, argv, says):
    Users(cli_file).add("ann", ["hr"])
    assert rag_users(*argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and says in captured.err and not KEY.search(captured.out + captured.err)
    assert [u.name for u in Users(cli_file).list()] == ["ann"]


def test_cli_on_a_broken_file_returns_2(cli_file, capsys):
    Users(cli_file).add("ann", ["hr"])
    cli_file.chmod(0o644)
    for argv in (["list"], ["add", "bob", "--collections", "hr"], ["rotate", "ann"], ["remove", "ann"]):
        assert rag_users(*argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: users file {cli_file}") and "readable" in err


def test_cli_list_without_a_file(cli_file, capsys):
    assert rag_users("list") == 0
    assert "No users" in capsys.readouterr().out and not cli_file.exists()
