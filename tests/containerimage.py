"""A small container image for worker tests, built offline from this machine's Python.

No registry is reachable here, so the image is a root file system made on the
spot and loaded with ``podman import``: this Python's interpreter and standard
library (tests, GUIs and site-packages left out), the two packages a worker
imports (msgspec, cloudpickle), funcx-flows' own sources as this checkout has
them, ``/bin/sh`` for shell commands, and the shared libraries all of those link
to. Everything sits at the same absolute paths as on the host, so the
interpreter finds its prefix unchanged. About 60 MB; the tag is a hash of the
sources, so a second run reuses the image (~0.1 s) instead of building it
(a few seconds).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from waiting import wait_until

from funcx_flows.errors import NotFound
from funcx_flows.localstack import LocalStack
from funcx_flows.sdk.executor import Executor

ROOT = Path(__file__).resolve().parents[1]
SKIP_STDLIB = {"site-packages", "test", "idlelib", "tkinter", "turtledemo", "ensurepip",
               "lib2to3", "unittest", "pydoc_data", "config-3.11-x86_64-linux-gnu"}
SOURCES = {"funcx_flows": ROOT / "funcx_flows", "funcx_flows/endpoint": ROOT / "endpoint"}


def _packages() -> list[Path]:
    import cloudpickle
    import msgspec

    return [Path(msgspec.__file__).parent, Path(cloudpickle.__file__).parent]


def _digest() -> str:
    h = hashlib.sha256(sys.version.encode() + Path(__file__).read_bytes())
    for base in SOURCES.values():
        for path in sorted(base.rglob("*.py")):
            h.update(str(path.relative_to(ROOT)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


def _libraries(binaries: list[Path]) -> set[str]:
    """Shared libraries the binaries link to (ldd), the loader included."""
    found: set[str] = set()
    for binary in binaries:
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True,
                             check=False).stdout
        found.update(re.findall(r"(/\S+\.so[\w.]*)", out))
    return found


def _rootfs(tar_path: Path) -> None:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    python = Path(os.path.realpath(sys.executable))
    site = stdlib / "site-packages"
    added: set[str] = set()

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if info.name in added or re.search(r"\.opt-[12]\.pyc$", info.name):
            return None  # (podman refuses a layer with a path twice)
        added.add(info.name)
        return info

    with tarfile.open(tar_path, "w") as tar:
        def add(path: Path, arcname: str | None = None) -> None:
            tar.add(str(path), arcname=(arcname or str(path)).lstrip("/"), filter=keep)

        add(python)
        for lib in Path(python).parent.parent.glob("lib/libpython3*.so*"):
            add(lib)
        for child in stdlib.iterdir():
            if child.name not in SKIP_STDLIB:
                add(child)
        for package in _packages():
            add(package, str(site / package.name))
        for name, source in SOURCES.items():
            for path in sorted(source.rglob("*.py")):
                add(path, str(site / name / path.relative_to(source)))
        add(Path(os.path.realpath("/bin/sh")), "/bin/sh")  # (the link's target: dash)
        binaries = [python, Path("/bin/sh"), *stdlib.glob("lib-dynload/*.so"),
                    *(p for pkg in _packages() for p in pkg.rglob("*.so"))]
        for lib in sorted(_libraries(binaries)):
            real = os.path.realpath(lib)
            add(Path(real), lib)
        for folder in ("tmp", "proc", "dev", "sys", "etc", "root", "usr/bin"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if folder == "tmp" else 0o755
            if keep(info) is not None:
                tar.addfile(info)
        link = tarfile.TarInfo("usr/bin/python3")
        link.type, link.linkname = tarfile.SYMTYPE, str(python)
        tar.addfile(link)


def worker_image(engine: str = "podman", env: dict[str, str] | None = None) -> str:
    """The tag of the worker test image, built and imported if not there yet
    (``env``: the engine's, e.g. a private docker daemon's DOCKER_HOST)."""
    tag = f"localhost/funcx-flows-worker-test:{_digest()}"
    if subprocess.run([engine, "image", "inspect", tag], env=env, capture_output=True,
                      check=False).returncode == 0:
        return tag
    with tempfile.TemporaryDirectory(prefix="funcx-image-") as folder:
        tar_path = Path(folder) / "rootfs.tar"
        _rootfs(tar_path)
        subprocess.run([engine, "import", str(tar_path), tag], env=env, check=True,
                       capture_output=True)
    return tag


def container_stack(home: Path, env: dict[str, str], name: str,
                    container: dict[str, object]) -> LocalStack:
    """A service and an endpoint ``name`` whose two workers run in ``container``."""
    s = LocalStack(home, env=env)
    try:
        s.start_service()
        s.start_endpoint(name, {"max_workers_per_node": 2, "heartbeat_period_s": 0.5,
                                "heartbeat_threshold_s": 5, "container": container})
    except BaseException:
        s.stop()
        raise
    return s


def refused_start(stack: LocalStack, engine: str) -> str:
    """What ``funcx-endpoint start`` says of an endpoint whose image ``engine`` lacks
    (it must fail, without a traceback)."""
    stack.configure_endpoint(f"noimage-{engine}", {
        "container": {"type": engine, "image": "localhost/not-there:1"}})
    out = stack.endpoint_cli("start", f"noimage-{engine}", check=False)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    return out.stdout + out.stderr


def sleeps(seconds: float) -> None:
    import time

    time.sleep(seconds)


def cancel_replaces_a_container(stack: LocalStack, endpoint: str,
                                names: Callable[[], set[str]]) -> set[str]:
    """Cancel a running task: its worker's container (one of the endpoint's two) goes
    and a new worker's takes its place, which runs the next task. The new names."""
    client = stack.client()
    try:
        before = names()
        assert len(before) == 2
        with Executor(stack.endpoints[endpoint].endpoint_id, client=client) as ex:
            future = ex.submit(sleeps, 600)

            def state() -> str | None:
                try:
                    return str(client.get_task(future.task_id)["state"])
                except NotFound:  # not submitted yet (the executor batches)
                    return None

            wait_until(lambda: state() == "running", what="the task to run")
            assert future.cancel()
            wait_until(lambda: state() == "cancelled", what="the cancel")
            wait_until(lambda: len(before - names()) == 1 == len(names() - before),
                       timeout=60, what="the killed worker's container to be replaced")
            assert ex.submit(sleeps, 0).result(timeout=120) is None
    finally:
        client.close()
    return names() - before


def containers_conf(folder: Path) -> Path:
    """What podman needs on these machines (../shared notes): runc, not crun (cgroups
    v1), and explicit ulimits (it may not raise its own)."""
    path = folder / "containers.conf"
    path.write_text('[containers]\ndefault_ulimits = ["nofile=1024:1024", '
                    '"nproc=4096:4096"]\n[engine]\nruntime = "runc"\n')
    return path


def worker_containers() -> list[str]:
    """The names of the worker containers podman has, running or not."""
    return subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}", "--filter",
                           "name=funcx-worker-"], capture_output=True, text=True,
                          check=False).stdout.split()


def assert_none_left() -> None:
    """After an endpoint stopped: no worker container of its is left."""
    left = worker_containers()
    assert not left, f"containers left behind: {left}"


def conmon_pids(names: list[str]) -> list[int]:
    """The conmon processes of these containers (they outlive a test when the
    endpoint keeps their containers)."""
    pids = []
    for name in names:
        out = subprocess.run(["podman", "inspect", "--format", "{{.State.ConmonPid}}", name],
                             capture_output=True, text=True, check=False).stdout.strip()
        if out.isdigit():
            pids.append(int(out))
    return pids


if __name__ == "__main__":
    if shutil.which("podman") is None:
        sys.exit("podman is not installed")
    print(worker_image())
