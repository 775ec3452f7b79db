"""Users and their tokens, and who a request is.

A token is stored only as its sha256. It is checked on every request and never
cached: a revoke, by the API, the CLI or another replica, holds for the next
request (one indexed read: ~7 us on the loop's SQLite connection).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, func, insert, select, update

from funcx_flows.errors import NotFound

from ..db import tokens, users
from .statements import Statements, execute


@dataclass(frozen=True)
class User:
    user_id: str
    name: str
    groups: frozenset[str] = frozenset()  # Globus group ids, when Globus Auth says


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# A UUID as ``str(uuid.UUID(...))`` writes it: checked by this pattern in ~0.15 us,
# against ~1.2 us for parsing it. Every id of a submitted task passes here, four
# times (task, function, endpoint, then the store's own check of the batch).
_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def canonical_uuid(value: str) -> str | None:
    """``value`` in the one spelling the database holds (any spelling of a UUID: upper
    case, no dashes, braces, ``urn:uuid:``), or None when it is not a UUID."""
    if isinstance(value, str) and _CANONICAL.fullmatch(value):
        return value
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        return None


def valid_uuid(value: str) -> bool:
    """Ids come canonical from the API's fields; anything else names nothing stored."""
    return canonical_uuid(value) is not None


class Identity:
    def __init__(self, sql: Statements) -> None:
        self.sql = sql

    @staticmethod
    def ensure_user(conn: Connection, name: str) -> User:
        row = conn.execute(select(users).where(users.c.name == name)).mappings().first()
        if row is not None:
            return User(row["user_id"], row["name"])
        user = User(str(uuid.uuid4()), name)
        conn.execute(insert(users).values(user_id=user.user_id, name=name,
                                          created_at=time.time()))
        return user

    @staticmethod
    def user_count(conn: Connection) -> int:
        return int(conn.execute(select(func.count()).select_from(users)).scalar_one())

    @staticmethod
    def create_token(conn: Connection, user: User, name: str) -> tuple[str, str]:
        """A new token of ``user``: its id and the token, which is not kept."""
        token = "fxf_" + secrets.token_urlsafe(32)
        token_id = str(uuid.uuid4())
        conn.execute(insert(tokens).values(
            token_id=token_id, user_id=user.user_id, name=name,
            token_hash=hash_token(token), created_at=time.time()))
        return token_id, token

    def user_of_digest(self, conn: Connection, digest: str) -> User | None:
        """The user of an active token's digest, or None."""
        rows = execute(conn, self.sql.user_of_token, {"h": digest})
        return None if not rows else User(str(rows[0][0]), str(rows[0][1]))

    def revoked_since(self, conn: Connection, since: float) -> list[str]:
        return [str(r[0]) for r in execute(conn, self.sql.revoked_since, {"since": since})]

    @staticmethod
    def list_tokens(conn: Connection, user: User | None) -> list[dict[str, Any]]:
        q = (select(tokens.c.token_id, tokens.c.name, tokens.c.created_at, tokens.c.revoked_at,
                    users.c.name.label("user"))
             .join(users, users.c.user_id == tokens.c.user_id).order_by(tokens.c.created_at))
        if user is not None:
            q = q.where(tokens.c.user_id == user.user_id)
        return [dict(r) for r in conn.execute(q).mappings()]

    @staticmethod
    def revoke_token(conn: Connection, token_id: str, user: User | None) -> str:
        """Revoke a token (of ``user``, if given); its digest."""
        cond = tokens.c.token_id == token_id
        if user is not None:
            cond = and_(cond, tokens.c.user_id == user.user_id)
        digest = conn.execute(update(tokens).where(cond, tokens.c.revoked_at.is_(None))
                              .values(revoked_at=time.time())
                              .returning(tokens.c.token_hash)).scalar()
        if digest is None:
            raise NotFound(f"no active token {token_id!r}")
        return str(digest)
