"""``funcx-flows service start|stop|status`` and ``funcx-flows token create|list|revoke``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Column, Table

from funcx_flows.clirun import echo_json, json_option
from funcx_flows.errors import NotFound, ServiceUnavailable
from funcx_flows.home import write_secret
from funcx_flows.retry import poll_until
from funcx_flows.service.settings import ServiceSettings, load_settings

console = Console()


def _info(settings: ServiceSettings) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((settings.folder / "service.json").read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(int(data["pid"]), 0)
    except (OSError, KeyError, ValueError):
        return None
    return data


@click.group("service")
def service_group() -> None:
    """Run the funcx-flows service on this machine."""


@service_group.command()
@click.option("--port", type=int, default=None, help="HTTP port (default 8000; 0 picks one).")
@click.option("--zmq-port", type=int, default=None, help="Port endpoints dial (0 picks one).")
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--database-url", default=None, help="SQLAlchemy URL (default SQLite in home).")
@click.option("--tls-cert", default=None, help="Serve HTTPS with this certificate (PEM).")
@click.option("--tls-key", default=None, help="The certificate's private key (PEM).")
@click.option("--foreground", is_flag=True, help="Stay attached.")
def start(port: int | None, zmq_port: int | None, host: str | None,
          database_url: str | None, tls_cert: str | None, tls_key: str | None,
          foreground: bool) -> None:
    """Start the service (detached unless --foreground)."""
    settings = load_settings(port=port, zmq_port=zmq_port, host=host,
                             database_url=database_url, tls_certfile=tls_cert,
                             tls_keyfile=tls_key)
    running = _info(settings)
    if running is not None:
        raise click.ClickException(
            f"the service is already running (pid {running['pid']}) at {running['url']}")
    args = [sys.executable, "-m", "funcx_flows.service"]
    for flag, value in (("--port", port), ("--zmq-port", zmq_port), ("--host", host),
                        ("--database-url", database_url), ("--tls-cert", tls_cert),
                        ("--tls-key", tls_key)):
        if value is not None:
            args += [flag, str(value)]
    if foreground:
        os.execv(sys.executable, args)
    settings.folder.mkdir(parents=True, exist_ok=True)
    log_path = settings.folder / "service.log"
    with log_path.open("ab") as log:
        offset = log.tell()
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    def started() -> dict[str, Any] | None:
        if proc.poll() is not None:
            raise ServiceUnavailable(f"the service did not start: {_why(log_path, offset)} "
                                     f"(log {log_path})")
        info = _info(settings)
        return info if info is not None and info.get("pid") == proc.pid else None

    info = poll_until(started, 60)
    if info is None:
        raise ServiceUnavailable(f"the service did not start in 60s; see {log_path}")
    click.echo(f"service running at {info['url']} (pid {proc.pid}); log {log_path}")
    click.echo(f"endpoints dial {info['zmq_url']}; your token is in "
               f"{settings.home / 'token'}")


def _why(log_path: Path, offset: int) -> str:
    """What this start wrote to the log: its error line(s), else its last lines."""
    with log_path.open("rb") as f:
        f.seek(offset)
        lines = f.read().decode(errors="replace").splitlines()
    errors = [ln.split("Error: ", 1)[1] for ln in lines if "Error: " in ln]
    return "; ".join(errors) if errors else "\n" + "\n".join(lines[-20:])


@service_group.command()
def stop() -> None:
    """Stop the service started from this home."""
    settings = load_settings()
    info = _info(settings)
    if info is None:
        raise click.ClickException("the service is not running")
    pid = int(info["pid"])
    os.kill(pid, signal.SIGTERM)
    how = "stopped"
    if not poll_until(lambda: not _alive(pid), 30):
        os.kill(pid, signal.SIGKILL)
        how = "killed (it did not stop within 30 s of SIGTERM)"
        if not poll_until(lambda: not _alive(pid), 10):
            raise click.ClickException(f"the service (pid {pid}) is still running after "
                                       "SIGKILL")
    # returns once the process is gone: its ports are free for the next start
    click.echo(f"service {how} (pid {pid})")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


@service_group.command()
@json_option
def status(as_json: bool) -> None:
    """Whether the service runs, where, and if it answers."""
    settings = load_settings()
    info = _info(settings)
    if info is None:
        raise click.ClickException("the service is not running")
    import httpx

    health: dict[str, Any] = {}
    try:
        health = httpx.get(f"{info['url']}/v1/health", timeout=5).json()
        answer = f"answers (version {health.get('version')})"
    except (httpx.HTTPError, ValueError) as exc:
        answer = f"does not answer: {exc}"
    if as_json:
        echo_json({"pid": info["pid"], "url": info["url"], "zmq_url": info["zmq_url"],
                   "answers": bool(health), "version": health.get("version")})
        return
    click.echo(f"service pid {info['pid']} at {info['url']} (endpoints dial {info['zmq_url']}): "
               f"{answer}")


# ----------------------------------------------------------------- tokens --


def _store(settings: ServiceSettings) -> Any:
    from funcx_flows.service.db import make_engine
    from funcx_flows.service.store import Store

    store = Store(make_engine(settings.db_url))
    store.create_schema()
    return store


@click.group("token")
def token_group() -> None:
    """API tokens (service-issued; stored hashed)."""


@token_group.command()
@click.option("--user", default=None, help="The user the token is for (created if new); "
                                           "default: the local user.")
@click.option("--name", default="cli", show_default=True, help="A label for the token.")
@click.option("--save", is_flag=True, help="Also write it to <home>/token (mode 0600).")
def create(user: str | None, name: str, save: bool) -> None:
    """Issue a token; it is shown once."""
    import getpass

    settings = load_settings()
    store = _store(settings)
    u = store.ensure_user(user or getpass.getuser())
    token_id, token = store.create_token(u, name)
    if save:
        write_secret(settings.home / "token", token + "\n")
    click.echo(f"token {token_id} for user {u.name}:")
    click.echo(token)


@token_group.command(name="list")
@json_option
def list_(as_json: bool) -> None:
    """Tokens of every user (ids, not secrets)."""
    store = _store(load_settings())
    if as_json:
        echo_json({"tokens": store.list_tokens(None)})
        return
    table = Table("user", "name", "created", "revoked")
    table.columns.insert(0, Column("token id", no_wrap=True))
    for t in store.list_tokens(None):
        table.add_row(t["token_id"], t["user"], t["name"], _when(t["created_at"]),
                      _when(t["revoked_at"]) if t["revoked_at"] else "")
    console.print(table)


@token_group.command()
@click.argument("token_id")
def revoke(token_id: str) -> None:
    """Revoke a token by id: refused on every request from now on; a running service
    closes result streams open with it within a second."""
    store = _store(load_settings())
    try:
        store.revoke_token(token_id, None)
    except NotFound as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"revoked {token_id}")


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


