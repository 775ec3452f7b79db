"""funcx_flows.testing as a user meets it: their own test folder, a conftest that loads
the fixtures, tests that run their functions on the endpoint the fixture started
(a real service and endpoint; nothing of theirs or ours is faked)."""

from __future__ import annotations

import os
import subprocess
import sys

CONFTEST = 'pytest_plugins = ["funcx_flows.testing.fixtures"]\n'

USER_TESTS = '''\
import os

import pytest

from funcx_flows import Client, Executor


def double(x):
    return 2 * x


def pid():
    return os.getpid()


def test_my_function_runs_on_the_endpoint(funcx_endpoint):
    with Executor(endpoint=funcx_endpoint) as ex:
        assert ex.submit(double, 21).result(timeout=120) == 42
        assert ex.submit(pid).result(timeout=120) != os.getpid()  # a worker process


def test_its_errors_are_its_own(funcx_endpoint):
    with Executor(endpoint=funcx_endpoint) as ex:
        with pytest.raises(ZeroDivisionError):
            ex.submit(lambda: 1 / 0).result(timeout=120)


def test_the_stack_is_the_default_service(funcx_stack):
    with Client() as client:  # from the environment the fixture set
        assert client.service_url == funcx_stack.service_url
        assert [e["name"] for e in client.list_endpoints()] == ["test"]
'''


def test_a_users_tests_run_their_functions_on_the_fixtures_endpoint(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_mine.py").write_text(USER_TESTS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNCX_FLOWS_")}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(tmp_path)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "3 passed" in out.stdout
    assert not list(tmp_path.glob("funcx-flows-test-*"))
