"""A PostgreSQL server of a test's own (Debian's binaries, run as the postgres
user, in a folder of its own, on a port of its own): a test may stop and restart
it without touching the server other tests share."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

BIN = Path("/usr/lib/postgresql")


def binaries() -> Path | None:
    versions = sorted((p for p in BIN.glob("*/bin") if (p / "pg_ctl").exists()),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return versions[-1] if versions else None


class PrivatePostgres:
    """``prefix``: how to run a command where the server lives (``Host.argv`` of a
    network namespace); ``listen``: its address there, trusted from ``trust_net``."""

    def __init__(self, port: int, prefix: Sequence[str] = (), listen: str = "127.0.0.1",
                 trust_net: str = "") -> None:
        bindir = binaries()
        assert bindir is not None
        self.bin = bindir
        self.port = port
        self.prefix = list(prefix)
        self.listen = listen
        # not under pytest's root-only tmp folder: the postgres user must enter it
        self.folder = Path(tempfile.mkdtemp(prefix="funcx-pg-"))
        os.chmod(self.folder, 0o755)
        shutil.chown(self.folder, "postgres")
        self.data = self.folder / "data"
        self._as_postgres(self.bin / "initdb", "-D", str(self.data), "-U", "postgres",
                          "--auth=trust", "-E", "UTF8")
        if trust_net:
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {trust_net} trust\n")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@{self.listen}:{self.port}/postgres"

    def _as_postgres(self, *args: str | Path) -> None:
        subprocess.run([*self.prefix, "runuser", "-u", "postgres", "--", *map(str, args)],
                       check=True, capture_output=True, timeout=120, cwd=self.folder)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses={self.listen}"
        self._as_postgres(self.bin / "pg_ctl", "-D", self.data, "-w", "-l",
                          self.folder / "server.log", "-o", options, "start")

    def stop(self) -> None:
        self._as_postgres(self.bin / "pg_ctl", "-D", self.data, "-w", "-m", "fast", "stop")

    def close(self) -> None:
        """Stopped (if running) and its folder removed."""
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
