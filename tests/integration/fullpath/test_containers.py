"""Workers inside real podman containers: an image built here from this Python
(tests/containerimage.py), tasks and shell commands run in it, and the bad cases
(an image that does not exist, an engine that is absent) refused with a
message when the endpoint starts."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from containerimage import (
    assert_none_left,
    cancel_replaces_a_container,
    conmon_pids,
    container_stack,
    containers_conf,
    refused_start,
    worker_containers,
    worker_image,
)
from guards import outlives_test

from funcx_flows import ShellFunction
from funcx_flows.endpoint.config import parse_config
from funcx_flows.endpoint.container import ContainerSpec
from funcx_flows.errors import ConfigError
from funcx_flows.localstack import LocalStack
from funcx_flows.sdk.executor import Executor


@pytest.fixture(scope="module")
def image(need) -> str:
    need(shutil.which("podman") is not None and shutil.which("runc") is not None,
         "podman and runc (Debian: apt-get install podman runc); .ci/run installs them")
    return worker_image()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, image: str) -> Iterator[LocalStack]:
    folder = Path(tmp_path_factory.mktemp("containers"))
    s = container_stack(folder / "home", {"CONTAINERS_CONF": str(containers_conf(folder))},
                        "boxed", {"type": "podman", "image": image,
                                  "options": "--network none"})
    try:
        yield s
    finally:
        s.stop()
    assert_none_left()


def where_am_i(host_only: str) -> dict[str, object]:
    import os
    import sys

    return {"sees_host_path": os.path.exists(host_only), "python": sys.version.split()[0],
            "container_env": os.environ.get("container", ""),  # noqa: SIM112 (podman's name)
            "pid1": open("/proc/1/cmdline", "rb").read().split(b"\0")[0].decode()}


def test_tasks_and_shell_commands_run_inside_the_container(stack, tmp_path):
    import sys

    with Executor(stack.endpoints["boxed"].endpoint_id, client=stack.client()) as ex:
        inside = ex.submit(where_am_i, str(tmp_path)).result(timeout=120)
        shell = ex.submit(ShellFunction("echo /*; echo $container")).result(timeout=120)
        ex.client.close()
    assert inside["sees_host_path"] is False  # the host's files are not there
    assert inside["container_env"] == "podman"  # podman says so to what it runs
    assert inside["python"] == sys.version.split()[0]
    assert inside["pid1"].endswith("python3") or "python" in inside["pid1"]
    assert shell.returncode == 0
    listing, engine = shell.stdout.splitlines()  # the image's /, not the host's
    assert "/bin" in listing.split() and "/home" not in listing.split()
    assert engine == "podman"


def test_an_image_that_does_not_exist_stops_the_start_with_a_message(stack):
    assert "podman has no image 'localhost/not-there:1'" in refused_start(stack, "podman")


def test_an_absent_engine_is_refused_naming_why():
    if shutil.which("apptainer") is None:  # (not in Debian's packages)
        with pytest.raises(ConfigError, match="apptainer program is not on PATH"):
            ContainerSpec(type="apptainer", image="x.sif").check()
    with pytest.raises(ConfigError, match=r"container\.type: 'lxc' is not one of"):
        ContainerSpec(type="lxc", image="x").check()
    with pytest.raises(ConfigError, match="container goes with neither"):
        parse_config({"container": {"type": "podman", "image": "x"}, "sandbox": "bwrap"})


def test_engine_command_lines():
    podman = ContainerSpec(type="podman", image="img", options=("--network", "none"))
    assert podman.argv("w1", 9, ["--index", "0"]) == [
        "bash", "-c", 'exec "$@" 3<&9 9<&-', "bash", "podman", "run", "--rm",
        "--preserve-fds=1", "--name", "w1", "--network", "none", "img", "python3", "-m",
        "funcx_flows.endpoint.worker", "--index", "0", "--fd", "3"]
    apptainer = ContainerSpec(type="apptainer", image="a.sif", python="/opt/py/bin/python")
    assert apptainer.argv("w1", 9, []) == [
        "apptainer", "exec", "a.sif", "/opt/py/bin/python", "-m",
        "funcx_flows.endpoint.worker", "--fd", "9"]
    assert os.environ.get("CONTAINERS_CONF") is None  # the stack's own, not the tests'


def containers() -> set[str]:
    return set(worker_containers())


def test_cancelling_a_running_task_removes_its_container(stack):
    for name in cancel_replaces_a_container(stack, "boxed", containers):
        for pid in conmon_pids([name]):  # the new worker's conmon: the endpoint's to end
            outlives_test(pid)
