"""``python -m funcx_flows.service``: run the service in the foreground."""

from __future__ import annotations

import argparse
import errno
import fcntl
import logging
import os
import socket
import sys
from pathlib import Path
from typing import IO

import uvicorn
from fastapi import FastAPI
from sqlalchemy.engine.url import make_url

from funcx_flows.errors import ConfigError, FuncxFlowsError
from funcx_flows.memory import steady_heap
from funcx_flows.service.app import create_app
from funcx_flows.service.db import make_engine
from funcx_flows.service.settings import ServiceSettings, load_settings
from funcx_flows.service.store import Store


def check_database(settings: ServiceSettings) -> None:
    """Fail before listening, with a plain message, if the database cannot be used."""
    store = Store(make_engine(settings.db_url))
    try:
        store.create_schema()
    finally:
        store.engine.dispose()


def hold_sqlite(settings: ServiceSettings) -> IO[str] | None:
    """SQLite serves one service process: a second one on the same database would
    publish only what it finished itself, count limits apart and race the first's
    files. Held (an OS lock, freed even by kill -9) for as long as this one runs."""
    url = make_url(settings.db_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    path = Path(url.database).with_name(Path(url.database).name + ".service-lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = path.open("a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "?"
        fh.close()
        raise ConfigError(
            f"another service process (pid {holder}) uses the SQLite database "
            f"{url.database}; SQLite serves one process: stop it, or give replicas a "
            "PostgreSQL database (FUNCX_FLOWS_DATABASE_URL)") from None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


def serve(settings: ServiceSettings) -> None:
    settings.folder.mkdir(parents=True, exist_ok=True)
    lock = hold_sqlite(settings)  # noqa: F841 (held until the process ends)
    check_database(settings)
    # The event loop and the DB threads hand the GIL back and forth on every task;
    # the default 5 ms switch interval would put that much latency on each hop.
    sys.setswitchinterval(0.0002)
    steady_heap()  # at most 2 malloc arenas, before any thread starts (memory.py)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit it: no Nagle delay between a response's header and body.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sock.close()
        busy = exc.errno == errno.EADDRINUSE
        raise ConfigError(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}"
            + (" (another service, or an old one still stopping? choose another with "
               "--port or FUNCX_FLOWS_PORT)" if busy else ""), setting="port") from exc
    sock.listen(2048)
    host, port = sock.getsockname()[:2]
    scheme = "https" if settings.tls_certfile else "http"
    app = create_app(settings, public_url=f"{scheme}://{host}:{port}")
    config = uvicorn.Config(app, log_level=settings.log_level, lifespan="on", access_log=False,
                            ws_max_size=64 * 1024 * 1024, timeout_graceful_shutdown=5,
                            proxy_headers=True, forwarded_allow_ips=settings.forwarded_allow_ips,
                            ssl_certfile=settings.tls_certfile or None,
                            ssl_keyfile=settings.tls_keyfile or None)
    server = uvicorn.Server(config)
    logging.getLogger("uvicorn.error").addFilter(OneLineStartupError(app))
    server.run(sockets=[sock])  # on uvloop where uvicorn finds it (its loop="auto")
    if not server.started:  # the lifespan failed, and said why
        sys.exit(1)


class OneLineStartupError(logging.Filter):
    """A start-up that fails with an error of ours (a busy ZeroMQ port, a database
    refused) is logged as the one line it says: Starlette hands uvicorn the
    lifespan's traceback as text, which would bury that line under 25 others."""

    def __init__(self, app: FastAPI) -> None:
        super().__init__()
        self.app = app
        self.said = False

    def filter(self, record: logging.LogRecord) -> bool:
        exc = getattr(self.app.state, "startup_error", None)
        if exc is None:
            return True
        text = str(record.msg)
        if text.startswith("Traceback") or "lifespan" in text:  # the traceback, as text
            if self.said:
                return False
            record.msg, record.args = "Error: %s", (exc,)
            record.exc_info = record.exc_text = None
            self.said = True
            return True
        return not text.startswith("Application startup failed")  # said already


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m funcx_flows.service")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--zmq-port", type=int)
    parser.add_argument("--database-url")
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", help="and this private key (PEM)")
    parser.add_argument("--cluster", action="store_true", default=None,
                        help="one of several replicas on one PostgreSQL (docs/deploy.md)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its plugins, at every start
    try:
        settings = load_settings(host=args.host, port=args.port, zmq_port=args.zmq_port,
                                 database_url=args.database_url, tls_certfile=args.tls_cert,
                                 tls_keyfile=args.tls_key, cluster=args.cluster)
        serve(settings)
    except FuncxFlowsError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(1)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"Error: {exc.strerror or exc}{where}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
