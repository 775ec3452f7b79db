"""A Docker daemon of a test module's own (Debian's docker.io): its own data and
exec folders and socket, no bridge and no iptables rules, so that it changes
nothing on the machine and ends with the module. Tests reach it through
``DOCKER_HOST``, as any docker client does."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path


class PrivateDocker:
    def __init__(self) -> None:
        # short paths: the socket's must fit a sockaddr_un (108 bytes)
        self.folder = Path(tempfile.mkdtemp(prefix="fx-dk-", dir="/tmp"))
        self.socket = self.folder / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.env = {**os.environ, "DOCKER_HOST": self.host}
        self.log = self.folder / "dockerd.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["dockerd", "--data-root", str(self.folder / "root"),
                 "--exec-root", str(self.folder / "exec"),
                 "--pidfile", str(self.folder / "dockerd.pid"), "-H", self.host,
                 "--bridge", "none", "--iptables=false", "--ip6tables=false"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while self.docker("info", check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"dockerd did not start: {tail}")
            time.sleep(0.1)

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", *args], env=self.env, capture_output=True,
                              text=True, check=check, timeout=300)

    def stop(self) -> None:
        """Its containers removed, then the daemon (and the containerd it started)."""
        if self.proc.poll() is None:
            left = self.docker("ps", "-a", "-q", check=False).stdout.split()
            if left:
                self.docker("rm", "-f", *left, check=False)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)


def available() -> bool:
    return shutil.which("dockerd") is not None and shutil.which("docker") is not None
