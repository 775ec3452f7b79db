"""Dashboard sessions: who a browser is, from a signed, HTTP-only cookie.

A browser signs in once (with a funcx-flows token, or through Globus Auth's
browser login) and then carries a cookie, not the token. The cookie holds the
*digest* of the token (as the service stores it) or, for a Globus sign-in, the
identity Globus vouched for, plus an expiry, all signed with HMAC-SHA256 under
a key of the service's (``ui_session_secret``, else a key file in the service's
folder; replicas behind one address must share it). A token digest is looked up
on every request, as the API looks up a token: a revoked token ends the session
at the next page. The cookie is ``Secure``, ``HttpOnly`` and ``SameSite=Lax``:
scripts cannot read it and other sites cannot send it with a form post. The
dashboard changes nothing (its only posts are sign-in and sign-out), so a
forged request can do no harm beyond signing a browser out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from funcx_flows.errors import AuthenticationError
from funcx_flows.home import write_secret
from funcx_flows.service.store import Store, User, hash_token

COOKIE = "fxf_session"
SESSION_S = 12 * 3600.0  # a session lasts a working day, then sign in again


def load_key(secret: str, folder: Path) -> bytes:
    """The signing key: the configured secret, else one kept in ``folder``."""
    if secret:
        return hashlib.sha256(secret.encode()).digest()
    path = folder / "ui_session.key"
    try:
        text = path.read_text().strip()
        if len(text) >= 32:
            return bytes.fromhex(text)
    except (OSError, ValueError):
        pass
    key = secrets.token_bytes(32)
    write_secret(path, key.hex() + "\n")
    return key


@dataclass(frozen=True)
class Session:
    """What a cookie says: a token's digest (``kind="token"``) or a Globus identity."""

    kind: str
    subject: str  # the token digest, or the Globus user name
    expires: float
    groups: tuple[str, ...] = ()


class Sessions:
    def __init__(self, key: bytes, store: Store) -> None:
        self._key = key
        self.store = store

    def _sign(self, body: bytes) -> str:
        return hmac.new(self._key, body, hashlib.sha256).hexdigest()

    def encode(self, s: Session) -> str:
        body = base64.urlsafe_b64encode(json.dumps(
            {"k": s.kind, "s": s.subject, "e": s.expires, "g": list(s.groups)},
            separators=(",", ":")).encode()).rstrip(b"=")  # no "=": the cookie stays unquoted
        return f"{body.decode('ascii')}.{self._sign(body)}"

    def decode(self, cookie: str | None, now: float | None = None) -> Session:
        """The session a cookie holds; ``AuthenticationError`` if it holds none."""
        if not cookie:
            raise AuthenticationError("not signed in")
        body, _, mac = cookie.partition(".")
        if not hmac.compare_digest(self._sign(body.encode("ascii", "replace")), mac):
            raise AuthenticationError("the session cookie is not one this service signed")
        try:
            padded = body + "=" * (-len(body) % 4)
            data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
            s = Session(str(data["k"]), str(data["s"]), float(data["e"]),
                        tuple(str(g) for g in data.get("g", ())))
        except (ValueError, KeyError, TypeError) as exc:
            raise AuthenticationError("the session cookie is malformed") from exc
        if s.expires <= (time.time() if now is None else now):
            raise AuthenticationError("the session has expired: sign in again")
        return s

    def for_token(self, token: str) -> Session:
        """A session for a funcx-flows token, if the service knows it."""
        digest = hash_token(token.strip())
        if self.store.user_of_digest(digest) is None:
            raise AuthenticationError("invalid or revoked token")
        return Session("token", digest, time.time() + SESSION_S)

    def user(self, s: Session) -> User:
        """The user a session speaks for, checked as the API checks a token."""
        if s.kind == "token":
            user = self.store.user_of_digest(s.subject)
            if user is None:
                raise AuthenticationError("the token of this session was revoked")
            return user
        if s.kind == "globus":
            user = self.store.ensure_user(f"globus:{s.subject}")
            return User(user.user_id, user.name, frozenset(s.groups))
        raise AuthenticationError(f"unknown kind of session {s.kind!r}")
