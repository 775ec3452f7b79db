"""``funcx-endpoint enable-on-boot NAME``: a systemd user unit that keeps an endpoint
running, across crashes and reboots.

The unit runs ``funcx-endpoint start NAME --foreground`` with this Python, so that
each start registers the endpoint again (with the token in ``<home>/token``, or
``FUNCX_FLOWS_TOKEN`` in the endpoint's ``environment`` file, mode 0600) and
systemd sees the daemon itself: SIGTERM stops it cleanly, a crash restarts it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from funcx_flows.home import write_secret

# Settings a unit keeps from the shell that enabled it (never a token: that stays in
# <home>/token, or goes into the environment file by the user's hand).
KEPT_ENV = ("FUNCX_FLOWS_CA_BUNDLE", "SSL_CERT_FILE", "FUNCX_FLOWS_SERVICE_URL")


def unit_name(name: str) -> str:
    return f"funcx-endpoint-{name}.service"


def unit_folder() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


def unit_text(name: str, home: Path, env_file: Path, python: str = sys.executable) -> str:
    return f"""\
# Written by `funcx-endpoint enable-on-boot {name}`; remove with disable-on-boot.
[Unit]
Description=funcx-flows endpoint {name}
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
Environment=FUNCX_FLOWS_HOME={home}
EnvironmentFile=-{env_file}
ExecStart={python} -m funcx_flows.endpoint.cli start {name} --foreground
# SIGTERM to the daemon only: it stops its blocks and managers itself
KillMode=mixed
TimeoutStopSec=90
Restart=on-failure
RestartSec=10

[Install]
WantedBy=default.target
"""


def enable(name: str, home: Path, folder: Path) -> Path:
    """Write the unit, and the endpoint's environment file if there is something to
    keep; the unit's path."""
    env_file = folder / "environment"
    kept = {k: os.environ[k] for k in KEPT_ENV if os.environ.get(k)}
    if kept and not env_file.exists():
        write_secret(env_file, "".join(f"{k}={v}\n" for k, v in kept.items()))
    path = unit_folder() / unit_name(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(unit_text(name, home, env_file))
    return path


def disable(name: str) -> Path | None:
    path = unit_folder() / unit_name(name)
    if not path.exists():
        return None
    path.unlink()
    return path
