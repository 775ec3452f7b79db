"""Dashboard sessions and the trigger report route, on the real app in-process
(FastAPI's TestClient drives it through ASGI with its lifespan; SQLite)."""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from funcx_flows.service.app import create_app
from funcx_flows.service.settings import ServiceSettings
from funcx_flows.service.ui.session import COOKIE, Sessions


@pytest.fixture
def app(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(ServiceSettings(home=tmp_path / "home")),
                    follow_redirects=False) as http:
        http.headers["x-token"] = (tmp_path / "home" / "token").read_text().strip()
        yield http


def _token(http: TestClient) -> str:
    return http.headers["x-token"]


def _sign_in(http: TestClient, token: str, target: str = "/ui/tasks") -> str:
    r = http.post("/ui/login", data={"token": token, "next": target})
    assert r.status_code == 303, r.text
    found = re.search(rf"{COOKIE}=([^;]+)", r.headers["set-cookie"])
    assert found
    return found.group(1)


def _page(http: TestClient, path: str, cookie: str) -> tuple[int, str]:
    http.cookies.clear()  # the Secure cookie is handed over by hand (TestClient is http)
    r = http.get(path, headers={"cookie": f"{COOKIE}={cookie}"})
    return r.status_code, r.headers.get("location", "")


def test_the_session_cookie_is_secure_http_only_same_site_and_holds_no_token(
        app: TestClient) -> None:
    r = app.post("/ui/login", data={"token": _token(app), "next": "/ui/tasks"})
    assert r.status_code == 303 and r.headers["location"] == "/ui/tasks"
    header = r.headers["set-cookie"]
    for attribute in ("Secure", "HttpOnly", "SameSite=lax", "Path=/ui"):
        assert attribute in header
    value = header.split("=", 1)[1].split(";", 1)[0]
    assert '"' not in value  # sent back as it was set (a value with "=" is quoted)
    body = value.split(".", 1)[0]
    assert _token(app) not in base64.urlsafe_b64decode(body + "==").decode()


def test_a_bad_token_is_refused_with_a_message(app: TestClient) -> None:
    r = app.post("/ui/login", data={"token": "fxf_nothing", "next": "/ui/tasks"})
    assert r.status_code == 401 and "invalid or revoked token" in r.text


def test_a_cookie_not_signed_with_the_services_key_is_sent_to_sign_in(
        app: TestClient) -> None:
    cookie = _sign_in(app, _token(app))
    assert _page(app, "/ui/endpoints", cookie) == (200, "")
    # a well-formed session for a real token of this service, signed with another key
    sessions = app.app.state.ui.sessions  # type: ignore[attr-defined]
    honest = sessions.decode(cookie)
    foreign = Sessions(secrets.token_bytes(32), sessions.store).encode(honest)
    body, mac = cookie.split(".")
    assert foreign.split(".")[0] == body and foreign.split(".")[1] != mac
    for bad in (foreign, body + "." + "0" * 64, body, body[:-4] + "AAAA." + mac):
        status, where = _page(app, "/ui/endpoints", bad)
        assert status == 303 and where.startswith("/ui/login?next=/ui/endpoints"), bad


def test_revoking_the_token_ends_its_sessions(app: TestClient) -> None:
    auth = {"authorization": f"Bearer {_token(app)}"}
    spare = app.post("/v1/tokens", json={"name": "browser"}, headers=auth).json()
    cookie = _sign_in(app, spare["token"])
    assert _page(app, "/ui/tasks", cookie)[0] == 200
    assert app.delete(f"/v1/tokens/{spare['token_id']}", headers=auth).status_code == 200
    status, where = _page(app, "/ui/tasks", cookie)
    assert status == 303 and "revoked" in where
    events = app.get("/ui/events", headers={"cookie": f"{COOKIE}={cookie}"})
    assert events.status_code == 401


def test_sign_in_sends_nowhere_but_the_dashboard(app: TestClient) -> None:
    for target in ("https://elsewhere.example/", "//elsewhere.example/", "/ui//x", "/v1/"):
        r = app.post("/ui/login", data={"token": _token(app), "next": target})
        assert r.headers["location"] == "/ui/endpoints", target


def test_trigger_reports_reach_their_owners_page_only(app: TestClient) -> None:
    auth = {"authorization": f"Bearer {_token(app)}"}
    report = {"process": "beamline-7", "host": "det01", "triggers": [
        {"name": "frames", "kind": "files", "watching": ["/data/in"], "files_seen": 12,
         "files_waiting": 1, "runs": {"done": 9, "failed": 2, "interrupted": 1},
         "lag_s": 0.4}]}
    assert app.post("/v1/triggers/status", json=report).status_code == 401
    bad = {**report, "triggers": [{"name": "frames", "files_seen": -1}]}
    r = app.post("/v1/triggers/status", json=bad, headers=auth)
    assert r.status_code == 422 and "files_seen" in r.text
    assert app.post("/v1/triggers/status", json=report, headers=auth).status_code == 200
    mine = _sign_in(app, _token(app))
    app.cookies.clear()
    page = app.get("/ui/triggers", headers={"cookie": f"{COOKIE}={mine}"}).text
    assert "beamline-7" in page and "/data/in" in page and "det01" in page
    store = app.app.state.parts.store  # type: ignore[attr-defined]
    _, bobs = store.create_token(store.ensure_user("bob"), "cli")
    theirs = app.get("/ui/triggers", headers={"cookie": f"{COOKIE}={_sign_in(app, bobs)}"})
    assert theirs.status_code == 200 and "beamline-7" not in theirs.text
    assert "No trigger has reported yet" in theirs.text


def test_the_dashboard_can_be_left_out(tmp_path: Path) -> None:
    settings = ServiceSettings(home=tmp_path / "home", dashboard=False)
    with TestClient(create_app(settings), follow_redirects=False) as http:
        assert http.get("/ui/login").status_code == 404
        assert http.post("/v1/triggers/status", json={}).status_code == 404
        assert http.get("/v1/health").status_code == 200


def test_bad_filters_and_ids_get_a_page_naming_the_cause(app: TestClient) -> None:
    cookie = _sign_in(app, _token(app))
    for path, status, says in (("/ui/tasks?state=lost", 422, "is not one of"),
                               ("/ui/tasks?since_min=1e999", 422, "since_min"),
                               ("/ui/tasks?since_min=nan", 422, "since_min"),
                               ("/ui/tasks?since_min=-5", 422, "since_min"),
                               ("/ui/activity?window=week", 422, "window"),
                               ("/ui/tasks?endpoint=ep-7", 422, "endpoint_id"),
                               ("/ui/tasks?cursor=xyz", 422, "cursor"),
                               ("/ui/tasks/not-a-uuid", 404, "not found"),
                               ("/ui/endpoints/%00", 404, "not found")):
        app.cookies.clear()
        r = app.get(path, headers={"cookie": f"{COOKIE}={cookie}"})
        assert r.status_code == status and says in r.text.lower(), path
        assert r.headers["content-type"].startswith("text/html")
