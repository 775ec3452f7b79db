"""Where state lives: ``~/.funcx_flows`` or ``$FUNCX_FLOWS_HOME``.

Only the edges (CLIs, app factories, the Client constructor) call ``home_dir``;
everything below them receives paths."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def home_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get("FUNCX_FLOWS_HOME")
    return Path(env).expanduser() if env else Path.home() / ".funcx_flows"


def write_secret(path: Path, data: str | bytes) -> None:
    """Write a file readable by its owner only (mode 0600), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


# Variables that hold credentials. An endpoint drops them from its own environment at
# start, so that nothing it starts (managers, pilot jobs, workers running other users'
# code on a shared endpoint) inherits them: the agent needs none of them once it is
# registered (it authenticates to the service with its own CurveZMQ key).
SECRET_ENV = frozenset({
    "FUNCX_FLOWS_TOKEN",
    "FUNCX_FLOWS_DATABASE_URL",  # may hold a PostgreSQL password
    "FUNCX_FLOWS_GLOBUS_CLIENT_SECRET",
    "GLOBUS_COMPUTE_CLIENT_SECRET",
})


def without_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the variables of ``SECRET_ENV``."""
    return {k: v for k, v in env.items() if k not in SECRET_ENV}


def drop_secrets_from_environ() -> None:
    """Remove ``SECRET_ENV`` from this process's environment (and so its children's)."""
    for name in SECRET_ENV:
        os.environ.pop(name, None)
