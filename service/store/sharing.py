"""Who may see and use a function or an endpoint: its owner, and whom it is shared
with (named users, Globus groups, or everyone).

A share is a row ``(kind, object_id, principal)``; a principal is ``public``,
``user:<user_id>`` or ``group:<globus group id>``. A user may use a shared thing
when one of their principals is among its rows. Only owners read or change the
shares. Someone else's thing that is not shared with you answers ``NotFound``
(its existence is not revealed); a shared one that you try to change or delete,
``PermissionDenied``.

Two caches: owners (they never change, and a deleted thing leaves the cache when
deleted) and the answers to "may this user use these ids" (until the next change
of any share).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Table, delete, insert, or_, select

from funcx_flows.errors import InvalidRequest, NotFound, PermissionDenied

from ..db import endpoints, functions, shares, users
from .identity import User, valid_uuid

PUBLIC = "public"
KINDS = ("function", "endpoint")


def principals(user_id: str, groups: Iterable[str]) -> list[str]:
    return [PUBLIC, f"user:{user_id}", *(f"group:{g}" for g in sorted(groups))]


def check_group_ids(groups: Iterable[str]) -> list[str]:
    out = []
    for g in groups:
        try:
            out.append(str(uuid.UUID(g)))
        except ValueError as exc:
            raise InvalidRequest(f"group {g!r} is not a Globus group id (a UUID)",
                                 field="groups") from exc
    return sorted(set(out))


def table_of(kind: str) -> tuple[Table, Any]:
    """The table of a kind of thing, and its id column."""
    if kind == "function":
        return functions, functions.c.function_id
    return endpoints, endpoints.c.endpoint_id


class Sharing:
    def __init__(self) -> None:
        self._usable: dict[tuple[str, str, tuple[str, ...]], bool] = {}
        self._lock = threading.Lock()
        self._owners: dict[tuple[str, str], str] = {}  # (kind, id) -> owner user id

    # ------------------------------------------------------------ checks --

    def check_usable(self, conn: Connection, user: User, kind: str, ids: set[str]) -> None:
        """Raise NotFound unless every id is the user's or shared with them."""
        unknown = {i for i in ids if self._owners.get((kind, i)) != user.user_id}
        if not unknown:
            return
        table, col = table_of(kind)
        found = {str(r[0]) for r in conn.execute(select(col).where(
            col.in_(unknown), table.c.owner_id == user.user_id))}
        for i in found:
            self._owners[(kind, i)] = user.user_id
        rest = unknown - found
        if rest:
            rest -= self.usable(conn, kind, rest, user.user_id, user.groups)
        if rest:
            raise NotFound(f"no {kind} {sorted(rest)[0]!r} is visible to you")

    def usable(self, conn: Connection, kind: str, ids: set[str], user_id: str,
               groups: Iterable[str]) -> set[str]:
        """Those of ``ids`` that a share opens to this user."""
        who = tuple(principals(user_id, groups))
        with self._lock:
            known = {i: self._usable.get((kind, i, who)) for i in ids}
        ask = {i for i, v in known.items() if v is None}
        if ask:
            found = {str(r[0]) for r in conn.execute(select(shares.c.object_id).where(
                shares.c.kind == kind, shares.c.object_id.in_(ask),
                shares.c.principal.in_(who)))}
            with self._lock:
                if len(self._usable) > 100_000:
                    self._usable.clear()
                for i in ask:
                    known[i] = self._usable[(kind, i, who)] = i in found
        return {i for i, v in known.items() if v}

    def visible(self, conn: Connection, user: User, kind: str, object_id: str
                ) -> dict[str, Any]:
        """The row of a thing the user owns or may use (``owned`` says which)."""
        table, col = table_of(kind)
        row = None
        if valid_uuid(object_id):
            row = conn.execute(select(table).where(col == object_id)).mappings().first()
            if row is not None and row["owner_id"] != user.user_id and not \
                    self.usable(conn, kind, {object_id}, user.user_id, user.groups):
                row = None
        if row is None:
            raise NotFound(f"no {kind} {object_id!r} is visible to you")
        return {**row, "owned": row["owner_id"] == user.user_id}

    def owned(self, conn: Connection, user: User, kind: str, object_id: str,
              action: str) -> dict[str, Any]:
        """The row of a thing of the user's; PermissionDenied for a shared one."""
        row = self.visible(conn, user, kind, object_id)
        if not row["owned"]:
            raise PermissionDenied(f"{kind} {object_id} is shared with you; only its owner "
                                   f"can {action}")
        return row

    def listing(self, conn: Connection, user: User, kind: str, cols: list[Any],
                shared: bool) -> list[dict[str, Any]]:
        """The user's things; with ``shared``, also those shared with them."""
        table, col = table_of(kind)
        where = table.c.owner_id == user.user_id
        if shared:
            ids = self.shared_ids(conn, kind, user.user_id, user.groups, True)
            where = or_(where, col.in_(ids))
        rows = conn.execute(select(*cols).where(where).order_by(table.c.created_at)).mappings()
        return [{**r, "owned": r["owner_id"] == user.user_id} for r in rows]

    @staticmethod
    def shared_ids(conn: Connection, kind: str, user_id: str, groups: Iterable[str],
                   include_public: bool) -> set[str]:
        who = principals(user_id, groups)
        if not include_public:
            who.remove(PUBLIC)
        return {str(r[0]) for r in conn.execute(select(shares.c.object_id).where(
            shares.c.kind == kind, shares.c.principal.in_(who)))}

    # ----------------------------------------------------------- changes --

    @staticmethod
    def describe(conn: Connection, kind: str, object_id: str) -> dict[str, Any]:
        rows = [str(r[0]) for r in conn.execute(select(shares.c.principal).where(
            shares.c.kind == kind, shares.c.object_id == object_id))]
        user_ids = [p[5:] for p in rows if p.startswith("user:")]
        names = sorted(str(r[0]) for r in conn.execute(
            select(users.c.name).where(users.c.user_id.in_(user_ids)))) if user_ids else []
        return {"public": PUBLIC in rows, "users": names,
                "groups": sorted(p[6:] for p in rows if p.startswith("group:"))}

    def replace(self, conn: Connection, user: User, kind: str, object_id: str, *,
                public: bool, user_names: Sequence[str], groups: Sequence[str]
                ) -> dict[str, Any]:
        """Replace whom a thing of the user's is shared with (users by the names the
        service knows them by; ``check_group_ids`` first); the new description."""
        found = {str(n): str(i) for n, i in conn.execute(
            select(users.c.name, users.c.user_id).where(users.c.name.in_(set(user_names))))}
        unknown = sorted(set(user_names) - found.keys())
        if unknown:
            raise InvalidRequest(f"no user named {unknown[0]!r}", field="users")
        wanted = ([PUBLIC] if public else []) + [
            f"user:{u}" for u in sorted({i for i in found.values() if i != user.user_id})]
        wanted += [f"group:{g}" for g in groups]
        conn.execute(delete(shares).where(shares.c.kind == kind,
                                          shares.c.object_id == object_id))
        if wanted:
            now = time.time()
            conn.execute(insert(shares), [{"kind": kind, "object_id": object_id,
                                           "principal": p, "created_at": now} for p in wanted])
        self.forget()
        return self.describe(conn, kind, object_id)

    @staticmethod
    def drop(conn: Connection, kind: str, object_id: str) -> None:
        """A thing is being deleted: its shares go with it (``deleted`` once committed)."""
        conn.execute(delete(shares).where(shares.c.kind == kind,
                                          shares.c.object_id == object_id))

    def deleted(self, kind: str, object_id: str) -> None:
        """A thing was deleted: what was cached about it goes."""
        self._owners.pop((kind, object_id), None)
        self.forget()

    def forget(self) -> None:
        with self._lock:
            self._usable.clear()
