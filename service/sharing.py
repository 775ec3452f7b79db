"""Who besides its owner may use a function or an endpoint: named users, Globus
groups, or everyone.

A share is a row ``(kind, object_id, principal)``; a principal is ``public``,
``user:<user_id>`` or ``group:<globus group id>``. A user may use a shared thing
when one of their principals is among its rows. Only owners read or change the
shares (``Store.get_sharing`` / ``Store.set_sharing``); answers to "may this
user use these ids" are cached until the next change.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Engine, delete, insert, select

from funcx_flows.errors import InvalidRequest
from funcx_flows.service.db import shares, users

PUBLIC = "public"
KINDS = ("function", "endpoint")


def principals(user_id: str, groups: Iterable[str]) -> list[str]:
    return [PUBLIC, f"user:{user_id}", *(f"group:{g}" for g in sorted(groups))]


def check_group_ids(groups: Iterable[str]) -> list[str]:
    out = []
    for g in groups:
        try:
            out.append(str(uuid.UUID(g)))
        except ValueError:
            raise InvalidRequest(f"group {g!r} is not a Globus group id (a UUID)",
                                 field="groups") from None
    return sorted(set(out))


class Sharing:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cache: dict[tuple[str, str, tuple[str, ...]], bool] = {}
        self._lock = threading.Lock()

    def usable(self, conn: Any, kind: str, ids: set[str], user_id: str,
               groups: Iterable[str]) -> set[str]:
        """Those of ``ids`` that a share opens to this user."""
        who = tuple(principals(user_id, groups))
        with self._lock:
            known = {i: self._cache.get((kind, i, who)) for i in ids}
        ask = {i for i, v in known.items() if v is None}
        if ask:
            found = {str(r[0]) for r in conn.execute(select(shares.c.object_id).where(
                shares.c.kind == kind, shares.c.object_id.in_(ask),
                shares.c.principal.in_(who)))}
            with self._lock:
                if len(self._cache) > 100_000:
                    self._cache.clear()
                for i in ask:
                    known[i] = self._cache[(kind, i, who)] = i in found
        return {i for i, v in known.items() if v}

    def shared_ids(self, conn: Any, kind: str, user_id: str, groups: Iterable[str],
                   include_public: bool) -> set[str]:
        who = principals(user_id, groups)
        if not include_public:
            who.remove(PUBLIC)
        return {str(r[0]) for r in conn.execute(select(shares.c.object_id).where(
            shares.c.kind == kind, shares.c.principal.in_(who)))}

    def describe(self, conn: Any, kind: str, object_id: str) -> dict[str, Any]:
        rows = [str(r[0]) for r in conn.execute(select(shares.c.principal).where(
            shares.c.kind == kind, shares.c.object_id == object_id))]
        user_ids = [p[5:] for p in rows if p.startswith("user:")]
        names = sorted(str(r[0]) for r in conn.execute(
            select(users.c.name).where(users.c.user_id.in_(user_ids)))) if user_ids else []
        return {"public": PUBLIC in rows, "users": names,
                "groups": sorted(p[6:] for p in rows if p.startswith("group:"))}

    def replace(self, conn: Any, kind: str, object_id: str, *, public: bool,
                user_ids: Iterable[str], groups: Iterable[str]) -> None:
        wanted = ([PUBLIC] if public else []) + [f"user:{u}" for u in sorted(set(user_ids))]
        wanted += [f"group:{g}" for g in groups]
        conn.execute(delete(shares).where(shares.c.kind == kind,
                                          shares.c.object_id == object_id))
        if wanted:
            now = time.time()
            conn.execute(insert(shares), [{"kind": kind, "object_id": object_id,
                                           "principal": p, "created_at": now} for p in wanted])
        self.forget()

    def drop(self, conn: Any, kind: str, object_id: str) -> None:
        conn.execute(delete(shares).where(shares.c.kind == kind,
                                          shares.c.object_id == object_id))
        self.forget()

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()
