"""Tasks that ask for a container image of their own, through the whole path on a
real endpoint with podman (its own workers on the host; a manager process, and
one in the endpoint's loop): the manager keeps the
container warm for the next task of the image, stops the least recently used one
for another image, and says which image when it cannot have one. Two images: the
worker test image (tests/containerimage.py) and a second tag of it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from containerimage import (
    assert_none_left,
    conmon_pids,
    containers_conf,
    worker_containers,
    worker_image,
)
from guards import outlives_test

from funcx_flows.errors import ContainerError, InvalidRequest
from funcx_flows.localstack import LocalStack
from funcx_flows.sdk.executor import Executor


@pytest.fixture(scope="module")
def images(need) -> Iterator[tuple[str, str]]:
    need(shutil.which("podman") is not None and shutil.which("runc") is not None,
         "podman and runc (Debian: apt-get install podman runc); .ci/run installs them")
    first = worker_image()
    second = first.replace("funcx-flows-worker-test:", "funcx-flows-worker-test-b:")
    subprocess.run(["podman", "tag", first, second], check=True, capture_output=True)
    try:
        yield first, second
    finally:
        subprocess.run(["podman", "untag", first, second], check=False, capture_output=True)


@pytest.fixture(scope="module", params=["local", "inline"])
def stack(tmp_path_factory: pytest.TempPathFactory, images: tuple[str, str],
          request: pytest.FixtureRequest) -> Iterator[LocalStack]:
    folder = Path(tmp_path_factory.mktemp("warm"))
    s = LocalStack(folder / "home", env={"CONTAINERS_CONF": str(containers_conf(folder))})
    try:
        s.start_service()
        common = {"max_workers_per_node": 1, "heartbeat_period_s": 0.5,
                  "heartbeat_threshold_s": 5, "provider": request.param}
        s.start_endpoint("warm", {**common, "task_dir": True, "container": {
            "type": "podman", "options": "--network none", "max_warm": 1}})
        s.start_endpoint("plain", common)
        yield s
    finally:
        s.stop()
    assert_none_left()


@pytest.fixture(autouse=True)
def warm_containers_outlive_the_test() -> Iterator[None]:
    """Containers kept warm are the endpoint's, which ends them when it stops."""
    yield
    for pid in conmon_pids(worker_containers()):
        outlives_test(pid)


def which_container() -> dict[str, str]:
    """The container's name for itself, and a mark left in its own /tmp by the first
    task it ran (a new container has none)."""
    import os
    import socket
    import uuid

    mark = "/tmp/funcx-test-mark"  # (the container's own /tmp)
    if not os.path.exists(mark):
        with open(mark, "w") as f:
            f.write(uuid.uuid4().hex)
    return {"host": socket.gethostname(), "mark": open(mark).read(), "cwd": os.getcwd(),
            "engine": os.environ.get("container", "")}  # noqa: SIM112 (podman's name)


def run_in(stack: LocalStack, endpoint: str, image: str | None) -> dict[str, str]:
    resources = None if image is None else {"container_image": image}
    with Executor(stack.endpoints[endpoint].endpoint_id, client=stack.client(),
                  resources=resources) as ex:
        try:
            return ex.submit(which_container).result(timeout=180)
        finally:
            ex.client.close()


def live(*images: str) -> list[str]:
    """The containers of these images, running or not."""
    out = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}} {{.Image}}"],
                         capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines()
            if line.split()[0].startswith("funcx-worker-") and line.split()[1] in images]


def test_the_second_task_of_an_image_runs_in_the_same_container(stack, images):
    first, _ = images
    one = run_in(stack, "warm", first)
    two = run_in(stack, "warm", first)
    assert one["engine"] == "podman"  # in a container; the endpoint's own workers are not
    assert (one["host"], one["mark"]) == (two["host"], two["mark"])  # the same container
    # (task_dir: each task in a fresh folder of the container's own /tmp)
    assert one["cwd"] != two["cwd"] and one["cwd"].startswith("/tmp/funcx-task-")
    assert run_in(stack, "warm", None)["engine"] == ""
    assert len(live(first)) == 1


def test_two_images_alternate_in_one_warm_container(stack, images):
    first, second = images
    seen = []
    for image in (first, second, first):
        seen.append(run_in(stack, "warm", image))
        assert len(live(first, second)) == 1  # max_warm 1: the other one was stopped
    a1, b, a2 = seen
    assert len({a1["host"], b["host"], a2["host"]}) == 3  # a new container each time
    assert len({a1["mark"], b["mark"], a2["mark"]}) == 3


def test_an_image_the_engine_does_not_have_fails_the_task_naming_it(stack):
    with pytest.raises(ContainerError, match="podman has no image 'localhost/not-there:1'"):
        run_in(stack, "warm", "localhost/not-there:1")
    with Executor(stack.endpoints["warm"].endpoint_id, client=stack.client(),
                  resources={"container_image": "localhost/not-there:2"}) as ex:
        futures = [ex.submit(which_container) for _ in range(6)]  # several wait at once
        errors = [f.exception(timeout=180) for f in futures]
        ex.client.close()
    assert all(isinstance(e, ContainerError) and "'localhost/not-there:2'" in str(e)
               for e in errors), errors


def test_an_endpoint_without_an_engine_refuses_a_task_that_asks_for_an_image(stack, images):
    with pytest.raises(ContainerError, match=f"container image '{images[0]}', but this "
                                             "endpoint runs no container engine"):
        run_in(stack, "plain", images[0])
    assert run_in(stack, "plain", None)["engine"] == ""


def test_an_image_name_that_is_an_engine_option_is_refused_at_submission(stack):
    with pytest.raises(InvalidRequest, match="container_image"):
        run_in(stack, "warm", "--privileged")
