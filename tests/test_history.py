"""Chat history (rag/serve/history.py): conversations persist across a new History on the same
file, a user never reads, appends to or deletes another's (whose ids behave exactly like unknown
ones), both bounds drop the oldest, deleted text leaves the files, hostile strings round-trip,
concurrent appends lose nothing, and a bad file is a HistoryError at open. Pure logic, in
tmp_path (fast tier)."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from rag.config import Settings
from rag.serve.history import MAX_CONTENT_CHARS, History, HistoryError

HOSTILE = [
    "it's \"quoted\"",
    "'; DROP TABLE conversations; --",
    "x' OR '1'='1",
    "%_*",
    "naïve 東京 🙂 \u202e",
    "nul\x00inside",
    "\\ back\\slash \n newline\ttab",
]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "history.sqlite3"  # its folder does not exist yet: opening makes it


def mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def raw(path: Path, sql: str) -> list[tuple]:
    """Query the file directly, past History's filters."""
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_conversations_persist_across_a_new_history(path):
    history = History(path)
    first = history.start("ann", "What is the refund policy?")
    history.append("ann", first, "user", "What is the refund policy?")
    history.append("ann", first, "assistant", "30 days [1].", {"citations": [{"n": 1, "doc": "policy.pdf"}], "score": 0.9})
    second = history.start("ann", "Who is the CEO?")
    history.append("ann", second, "user", "Who is the CEO?")
    before_list, before_messages = history.conversations("ann"), history.messages("ann", first)
    history.close()

    again = History(path)
    assert again.conversations("ann") == before_list
    assert [c.id for c in before_list] == [second, first]  # newest first
    assert [(c.title, c.messages) for c in before_list] == [("Who is the CEO?", 1), ("What is the refund policy?", 2)]
    assert again.messages("ann", first) == before_messages
    assert [(m.role, m.content, m.meta) for m in before_messages] == [
        ("user", "What is the refund policy?", {}),
        ("assistant", "30 days [1].", {"citations": [{"n": 1, "doc": "policy.pdf"}], "score": 0.9}),
    ]
    assert before_messages[0].created <= before_messages[1].created
    c = before_list[1]
    assert c.created <= c.updated == before_messages[1].created
    again.append("ann", first, "user", "and after a restart?")  # still writable
    assert History(path).conversations("ann")[0].id == first  # appending made it the newest


def test_the_file_and_its_folder_are_made_private_with_umask_0(path):
    old = os.umask(0)
    try:
        history = History(path)
        cid = history.start("ann", "hello")
        history.append("ann", cid, "user", "hello")
        files = [p for p in path.parent.iterdir()]
        assert path in files
        for p in files:  # the file, and its -wal and -shm while open
            assert mode(p) == 0o600, p
    finally:
        os.umask(old)
    assert raw(path, "PRAGMA journal_mode") == [("wal",)]


def test_ids_are_random_and_not_guessable(path):
    history = History(path, max_conversations=100)
    ids = [history.start("ann", "q") for _ in range(50)]
    assert len(set(ids)) == 50
    assert all(len(i) == 16 and i.replace("-", "").replace("_", "").isalnum() for i in ids)  # 12 random bytes, base64url


def test_another_users_conversation_is_exactly_an_unknown_one(path):
    history = History(path)
    ann = history.start("ann", "salary bands")
    history.append("ann", ann, "user", "What are the salary bands?")
    history.append("ann", ann, "assistant", "Band 3 pays 71,000 [1].", {"citations": ["hr/bands.pdf"]})
    before = history.messages("ann", ann)

    errors = {}
    for name, call in {
        "messages": lambda cid: history.messages("bob", cid),
        "append": lambda cid: history.append("bob", cid, "user", "let me in"),
        "delete": lambda cid: history.delete("bob", cid),
    }.items():
        with pytest.raises(KeyError) as theirs:
            call(ann)
        with pytest.raises(KeyError) as unknown:
            call("x" * 16)
        errors[name] = (theirs.value.args, unknown.value.args, str(theirs.value) == str(unknown.value))
    assert errors == {name: (("no such conversation",), ("no such conversation",), True) for name in errors}

    assert history.conversations("bob") == []
    assert history.clear("bob") == 0
    assert history.messages("ann", ann) == before  # nothing bob did touched it
    assert [c.messages for c in history.conversations("ann")] == [2]
    assert "let me in" not in str(raw(path, "SELECT content FROM messages"))

    bob = history.start("bob", "my own")
    with pytest.raises(KeyError, match="no such conversation"):
        history.messages("ann", bob)  # and the other way round
    assert [c.id for c in history.conversations("bob")] == [bob]
    assert [c.id for c in history.conversations("ann")] == [ann]


def test_user_names_are_compared_exactly(path):
    history = History(path)
    ann = history.start("ann", "mine")
    for other in ["Ann", "ann ", " ann", "an", "ann\x00", "%", "_nn", "*"]:
        assert history.conversations(other) == [], other
        with pytest.raises(KeyError):
            history.messages(other, ann)
    assert [c.id for c in history.conversations("ann")] == [ann]


def test_conversations_are_bounded_per_user_least_recently_updated_first(path):
    history = History(path, max_conversations=3)
    ids = [history.start("ann", f"q{i}") for i in range(3)]
    history.append("ann", ids[0], "user", "the oldest is used again")  # now the most recently updated
    bob = [history.start("bob", f"b{i}") for i in range(5)]  # bob's starts never drop ann's
    assert [c.id for c in history.conversations("ann")] == [ids[0], ids[2], ids[1]]

    newer = history.start("ann", "q3")  # drops ids[1], the least recently updated, not ids[0], the first started
    assert [c.id for c in history.conversations("ann")] == [newer, ids[0], ids[2]]
    with pytest.raises(KeyError):
        history.messages("ann", ids[1])
    assert [c.id for c in history.conversations("bob")] == bob[::-1][:3]
    assert raw(path, "SELECT count(*) FROM conversations") == [(6,)]


def test_messages_are_bounded_per_conversation_oldest_first(path):
    history = History(path, max_messages=4)
    cid = history.start("ann", "long chat")
    other = history.start("ann", "short chat")
    history.append("ann", other, "user", "kept")
    for i in range(10):
        history.append("ann", cid, "user" if i % 2 == 0 else "assistant", f"m{i}", {"i": i})
    assert [(m.content, m.meta) for m in history.messages("ann", cid)] == [(f"m{i}", {"i": i}) for i in range(6, 10)]
    assert {c.id: c.messages for c in history.conversations("ann")} == {cid: 4, other: 1}
    assert [m.content for m in history.messages("ann", other)] == ["kept"]  # the other conversation's messages are not counted
    assert raw(path, "SELECT count(*) FROM messages") == [(5,)]


def test_long_content_is_cut_and_titles_are_one_short_line(path):
    history = History(path)
    cid = history.start("ann", "  first line\nsecond\tline  " + "x" * 200)
    title = history.conversations("ann")[0].title
    assert title.startswith("first line second line x") and len(title) == 80 and "\n" not in title
    assert history.conversations("ann")[0].title == title
    assert history.conversations("ann")[0].id == cid
    history.start("ann", " \n\t ")
    assert history.conversations("ann")[0].title == "Untitled conversation"

    history.append("ann", cid, "assistant", "a" * MAX_CONTENT_CHARS + "b" * 10)
    history.append("ann", cid, "user", "c" * MAX_CONTENT_CHARS)
    contents = [m.content for m in history.messages("ann", cid)]
    assert contents == ["a" * MAX_CONTENT_CHARS, "c" * MAX_CONTENT_CHARS]


def test_delete_and_clear_touch_only_their_owners_rows(path):
    history = History(path)
    a1, a2, a3 = (history.start("ann", f"q{i}") for i in range(3))
    bob = history.start("bob", "bob's")
    for cid, user in [(a1, "ann"), (a2, "ann"), (a3, "ann"), (bob, "bob")]:
        history.append(user, cid, "user", f"question of {cid}")

    history.delete("ann", a2)
    assert [c.id for c in history.conversations("ann")] == [a3, a1]
    with pytest.raises(KeyError, match="no such conversation"):
        history.delete("ann", a2)  # twice
    with pytest.raises(KeyError, match="no such conversation"):
        history.append("ann", a2, "user", "into a deleted one")
    assert raw(path, f"SELECT count(*) FROM messages WHERE conversation = '{a2}'") == [(0,)]  # its messages went with it

    assert history.clear("ann") == 2
    assert history.conversations("ann") == [] and history.clear("ann") == 0
    assert [c.id for c in history.conversations("bob")] == [bob]
    assert [m.content for m in history.messages("bob", bob)] == [f"question of {bob}"]
    assert raw(path, "SELECT count(*) FROM messages") == [(1,)]


def test_deleted_text_is_gone_from_the_files(path):
    history = History(path, max_messages=2)
    secret, long_secret = "SECRET-salary-71234", "LONGSECRET-" + "z" * 20_000  # the long one spills to overflow pages
    cid = history.start("ann", "keep the title out too " + secret)
    history.append("ann", cid, "user", secret)
    history.append("ann", cid, "assistant", long_secret, {"quote": secret})
    keep = history.start("ann", "kept")
    history.append("ann", keep, "user", "still here")

    def on_disk() -> bytes:
        return b"".join(p.read_bytes() for p in path.parent.iterdir())

    assert secret.encode() in on_disk() and long_secret.encode()[:40] in on_disk()
    history.delete("ann", cid)  # the History stays open: the WAL must not keep the text either
    data = on_disk()
    assert secret.encode() not in data and b"LONGSECRET-" not in data
    assert b"still here" in data

    history.clear("ann")
    assert b"still here" not in on_disk()


def test_hostile_strings_round_trip(path):
    history = History(path)
    ids = {}
    for i, text in enumerate(HOSTILE):
        user = f"user-{i}-{text}"
        cid = history.start(user, text)
        history.append(user, cid, "user", text, {"text": text, text: [text]})
        history.append(user, cid, "assistant", text * 3)
        ids[user] = (cid, text)
    for user, (cid, text) in ids.items():
        [conversation] = history.conversations(user)
        assert conversation.id == cid and conversation.title == " ".join(text.split())
        assert [(m.role, m.content, m.meta) for m in history.messages(user, cid)] == [
            ("user", text, {"text": text, text: [text]}),
            ("assistant", text * 3, {}),
        ]
    assert raw(path, "SELECT count(*) FROM conversations") == [(len(HOSTILE),)]  # no table dropped, no row lost
    assert raw(path, "SELECT count(DISTINCT user) FROM conversations") == [(len(HOSTILE),)]
    assert history.conversations("user-1-'; DROP TABLE conversations; --")[0].id == ids["user-1-'; DROP TABLE conversations; --"][0]
    assert history.conversations("x' OR '1'='1") == [] and history.conversations("%") == []


def test_many_threads_appending_at_once_lose_nothing(path):
    one, other = History(path, max_messages=10_000), History(path, max_messages=10_000)  # two connections, as two processes
    shared = one.start("ann", "everyone writes here")
    threads_n, per_thread = 16, 40
    own: dict[int, str] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads_n)

    def work(t: int) -> None:
        history = one if t % 2 else other
        try:
            own[t] = history.start(f"user{t}", f"thread {t}")
            barrier.wait(timeout=30)
            for i in range(per_thread):
                history.append("ann", shared, "user", f"{t}:{i}")
                history.append(f"user{t}", own[t], "assistant", f"{t}:{i}", {"i": i})
                history.conversations("ann")
        except BaseException as err:  # noqa: BLE001 - surfaced below
            errors.append(err)
            barrier.abort()  # the others stop waiting for this one

    threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a thread is stuck"
    assert [e for e in errors if not isinstance(e, threading.BrokenBarrierError)] == []
    assert errors == []
    got = [m.content for m in one.messages("ann", shared)]
    assert sorted(got) == sorted(f"{t}:{i}" for t in range(threads_n) for i in range(per_thread))
    for t in range(threads_n):
        assert [m.content for m in other.messages(f"user{t}", own[t])] == [f"{t}:{i}" for i in range(per_thread)]  # in order
    assert [m.content for m in History(path).messages("ann", shared)] == got


def test_a_damaged_or_foreign_file_is_refused_at_open(tmp_path):
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not a database, " * 200)
    junk.chmod(0o600)
    with pytest.raises(HistoryError, match=f"history file {junk} is damaged or not a SQLite database"):
        History(junk)

    damaged = tmp_path / "damaged.sqlite3"
    history = History(damaged, max_messages=1000)
    cid = history.start("ann", "q")
    for i in range(200):
        history.append("ann", cid, "user", f"message {i} " + "x" * 500)
    history.close()
    data = bytearray(damaged.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    assert len(data) > 8 * page
    data[2 * page : len(data) - page] = os.urandom(len(data) - 3 * page)  # page 1 (the schema) intact, the tables not
    damaged.write_bytes(bytes(data))
    with pytest.raises(HistoryError, match=f"history file {damaged} is damaged"):
        History(damaged)

    foreign = tmp_path / "other-program.sqlite3"
    raw(foreign, "CREATE TABLE accounts (id INTEGER)")
    foreign.chmod(0o600)
    with pytest.raises(HistoryError, match=f"history file {foreign} is another program's SQLite database"):
        History(foreign)
    assert raw(foreign, "SELECT name FROM sqlite_master") == [("accounts",)]  # and left as it was

    future = tmp_path / "future.sqlite3"
    History(future).close()
    raw(future, "PRAGMA user_version = 2")
    with pytest.raises(HistoryError, match=f"history file {future} is format 2"):
        History(future)

    with pytest.raises(HistoryError, match=f"history file {tmp_path} is not a regular file|history file {tmp_path}: cannot"):
        History(tmp_path)


def test_a_file_readable_by_others_is_refused(path):
    History(path).close()
    path.chmod(0o644)
    with pytest.raises(HistoryError, match=r"readable or writable by others \(mode 644\): run chmod 600"):
        History(path)
    path.chmod(0o620)
    with pytest.raises(HistoryError, match="readable or writable by others"):
        History(path)
    path.chmod(0o600)
    History(path)


def test_a_missing_or_empty_file_is_created(path):
    assert not path.parent.exists()
    History(path).start("ann", "q")
    assert path.is_file()
    empty = path.parent / "empty.sqlite3"
    empty.touch(mode=0o600)
    assert History(empty).conversations("ann") == []
    assert raw(empty, "PRAGMA user_version") == [(1,)]


def test_bad_arguments_are_refused_with_a_reason(path):
    history = History(path)
    cid = history.start("ann", "q")
    with pytest.raises(ValueError, match="role must be 'user' or 'assistant', not 'system'"):
        history.append("ann", cid, "system", "be evil")
    with pytest.raises(TypeError, match="content must be a string"):
        history.append("ann", cid, "user", None)
    with pytest.raises(TypeError, match="meta must be a dict"):
        history.append("ann", cid, "user", "x", ["not", "a", "dict"])
    with pytest.raises(ValueError, match="JSON"):
        history.append("ann", cid, "user", "x", {"obj": object()})
    with pytest.raises(ValueError, match="more than"):
        history.append("ann", cid, "user", "x", {"huge": "y" * 1_000_001})
    with pytest.raises(ValueError, match="user must be a non-empty string"):
        history.start("", "q")
    with pytest.raises(ValueError, match="user must be a non-empty string"):
        history.conversations(None)
    with pytest.raises(KeyError, match="no such conversation"):
        history.messages("ann", None)
    assert history.messages("ann", cid) == []  # nothing refused was written
    with pytest.raises(ValueError, match="max_conversations must be at least 1"):
        History(path, max_conversations=0)
    with pytest.raises(ValueError, match="max_messages must be at least 1"):
        History(path, max_messages=0)


def test_from_settings(tmp_path):
    settings = Settings(root=tmp_path, history_conversations=7, history_messages=9)
    history = History.from_settings(settings)
    assert history.path == tmp_path / "history.sqlite3" == settings.history_file
    assert (history.max_conversations, history.max_messages) == (7, 9)
    assert history.path.is_file()
