"""Running an endpoint: pid lock, logging, signals, then the agent's loop.

``python -m funcx_flows.endpoint.daemon NAME`` is what ``funcx-endpoint start``
detaches; ``--foreground`` runs the same function in the CLI's process.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import IO

from funcx_flows.endpoint.agent import Agent
from funcx_flows.endpoint.config import EndpointConfig, load_config
from funcx_flows.endpoint.providers.registry import make_provider
from funcx_flows.endpoint.registration import Registration
from funcx_flows.errors import EndpointAlreadyRunning, FuncxFlowsError
from funcx_flows.home import drop_secrets_from_environ, home_dir
from funcx_flows.memory import steady_heap

log = logging.getLogger(__name__)
LINK_TOKEN_FILE = "link-token"  # the endpoint's secret for its WebSocket link (0600)


class PidLock:
    """A pid file held with ``flock``: a stale file of a dead process is not a lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = self.path.open("a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise EndpointAlreadyRunning(
                f"endpoint is already running (pid {read_pid(self.path)}); "
                f"stop it first with `funcx-endpoint stop`") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            self.path.unlink(missing_ok=True)
            self._fh.close()
            self._fh = None


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def running_pid(folder: Path) -> int | None:
    """The pid of the endpoint's daemon if it is running (its lock is held)."""
    path = folder / "daemon.pid"
    if not path.exists():
        return None
    with path.open("a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return read_pid(path)
        fcntl.flock(fh, fcntl.LOCK_UN)
    return None


def run_endpoint(folder: Path, config: EndpointConfig, reg: Registration,
                 lock: PidLock | None = None) -> None:
    """Run until SIGTERM/SIGINT; the caller may already hold the pid lock."""
    # Registered already: from here on the endpoint is its CurveZMQ key, and the
    # owner's API token must not reach managers, pilot jobs or workers (which run
    # the code of everyone the endpoint is shared with).
    drop_secrets_from_environ()
    if lock is None:
        lock = PidLock(folder / "daemon.pid")
        lock.acquire()
    # The loop and the scaler thread share the GIL: a scheduler command in the
    # scaler must not hold up the loop for the default 5 ms switch interval.
    sys.setswitchinterval(0.0002)
    steady_heap()  # at most 2 malloc arenas, before the scaler thread starts
    try:
        provider = make_provider(config, folder)
        agent = Agent(config, folder, reg, provider)

        def stop(signum: int, _frame: object) -> None:
            log.info("received signal %d", signum)
            agent.stopping = True

        before = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        log.info("endpoint %s starting (pid %d)", reg.endpoint_id, os.getpid())
        try:
            agent.run()
        finally:
            for sig, handler in before.items():  # the caller's own again
                signal.signal(sig, handler)
        log.info("endpoint stopped")
    finally:
        lock.release()


def registration_from_folder(folder: Path) -> Registration:
    from funcx_flows.endpoint.registration import load_or_create_keys

    data = json.loads((folder / "endpoint.json").read_text())
    public, secret = load_or_create_keys(folder)
    try:
        link_token = (folder / LINK_TOKEN_FILE).read_text().strip()
    except FileNotFoundError:
        link_token = ""  # registered by an older version: ZeroMQ only
    return Registration(endpoint_id=data["endpoint_id"], zmq_url=data["zmq_url"],
                        service_public_key=data["service_public_key"], public_key=public,
                        secret_key=secret, service_url=data.get("service_url", ""),
                        link_token=link_token)


LOG_LEVEL_ENV = "FUNCX_FLOWS_LOG_LEVEL"  # funcx-endpoint --debug sets DEBUG


def setup_logging(log_file: Path | None) -> None:
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    level = os.environ.get(LOG_LEVEL_ENV, "").upper()
    root.setLevel(level if level in logging.getLevelNamesMapping() else logging.INFO)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m funcx_flows.endpoint.daemon NAME", file=sys.stderr)
        sys.exit(2)
    folder = home_dir() / "endpoints" / args[0]
    setup_logging(folder / "endpoint.log")
    try:
        config = load_config(folder / "config.yaml")
        run_endpoint(folder, config, registration_from_folder(folder))
    except FuncxFlowsError as exc:
        log.error("%s", exc)
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
