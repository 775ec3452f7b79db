"""A local stand-in for Globus Auth's browser login, for the real globus-sdk
client the service uses (``GLOBUS_SDK_SERVICE_URL_AUTH`` points it here).

- ``GET /v2/oauth2/authorize``: the user consents at once; the browser goes back
  to ``redirect_uri`` with a one-time ``code`` and the ``state`` it brought.
- ``POST /v2/oauth2/token`` (``grant_type=authorization_code``, the client's
  HTTP basic credentials): the code, for the same ``redirect_uri``, becomes an
  access token for the requested scope, with the scope's resource server
  (the client itself) as Globus Auth answers.
- ``POST /v2/oauth2/token/introspect``: what Globus says of a token it issued.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse


class AuthStandin:
    def __init__(self, client_id: str, client_secret: str, username: str) -> None:
        self.client_id, self.client_secret, self.username = client_id, client_secret, username
        self.codes: dict[str, tuple[str, str]] = {}  # code -> (redirect_uri, scope)
        self.tokens: dict[str, str] = {}  # access token -> scope
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path != "/v2/oauth2/authorize" or q.get("client_id") != \
                        standin.client_id or q.get("response_type") != "code":
                    self._json(400, {"error": "invalid_request"})
                    return
                code = secrets.token_urlsafe(16)
                standin.codes[code] = (q["redirect_uri"], q["scope"])
                self.send_response(302)
                self.send_header("Location", q["redirect_uri"] + "?" + urlencode(
                    {"code": code, "state": q.get("state", "")}))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(
                    int(self.headers.get("Content-Length") or 0)).decode()).items()}
                expected = base64.b64encode(
                    f"{standin.client_id}:{standin.client_secret}".encode()).decode()
                if self.headers.get("Authorization") != f"Basic {expected}":
                    self._json(401, {"error": "invalid_client"})
                elif self.path == "/v2/oauth2/token":
                    self._token(form)
                elif self.path == "/v2/oauth2/token/introspect":
                    self._introspect(form)
                else:
                    self._json(404, {"error": "not_found"})

            def _token(self, form: dict[str, str]) -> None:
                issued = standin.codes.pop(form.get("code", ""), None)
                if form.get("grant_type") != "authorization_code" or issued is None \
                        or issued[0] != form.get("redirect_uri"):
                    self._json(401, {"error": "invalid_grant"})
                    return
                token = secrets.token_urlsafe(24)
                standin.tokens[token] = issued[1]
                self._json(200, {"access_token": token, "expires_in": 3600,
                                 "resource_server": standin.client_id, "scope": issued[1],
                                 "token_type": "Bearer", "other_tokens": []})

            def _introspect(self, form: dict[str, str]) -> None:
                scope = standin.tokens.get(form.get("token", ""))
                if scope is None:
                    self._json(200, {"active": False})
                    return
                now = time.time()
                self._json(200, {"active": True, "scope": scope, "client_id": standin.client_id,
                                 "username": standin.username, "sub": "5b0e-standin",
                                 "exp": now + 3600, "nbf": now - 5, "iat": now - 5,
                                 "aud": [standin.client_id], "iss": "https://auth.globus.org",
                                 "identity_set": []})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> AuthStandin:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)
