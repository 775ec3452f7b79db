"""Shell commands through the whole path: ShellFunction from the client, run by a
worker of a real endpoint (a manager process, and workers the endpoint forks)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from waiting import wait_until

from funcx_flows import ShellFunction, ShellResult
from funcx_flows.errors import CommandError, CommandFailed, CommandTimedOut
from funcx_flows.sdk.executor import Executor


def _gone(pid: int) -> bool:
    """Not running: no such process, or a zombie waiting for its reaper."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def test_a_template_runs_in_a_clean_folder_of_its_own_and_returns_its_output(endpoint, client):
    show = ShellFunction("echo {0} {who}; echo to-stderr >&2; pwd; ls -A | wc -l; "
                         "touch leftover; exit {code}")
    with Executor(endpoint.endpoint_id, client=client) as ex:
        futures = [ex.submit(show, "hello", who="world", code=code) for code in (0, 3)]
        first, second = (f.result(timeout=60) for f in futures)
    assert isinstance(first, ShellResult)
    assert first.cmd == ("echo hello world; echo to-stderr >&2; pwd; ls -A | wc -l; "
                         "touch leftover; exit 0")
    assert first.returncode == 0 and second.returncode == 3  # a result, not an error
    assert first.stderr == "to-stderr\n"
    words, folder, count = first.stdout.splitlines()
    assert words == "hello world" and count.strip() == "0"  # empty: no earlier leftover
    other = second.stdout.splitlines()[1]
    assert folder != other and second.stdout.splitlines()[2].strip() == "0"
    assert not Path(folder).exists() and not Path(other).exists()  # removed after


def test_check_makes_a_nonzero_code_an_error_that_carries_the_result(endpoint, client):
    fails = ShellFunction("echo partial; echo broken >&2; exit 5", check=True)
    with (Executor(endpoint.endpoint_id, client=client) as ex,
          pytest.raises(CommandFailed, match="exited with 5") as info):
        ex.submit(fails).result(timeout=60)
    assert info.value.result.stdout == "partial\n"
    assert info.value.result.stderr == "broken\n"


def test_a_missing_executable_is_code_127_with_the_shells_message(endpoint, client):
    task_id = client.run(ShellFunction("no-such-program-here --flag"),
                         endpoint_id=endpoint.endpoint_id)
    result = wait_until(lambda: client.get_task(task_id)["state"] in {"success", "failed"},
                        what="the task to end") and client.get_result(task_id)
    assert result.returncode == 127
    assert "no-such-program-here" in result.stderr and "not found" in result.stderr


def test_a_bad_template_key_fails_naming_it(endpoint, client):
    with (Executor(endpoint.endpoint_id, client=client) as ex,
          pytest.raises(CommandError, match=r"needs \{name\}.*given: 0, other")):
        ex.submit(ShellFunction("echo {name}"), "x", other=1).result(timeout=60)
    with pytest.raises(CommandError, match="not valid"):
        ShellFunction("echo {unclosed")


def test_walltime_kills_the_whole_process_group_and_fails_clearly(endpoint, client,
                                                                  tmp_path):
    pid_file = tmp_path / "background.pid"
    slow = ShellFunction(f"sleep 600 & echo $! > {pid_file}; echo started; sleep 600",
                         walltime=1)
    with (Executor(endpoint.endpoint_id, client=client) as ex,
          pytest.raises(CommandTimedOut, match=r"(?s)walltime of 1 s; its process group was "
                                               r"killed.*last output:\nstarted")):
        ex.submit(slow).result(timeout=60)
    background = int(pid_file.read_text())
    wait_until(lambda: _gone(background), timeout=10, what="the background sleep to be killed")


def test_only_the_last_snippet_lines_come_back(endpoint, client):
    with Executor(endpoint.endpoint_id, client=client) as ex:
        result = ex.submit(ShellFunction("seq 1 100000; seq 1 10 >&2",
                                         snippet_lines=3)).result(timeout=60)
    assert result.stdout == "99998\n99999\n100000\n"
    assert result.stderr == "8\n9\n10\n"


def test_the_worker_environment_reaches_the_command(endpoint, client):
    """The command sees the worker's environment (PATH, TMPDIR, ...) and runs as it."""
    with Executor(endpoint.endpoint_id, client=client) as ex:
        result = ex.submit(ShellFunction("id -u")).result(timeout=60)
    assert result.stdout.strip() == str(os.getuid())
