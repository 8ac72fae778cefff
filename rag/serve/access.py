"""Who is asking, and which collections they may read: the one object every route of the UI and
the API answers with (docs/team.md).

Without a users file everyone reads everything (`Access.everyone()`), as a single user's rag
always did. With one, each request carries the `Access` of the user its key or login names, and
every search, list and viewer of that request is limited to `scope()`: nothing is looked up
outside it first and filtered afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

ALL = "*"  # in a user's collections: every collection, present and future


class NoCollection(LookupError):
    """A collection was asked for that this reader cannot read; the message is the same whether
    it exists or not, so an unreadable collection's name is not confirmed."""

    def __init__(self, name: str) -> None:
        super().__init__(f"No collection {name!r} that you can read.")


@dataclass(frozen=True)
class Access:
    user: str | None
    """The user's name; None without users."""
    collections: frozenset[str] | None
    """The collections they may read; None: every one."""
    admin: bool = False
    """May add, upload and remove documents."""

    @classmethod
    def everyone(cls) -> "Access":
        """No users file: one reader who may do everything (the local, single-user rag)."""
        return cls(user=None, collections=None, admin=True)

    @classmethod
    def of(cls, name: str, collections: Iterable[str], admin: bool) -> "Access":
        names = frozenset(collections)
        return cls(user=name, collections=None if ALL in names else names, admin=admin)

    @classmethod
    def of_bearer(cls, users: Any, authorization: str | None) -> "Access | None":
        """The reader an `Authorization: Bearer <key>` header names among `users`
        (rag.serve.users.Users); None for a missing, malformed, wrong or revoked key. The key is
        hashed against every user's salt even when the scheme is wrong, so a refusal takes as long.

        >>> class Users:
        ...     def authenticate(self, key):
        ...         return type("U", (), {"name": "ann", "collections": ["hr"], "admin": False})() if key == "k1" else None
        >>> Access.of_bearer(Users(), "Bearer k1").user, Access.of_bearer(Users(), "Basic k1"), Access.of_bearer(Users(), None)
        ('ann', None, None)
        """
        scheme, _, key = (authorization or "").partition(" ")
        user = users.authenticate(key.strip() if scheme.lower() == "bearer" else "")
        return None if user is None else cls.of(user.name, user.collections, user.admin)

    def may_read(self, collection: str) -> bool:
        return self.collections is None or collection in self.collections

    def scope(self, requested: str | None = None, known: Iterable[str] | None = None) -> frozenset[str] | None:
        """The collections a question is answered from: the one `requested` (a picker's choice)
        if readable, else all this reader's; None means every collection.

        >>> Access.of("ann", ["hr", "default"], False).scope("hr")
        frozenset({'hr'})

        Raises:
            NoCollection: `requested` is not readable, or not among the `known` collections
                (the index's), with the same message either way.
        """
        if requested is None or requested == "":
            return self.collections
        if not self.may_read(requested) or (known is not None and requested not in known):
            raise NoCollection(requested)
        return frozenset({requested})

    def visible(self, known: Iterable[str]) -> list[str]:
        """Of the `known` collections, those this reader may read, sorted."""
        return sorted(c for c in known if self.may_read(c))
