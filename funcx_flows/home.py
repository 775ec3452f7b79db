"""Where state lives: ``~/.funcx_flows`` or ``$FUNCX_FLOWS_HOME``.

Only the edges (CLIs, app factories, the Client constructor) call ``home_dir``;
everything below them receives paths."""

from __future__ import annotations

import os
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
