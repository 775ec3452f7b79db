"""Workers inside real Docker containers (Debian's docker.io, a daemon of this
module's own: tests/dockerd.py). Docker cannot pass a descriptor into a
container, so a worker's pipe is the container's standard input and output,
relayed by ``docker run -i``: these tests check that tasks, shell commands, large
frames and a cancel go through it, that what a task prints (or a child process
writes to descriptor 1) cannot reach the pipe, and that no container is left."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from containerimage import cancel_replaces_a_container, container_stack, refused_start, worker_image
from dockerd import PrivateDocker, available
from guards import outlives_test

from funcx_flows import ShellFunction
from funcx_flows.endpoint.container import ContainerSpec
from funcx_flows.errors import ConfigError
from funcx_flows.localstack import LocalStack
from funcx_flows.sdk.executor import Executor


@pytest.fixture(scope="module")
def docker(need) -> Iterator[PrivateDocker]:
    need(available(), "docker (Debian: apt-get install docker.io); .ci/run installs it")
    daemon = PrivateDocker()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, docker: PrivateDocker
          ) -> Iterator[LocalStack]:
    image = worker_image("docker", docker.env)
    s = container_stack(Path(tmp_path_factory.mktemp("docker")) / "home",
                        {"DOCKER_HOST": docker.host}, "docked",
                        {"type": "docker", "image": image, "options": "--network none"})
    try:
        yield s
    finally:
        s.stop()
    left = docker.docker("ps", "-a", "-q", "--filter", "name=funcx-worker-").stdout.split()
    assert not left, f"containers left behind: {left}"


def inside_docker(host_only: str, blob_bytes: int) -> dict[str, object]:
    import os
    import subprocess
    import sys

    print("a task's print goes to its captured output")
    os.system("echo a child process writes to descriptor 1")
    subprocess.run(["/bin/sh", "-c", "echo and another to 2 >&2"], check=True)
    return {"dockerenv": os.path.exists("/.dockerenv"),
            "sees_host_path": os.path.exists(host_only),
            "python": sys.version.split()[0], "blob": b"x" * blob_bytes}


def test_tasks_run_inside_docker_and_prints_do_not_reach_the_pipe(stack, tmp_path):
    import sys

    client = stack.client()
    try:
        with Executor(stack.endpoints["docked"].endpoint_id, client=client) as ex:
            # 3 MB each way: many frames of the relay, and one result larger than
            # any buffer on the way
            first = ex.submit(inside_docker, str(tmp_path), 3_000_000)
            again = ex.submit(inside_docker, str(tmp_path), 10)
            shell = ex.submit(ShellFunction("echo /*; test -e /.dockerenv && echo docker"))
            inside, small, listing = (first.result(timeout=120), again.result(timeout=120),
                                      shell.result(timeout=120))
    finally:
        client.close()
    assert inside["dockerenv"] is True and inside["sees_host_path"] is False
    assert inside["python"] == sys.version.split()[0]
    assert inside["blob"] == b"x" * 3_000_000 and small["blob"] == b"x" * 10
    assert listing.returncode == 0
    root, engine = listing.stdout.splitlines()
    assert "/bin" in root.split() and "/home" not in root.split()
    assert engine == "docker"


def test_cancelling_a_running_task_removes_its_container(stack, docker):
    def names() -> set[str]:
        return set(docker.docker("ps", "-a", "--format", "{{.Names}}", "--filter",
                                 "name=funcx-worker-").stdout.split())

    for name in cancel_replaces_a_container(stack, "docked", names):
        # the new worker's process and containerd's shim: the endpoint's to end
        pid = docker.docker("inspect", "--format", "{{.State.Pid}}", name,
                            check=False).stdout.strip()
        if pid.isdigit() and int(pid) > 0:
            outlives_test(int(pid))
            with contextlib.suppress(psutil.Error):
                outlives_test(psutil.Process(int(pid)).ppid())


def test_an_image_docker_does_not_have_stops_the_start_with_a_message(stack):
    assert "docker has no image 'localhost/not-there:1'" in refused_start(stack, "docker")


def test_a_daemon_that_does_not_answer_is_named(tmp_path):
    """The engine is there but its daemon is not: the start says what docker said."""
    env_host = f"unix://{tmp_path}/none.sock"
    found = subprocess.run(["env", f"DOCKER_HOST={env_host}", "docker", "image", "inspect",
                            "x"], capture_output=True, text=True, check=False)
    assert found.returncode != 0  # (what the check below relies on)
    import os

    old = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = env_host
    try:
        with pytest.raises(ConfigError, match=r"docker has no image 'x'.*Cannot connect"):
            ContainerSpec(type="docker", image="x").check()
    finally:
        if old is None:
            os.environ.pop("DOCKER_HOST")
        else:
            os.environ["DOCKER_HOST"] = old


def test_docker_command_line():
    spec = ContainerSpec(type="docker", image="img", options=("--network", "none"))
    assert spec.argv("w1", 9, ["--index", "0"]) == [
        "docker", "run", "-i", "--rm", "--name", "w1", "--network", "none", "img",
        "python3", "-m", "funcx_flows.endpoint.worker", "--index", "0", "--stdio"]
