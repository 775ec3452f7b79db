"""``funcx-endpoint``: configure, start, stop, restart, list, status, delete.

Every ``FuncxFlowsError`` becomes a one-line message and exit code 1 in
``main``; users never see a traceback for a mistake of theirs.

(Past 400 lines on purpose: one click group with a command per verb, whose help
texts make docs/cli.md; the views they print are in cliviews.py.)
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Column, Table

from funcx_flows import __version__
from funcx_flows.clirun import echo_json, json_option, run
from funcx_flows.endpoint import cliviews
from funcx_flows.endpoint.config import (
    EndpointConfig,
    default_config_text,
    load_config,
    translated_config_text,
)
from funcx_flows.endpoint.daemon import (
    LINK_TOKEN_FILE,
    LOG_LEVEL_ENV,
    PidLock,
    registration_from_folder,
    run_endpoint,
    running_pid,
    setup_logging,
)
from funcx_flows.endpoint.registration import (
    Registration,
    host_metadata,
    load_or_create_keys,
)
from funcx_flows.errors import (
    ConfigError,
    EndpointAlreadyRunning,
    EndpointError,
    EndpointNotConfigured,
    EndpointNotRunning,
    FuncxFlowsError,
)
from funcx_flows.home import home_dir, without_secrets, write_secret
from funcx_flows.retry import poll_until

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
console = Console()


def _folder(name: str) -> Path:
    if not NAME_RE.match(name):
        raise ConfigError(
            f"invalid endpoint name {name!r}: use letters, digits, '.', '_' and '-'")
    return home_dir() / "endpoints" / name


def _configured(name: str) -> Path:
    folder = _folder(name)
    if not (folder / "config.yaml").exists():
        raise EndpointNotConfigured(
            f"endpoint {name!r} is not configured; run `funcx-endpoint configure {name}`")
    return folder


def _client(service_url: str) -> Any:
    from funcx_flows.sdk.client import Client

    return Client(service_url=service_url or None)


def _resolve(name_or_id: str) -> str:
    """An endpoint's name from its name or, as Globus Compute users type it, from
    the id the service gave it (read from its folder's endpoint.json)."""
    root = home_dir() / "endpoints"
    if (root / name_or_id).is_dir():
        return name_or_id
    try:
        wanted = str(uuid.UUID(name_or_id))
    except ValueError:
        return name_or_id
    for info in sorted(root.glob("*/endpoint.json")) if root.is_dir() else []:
        try:
            if str(json.loads(info.read_text()).get("endpoint_id")) == wanted:
                return info.parent.name
        except (OSError, ValueError):
            continue
    return name_or_id


class _NameOrId(click.ParamType):  # type: ignore[type-arg,unused-ignore]
    name = "NAME|ID"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        return _resolve(str(value))


NAME_OR_ID = _NameOrId()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="funcx-endpoint")
@click.option("--debug", is_flag=True, help="Log at DEBUG level (a daemon started now too).")
def cli(debug: bool) -> None:
    """Run funcx-flows endpoints: where your functions execute. NAME may also be
    the endpoint's id."""
    if debug:
        os.environ[LOG_LEVEL_ENV] = "DEBUG"  # for the daemon this process starts
        logging.basicConfig(level=logging.DEBUG)
        logging.getLogger().setLevel(logging.DEBUG)


@cli.command()
def version() -> None:
    """Print funcx-flows' version."""
    click.echo(f"funcx-endpoint {__version__}")


@cli.command()
@click.argument("name")
@click.option("--from-globus-compute", "from_gc", type=click.Path(dir_okay=False),
              help="Translate a Globus Compute endpoint's config.yaml into NAME's.")
def configure(name: str, from_gc: str | None) -> None:
    """Write NAME's config.yaml with commented defaults (or translated from a
    Globus Compute endpoint's config.yaml)."""
    folder = _folder(name)
    path = folder / "config.yaml"
    if path.exists():
        load_config(path)  # report problems in an existing file
        if from_gc:
            raise ConfigError(f"endpoint {name} is already configured ({path}); "
                              "delete it or choose another name to translate into")
        click.echo(f"endpoint {name} is already configured: {path}")
        return
    text = translated_config_text(Path(from_gc)) if from_gc else default_config_text()
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    click.echo(f"wrote {path}; edit it, then run `funcx-endpoint start {name}`")


def _register(name: str, folder: Path, config: EndpointConfig) -> Registration:
    service_url = config.service_url
    public, secret = load_or_create_keys(folder)
    client = _client(service_url)
    try:
        meta: dict[str, Any] = {**host_metadata()}
        if config.allowed_functions:
            meta["allowed_functions"] = list(config.allowed_functions)
        answer = client.register_endpoint(name, public, meta)
    finally:
        client.close()
    info = {"endpoint_id": answer["endpoint_id"], "name": name,
            "zmq_url": answer["zmq_url"], "service_public_key": answer["service_public_key"],
            "service_url": client.service_url}
    (folder / "endpoint.json").write_text(json.dumps(info, indent=2))
    write_secret(folder / LINK_TOKEN_FILE, answer["link_token"])
    return Registration(answer["endpoint_id"], answer["zmq_url"],
                        answer["service_public_key"], public, secret,
                        service_url=client.service_url, link_token=answer["link_token"])


@cli.command()
@click.argument("name", type=NAME_OR_ID)
@click.option("--foreground", is_flag=True, help="Stay attached; log to stderr.")
def start(name: str, foreground: bool) -> None:
    """Register NAME with the service and run it (as a daemon unless --foreground)."""
    folder = _configured(name)
    config = load_config(folder / "config.yaml")
    pid = running_pid(folder)
    if pid is not None:
        raise EndpointAlreadyRunning(f"endpoint {name} is already running (pid {pid})")
    lock = PidLock(folder / "daemon.pid")
    if foreground:
        lock.acquire()
        try:
            reg = _register(name, folder, config)
            setup_logging(None)
            click.echo(f"endpoint {name} ({reg.endpoint_id}) running in the foreground",
                       err=True)
        except BaseException:
            lock.release()
            raise
        run_endpoint(folder, config, reg, lock)
        return
    reg = _register(name, folder, config)
    _detach(name, folder)
    click.echo(f"endpoint {name} started: id {reg.endpoint_id}, log {folder / 'endpoint.log'}")


def _detach(name: str, folder: Path) -> None:
    (folder / "status.json").unlink(missing_ok=True)
    out = (folder / "daemon.out").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "funcx_flows.endpoint.daemon", name],
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True, env=without_secrets(os.environ))
    out.close()
    def reported() -> bool:
        if proc.poll() is not None:
            tail = (folder / "daemon.out").read_text()[-2000:]
            raise EndpointError(f"endpoint {name} exited at start ({proc.returncode}):\n{tail}")
        try:
            return bool(json.loads((folder / "status.json").read_text()).get("pid") == proc.pid)
        except (OSError, ValueError):
            return False

    if not poll_until(reported, 60):
        raise EndpointError(
            f"endpoint {name} did not report in 60s; see {folder / 'endpoint.log'}")


def _stop(name: str, folder: Path, timeout: float = 30.0) -> None:
    pid = running_pid(folder)
    if pid is None:
        raise EndpointNotRunning(f"endpoint {name} is not running")
    os.kill(pid, signal.SIGTERM)
    if not poll_until(lambda: running_pid(folder) is None, timeout):
        os.kill(pid, signal.SIGKILL)


@cli.command()
@click.argument("name", type=NAME_OR_ID)
def stop(name: str) -> None:
    """Stop NAME cleanly (its blocks and workers too)."""
    _stop(name, _folder(name))
    click.echo(f"endpoint {name} stopped")


@cli.command()
@click.argument("name", type=NAME_OR_ID)
@click.pass_context
def restart(ctx: click.Context, name: str) -> None:
    """Stop NAME if it runs, then start it again as a daemon."""
    folder = _configured(name)
    if running_pid(folder) is not None:
        _stop(name, folder)
    ctx.invoke(start, name=name, foreground=False)


def _service_states() -> dict[str, dict[str, Any]]:
    try:
        client = _client("")
        try:
            return {e["endpoint_id"]: e for e in client.list_endpoints()}
        finally:
            client.close()
    except FuncxFlowsError:
        return {}


@cli.command(name="list")
@json_option
def list_(as_json: bool) -> None:
    """A table of this machine's endpoints and their states."""
    root = home_dir() / "endpoints"
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []
    remote = _service_states()
    rows = []
    for folder in folders:
        try:
            eid = json.loads((folder / "endpoint.json").read_text())["endpoint_id"]
        except (OSError, ValueError, KeyError):
            eid = ""
        pid = running_pid(folder)
        state = remote.get(eid, {}).get("state", "unknown" if eid else "not registered")
        rows.append({"name": folder.name, "endpoint_id": eid or None, "pid": pid,
                     "local": "running" if pid else "stopped",
                     "service": cliviews.service_state(state, _local_status(folder) if pid
                                                       else None)})
    if as_json:
        echo_json({"endpoints": rows})
        return
    if not folders:
        click.echo("no endpoints; create one with `funcx-endpoint configure NAME`")
        return
    table = Table(Column("name", no_wrap=True), Column("endpoint id", no_wrap=True), "local",
                  "service")
    for r in rows:
        table.add_row(r["name"], r["endpoint_id"] or "-",
                      f"running (pid {r['pid']})" if r["pid"] else "stopped", r["service"])
    console.print(table)


def _local_status(folder: Path) -> dict[str, Any]:
    try:
        st: dict[str, Any] = json.loads((folder / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    return st


@cli.command()
@click.argument("name", type=NAME_OR_ID)
@json_option
def status(name: str, as_json: bool) -> None:
    """Workers, queue, managers, blocks and recent errors of NAME."""
    folder = _configured(name)
    pid = running_pid(folder)
    st = _local_status(folder)
    if as_json:
        echo_json({"name": name, "running": pid is not None, "pid": pid, "status": st})
        return
    if pid is None:
        click.echo(f"endpoint {name}: stopped")
    else:
        age = time.time() - st.get("updated_at", 0)
        click.echo(f"endpoint {name}: running (pid {pid}); link to service "
                   f"{'up' if st.get('link_up') else 'down'}; status {age:.0f}s old")
    if not st:
        return
    click.echo(f"workers {st.get('workers_busy', 0)}/{st.get('workers_total', 0)} busy, "
               f"{st.get('tasks_queued', 0)} queued, {st.get('tasks_running', 0)} running, "
               f"{st.get('results_spooled', 0)} results spooled")
    if st.get("blocks"):
        t = Table("block", "job id", "state", "nodes", "age", "message", title="blocks")
        for b in st["blocks"]:
            t.add_row(b["block_id"], b.get("job_id", ""), b.get("state", ""),
                      str(b.get("nodes", 1)),
                      f"{time.time() - b['submitted_at']:.0f}s" if b.get("submitted_at") else "",
                      (b.get("message") or "")[:80])
        console.print(t)
    if st.get("managers"):
        total = st.get("managers_total") or len(st["managers"])
        title = "managers" + (f" ({len(st['managers'])} of {total} shown)"
                              if total > len(st["managers"]) else "")
        t = Table("manager", "host", "block", "workers", "busy", title=title)
        for mg in st["managers"]:
            t.add_row(mg["manager_id"], mg.get("hostname", ""), mg.get("block_id", ""),
                      str(mg.get("workers", 0)), str(mg.get("busy", 0)))
        console.print(t)
    for err in cliviews.errors_not_shown(st):
        click.echo(f"recent error: {err}")


@cli.command()
@click.argument("name", type=NAME_OR_ID)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def delete(name: str, yes: bool) -> None:
    """Stop NAME, remove it from the service, and delete its folder."""
    folder = _configured(name)
    if not yes and not click.confirm(
            f"delete endpoint {name}: stop it, remove it from the service and delete "
            f"{folder}?", default=False):
        raise click.exceptions.Abort()
    if running_pid(folder) is not None:
        _stop(name, folder)
    try:
        reg = registration_from_folder(folder)
    except (OSError, ValueError, KeyError):
        reg = None
    if reg is not None:
        client = _client(load_config(folder / "config.yaml").service_url)
        try:
            client.delete_endpoint(reg.endpoint_id)
        finally:
            client.close()
    shutil.rmtree(folder)
    click.echo(f"endpoint {name} deleted")


@cli.command("enable-on-boot")
@click.argument("name", type=NAME_OR_ID)
def enable_on_boot(name: str) -> None:
    """Keep NAME running with systemd (a user unit): restarted after a crash, started
    at boot."""
    from funcx_flows.endpoint import systemd

    folder = _configured(name)
    path = systemd.enable(name, home_dir(), folder)
    unit = systemd.unit_name(name)
    click.echo(f"wrote {path}\nnow run:\n"
               f"  systemctl --user daemon-reload\n"
               f"  systemctl --user enable --now {unit}\n"
               f"  loginctl enable-linger $USER    # start at boot, without a login\n"
               f"logs: journalctl --user -u {unit} (and {folder / 'endpoint.log'})")


@cli.command("disable-on-boot")
@click.argument("name", type=NAME_OR_ID)
def disable_on_boot(name: str) -> None:
    """Remove NAME's systemd user unit (stop it first: systemctl --user disable --now)."""
    from funcx_flows.endpoint import systemd

    path = systemd.disable(name)
    if path is None:
        raise EndpointNotConfigured(f"endpoint {name} has no systemd unit")
    click.echo(f"removed {path}; run `systemctl --user daemon-reload`")


def main(argv: list[str] | None = None) -> None:
    run(cli, argv)


if __name__ == "__main__":
    main()
