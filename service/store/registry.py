"""Functions and endpoints: registered, looked up, deleted; an endpoint's link token
and its allow-list of functions; and the caches every submission reads.

Caches, each with the reason it holds:
- function bodies (an LRU of 1,024): bodies never change under an id;
- whether a function is memoized: fixed at registration;
- allow-lists: dropped when this process re-registers or deletes the endpoint,
  and re-read after ``ALLOW_LIST_CACHE_S``, so that a change made through another
  service replica on the same database holds within seconds (the endpoint checks
  its own list anyway).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from funcx_flows.errors import Conflict, PermissionDenied

from ..db import endpoint_links, endpoints, functions
from .identity import User, hash_token
from .statements import Statements, execute

ALLOW_LIST_CACHE_S = 5.0
BODIES_KEPT = 1024
# the columns of a listing (a function's body only when asked for the function)
FUNCTION_LISTED = [functions.c.function_id, functions.c.name, functions.c.description,
                   functions.c.body_hash, functions.c.created_at, functions.c.memoize,
                   functions.c.owner_id]
ENDPOINT_LISTED = list(endpoints.c)


def body_hash(body: bytes, memoize: bool) -> str:
    # A memoized registration is another function than the plain one of the same body.
    return hashlib.sha256((b"memoize\0" if memoize else b"") + body).hexdigest()


class Registry:
    def __init__(self, sql: Statements,
                 read: Callable[[], AbstractContextManager[Connection]]) -> None:
        """``read``: a connection for filling a cache, outside any transaction."""
        self.sql = sql
        self._read = read
        self._bodies: OrderedDict[str, bytes] = OrderedDict()  # function_id -> body
        self._bodies_lock = threading.Lock()
        self._memoized: dict[str, bool] = {}  # function id -> memoize
        # endpoint id -> (read at, its allow-list of function ids; empty: all)
        self._allowed: dict[str, tuple[float, frozenset[str]]] = {}

    # ------------------------------------------------------------ functions --

    @staticmethod
    def function_of_body(conn: Connection, user: User, body: bytes, memoize: bool
                         ) -> str | None:
        return conn.execute(select(functions.c.function_id).where(
            functions.c.owner_id == user.user_id,
            functions.c.body_hash == body_hash(body, memoize))).scalar()

    def register_function(self, conn: Connection, user: User, name: str, description: str,
                          body: bytes, memoize: bool) -> tuple[str, bool]:
        """The function's id, and whether it is new (the user's same body is the same
        function). IntegrityError when a concurrent registration of it won."""
        existing = self.function_of_body(conn, user, body, memoize)
        if existing is not None:
            return str(existing), False
        function_id = str(uuid.uuid4())
        conn.execute(insert(functions).values(
            function_id=function_id, owner_id=user.user_id, name=name,
            description=description, body_hash=body_hash(body, memoize), body=body,
            created_at=time.time(), memoize=memoize))
        return function_id, True

    @staticmethod
    def delete_function(conn: Connection, function_id: str) -> None:
        conn.execute(delete(functions).where(functions.c.function_id == function_id))

    def function_deleted(self, function_id: str) -> None:
        with self._bodies_lock:
            self._bodies.pop(function_id, None)
        self._memoized.pop(function_id, None)

    def function_bodies(self, function_ids: Iterable[str]) -> dict[str, bytes]:
        wanted = set(function_ids)
        out: dict[str, bytes] = {}
        with self._bodies_lock:
            for fid in wanted:
                body = self._bodies.get(fid)
                if body is not None:
                    out[fid] = body
        missing = wanted - out.keys()
        if missing:
            with self._read() as conn:
                rows = conn.execute(select(functions.c.function_id, functions.c.body)
                                    .where(functions.c.function_id.in_(missing)))
                fetched = {str(r[0]): bytes(r[1]) for r in rows}
            out.update(fetched)
            with self._bodies_lock:
                self._bodies.update(fetched)
                while len(self._bodies) > BODIES_KEPT:
                    self._bodies.popitem(last=False)
        return out

    def memoized(self, conn: Connection, function_ids: Iterable[str]) -> set[str]:
        """Those of these functions registered with memoize."""
        ids = set(function_ids)
        unknown = ids - self._memoized.keys()
        if unknown:
            for fid, flag in conn.execute(select(functions.c.function_id, functions.c.memoize)
                                          .where(functions.c.function_id.in_(unknown))):
                self._memoized[str(fid)] = bool(flag)
        return {fid for fid in ids if self._memoized.get(fid)}

    # ------------------------------------------------------------ endpoints --

    def register_endpoint(self, conn: Connection, user: User, name: str, public_key: str,
                          meta: Mapping[str, Any]) -> tuple[str, bool]:
        """The endpoint's id, and whether it is new (one per owner and name; a
        re-registration replaces its key and metadata)."""
        other = conn.execute(select(endpoints.c.endpoint_id, endpoints.c.owner_id,
                                    endpoints.c.name)
                             .where(endpoints.c.public_key == public_key)).first()
        if other is not None and (other[1] != user.user_id or other[2] != name):
            raise Conflict("this public key already belongs to another endpoint")
        row = conn.execute(select(endpoints.c.endpoint_id).where(
            endpoints.c.owner_id == user.user_id, endpoints.c.name == name)).first()
        if row is not None:
            conn.execute(update(endpoints).where(endpoints.c.endpoint_id == row[0])
                         .values(public_key=public_key, metadata=dict(meta)))
            self._allowed.pop(str(row[0]), None)
            return str(row[0]), False
        endpoint_id = str(uuid.uuid4())
        conn.execute(insert(endpoints).values(
            endpoint_id=endpoint_id, owner_id=user.user_id, name=name,
            public_key=public_key, metadata=dict(meta), created_at=time.time()))
        return endpoint_id, True

    @staticmethod
    def new_link_token(conn: Connection, endpoint_id: str) -> str:
        """A fresh secret for the endpoint's WebSocket link (the last one stops
        working): it proves nothing but being this endpoint."""
        token = "fxe_" + secrets.token_urlsafe(32)
        conn.execute(update(endpoints).where(endpoints.c.endpoint_id == endpoint_id)
                     .values(link_token_hash=hash_token(token)))
        return token

    def link_token_valid(self, conn: Connection, endpoint_id: str, token: str) -> bool:
        return bool(execute(conn, self.sql.endpoint_of_link_token,
                            {"e": endpoint_id, "h": hash_token(token)}))

    @staticmethod
    def delete_endpoint(conn: Connection, endpoint_id: str) -> None:
        """The endpoint, and the replicas' record of its link."""
        conn.execute(delete(endpoint_links).where(endpoint_links.c.endpoint_id == endpoint_id))
        conn.execute(delete(endpoints).where(endpoints.c.endpoint_id == endpoint_id))

    def endpoint_deleted(self, endpoint_id: str) -> None:
        self._allowed.pop(endpoint_id, None)

    @staticmethod
    def endpoint_keys(conn: Connection) -> dict[str, str]:
        return {str(r[0]): str(r[1]) for r in
                conn.execute(select(endpoints.c.endpoint_id, endpoints.c.public_key))}

    @staticmethod
    def touch_endpoint(conn: Connection, endpoint_id: str) -> None:
        conn.execute(update(endpoints).where(endpoints.c.endpoint_id == endpoint_id)
                     .values(last_seen=time.time()))

    def check_allowed(self, conn: Connection, items: Sequence[Mapping[str, Any]]) -> None:
        """An endpoint registered with an allow-list of function ids runs only those."""
        now = time.monotonic()
        stale = (-ALLOW_LIST_CACHE_S, frozenset[str]())
        eids = {eid for eid in (str(t["endpoint_id"]) for t in items)
                if now - self._allowed.get(eid, stale)[0] >= ALLOW_LIST_CACHE_S}
        if eids:
            for eid, meta in conn.execute(select(endpoints.c.endpoint_id, endpoints.c.metadata)
                                          .where(endpoints.c.endpoint_id.in_(eids))):
                self._allowed[str(eid)] = (now, frozenset(
                    (meta.get("allowed_functions") or ()) if isinstance(meta, dict) else ()))
        for t in items:
            ok = self._allowed.get(str(t["endpoint_id"]), (0.0, frozenset()))[1]
            if ok and str(t["function_id"]) not in ok:
                raise PermissionDenied(
                    f"endpoint {t['endpoint_id']} does not allow function {t['function_id']}",
                    endpoint_id=str(t["endpoint_id"]), function_id=str(t["function_id"]))
