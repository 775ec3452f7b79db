"""Who may talk to the interchange: the managers this run of the endpoint started.

The interchange's port is reachable from compute nodes (and, on one host, from
anyone on it). A peer that registered as a manager would be handed users' tasks
(functions and arguments) and could answer them with forged results; so every
connection is authenticated by ZeroMQ's ZAP before a frame of it is read:

- ``curve`` (CurveZMQ): encrypted and authenticated with keys made for this run
  of the endpoint; for an interchange that compute nodes reach over a network.
- ``password`` (ZeroMQ's PLAIN): a random password for this run, sent in the
  clear, no encryption cost; for an interchange bound to the loopback interface,
  which only this host can reach (and only root can read).

The agent writes the manager's half to a file readable by its owner only (in the
endpoint's folder, which a pilot job on a shared filesystem reads); the manager
is started with ``--credentials <file>``. The ZAP handler has no thread: its
socket is polled and answered by the loop that drives the interchange.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import zmq
from zmq.utils import z85

from funcx_flows.errors import ConfigError
from funcx_flows.home import write_secret

log = logging.getLogger(__name__)

Mechanism = Literal["curve", "password"]
MECHANISMS: tuple[Mechanism, ...] = ("curve", "password")
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_PER_TURN = 64
REFUSAL_LOG_PERIOD_S = 10.0
_USER = "manager"


@dataclass(frozen=True)
class ManagerCredentials:
    """What a manager needs to dial the interchange (keys as Z85 text)."""

    mechanism: Mechanism
    server_key: str = ""  # curve: the interchange's public key
    public_key: str = ""  # curve: the managers' key pair
    secret_key: str = ""
    password: str = ""  # password

    def apply(self, sock: zmq.Socket[bytes]) -> None:
        """Set up a manager's socket (before it connects)."""
        if self.mechanism == "curve":
            sock.curve_serverkey = self.server_key.encode()
            sock.curve_publickey = self.public_key.encode()
            sock.curve_secretkey = self.secret_key.encode()
        else:
            sock.plain_username = _USER.encode()
            sock.plain_password = self.password.encode()

    def save(self, path: Path) -> None:
        write_secret(path, json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> ManagerCredentials:
        try:
            data = json.loads(path.read_text())
            creds = cls(**data)
        except OSError as exc:
            raise ConfigError(f"cannot read the manager's credentials {path}: "
                              f"{exc.strerror or exc}") from exc
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"the manager's credentials {path} are not valid: {exc}") from exc
        problem = creds._problem()
        if problem:
            raise ConfigError(f"the manager's credentials {path} are not valid: {problem}")
        return creds

    def _problem(self) -> str:
        if self.mechanism not in MECHANISMS:
            return f"unknown mechanism {self.mechanism!r}"
        if not all(isinstance(v, str) for v in asdict(self).values()):
            return "every value must be a string"
        if self.mechanism == "password":
            return "" if self.password else "no password"
        for name in ("server_key", "public_key", "secret_key"):
            key = getattr(self, name)
            try:
                if len(key) != 40 or len(z85.decode(key)) != 32:
                    raise ValueError
            except ValueError:
                return f"{name} is not a CurveZMQ key (40 characters of Z85)"
        return ""


class Gate:
    """The interchange's side: server keys or password, and the ZAP handler that
    admits only holders of the managers' credentials."""

    def __init__(self, mechanism: Mechanism) -> None:
        self.mechanism = mechanism
        self.sock: zmq.Socket[bytes] | None = None
        self.refused = 0
        self._warned_at = -REFUSAL_LOG_PERIOD_S
        if mechanism == "curve":
            server_public, self._server_secret = zmq.curve_keypair()
            public, secret = zmq.curve_keypair()
            self._allowed_key = z85.decode(public)
            self.credentials = ManagerCredentials(
                "curve", server_key=server_public.decode(), public_key=public.decode(),
                secret_key=secret.decode())
        else:
            self._server_secret = b""
            self._allowed_key = b""
            self.credentials = ManagerCredentials("password", password=secrets.token_urlsafe(32))

    def guard(self, ctx: zmq.Context[zmq.Socket[bytes]], server: zmq.Socket[bytes]) -> None:
        """Bind the ZAP handler in ``ctx`` and make ``server`` (not yet bound)
        demand credentials. One gate per context: ZAP's endpoint is the context's."""
        sock = ctx.socket(zmq.REP)
        sock.linger = 0
        sock.bind(ZAP_ENDPOINT)
        self.sock = sock
        server.zap_domain = b"interchange"
        if self.mechanism == "curve":
            server.curve_server = True
            server.curve_secretkey = self._server_secret
        else:
            server.plain_server = True

    def answer(self) -> None:
        """Answer the ZAP requests waiting (call when ``sock`` is readable), up to
        ZAP_PER_TURN: a peer refused over and over (libzmq retries) must not hold
        up the loop."""
        assert self.sock is not None
        for _ in range(ZAP_PER_TURN):
            try:
                request = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.sock.send_multipart(self._reply(request))

    def _reply(self, request: list[bytes]) -> list[bytes]:
        if len(request) < 6 or request[0] != b"1.0":
            return [b"1.0", request[1] if len(request) > 1 else b"", b"400",
                    b"malformed ZAP request", b"", b""]
        request_id, address, mechanism, credentials = (request[1], request[3], request[5],
                                                       request[6:])
        if self._admits(mechanism, credentials):
            return [b"1.0", request_id, b"200", b"OK", _USER.encode(), b""]
        self.refused += 1
        now = time.monotonic()
        if now - self._warned_at >= REFUSAL_LOG_PERIOD_S:  # one line, not one per retry
            self._warned_at = now
            log.warning("refused a connection to the interchange from %s (%s without valid "
                        "credentials; %d refused so far)", address.decode(errors="replace"),
                        mechanism.decode(errors="replace"), self.refused)
        return [b"1.0", request_id, b"400", b"not a manager of this endpoint", b"", b""]

    def _admits(self, mechanism: bytes, credentials: list[bytes]) -> bool:
        if self.mechanism == "curve":
            return (mechanism == b"CURVE" and len(credentials) == 1
                    and hmac.compare_digest(credentials[0], self._allowed_key))
        return (mechanism == b"PLAIN" and len(credentials) == 2
                and credentials[0] == _USER.encode()
                and hmac.compare_digest(credentials[1], self.credentials.password.encode()))

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None
