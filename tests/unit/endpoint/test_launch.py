"""The manager's options document: what the agent writes is what the manager reads,
and a bad document is refused with its cause, not a traceback."""

from __future__ import annotations

import shlex

import pytest

from funcx_flows.endpoint import manager
from funcx_flows.endpoint.launch import LaunchPlan, ManagerOptions
from funcx_flows.endpoint.sandbox import SandboxSpec
from funcx_flows.errors import ConfigError


def test_a_blocks_options_travel_whole_on_the_command_line():
    plan = LaunchPlan(interchange="tcp://10.0.0.1:5555", workers=4, prefetch=4,
                      heartbeat_period_s=2.0, heartbeat_threshold_s=9.5,
                      credentials="/home/u/.funcx/ep/manager-credentials.json",
                      sandbox=SandboxSpec(hide=("/home/u",), private_home="/tmp/h",
                                          keep=("/data",)),
                      runs_for_s=3600.0)
    opts = plan.options("block-7", max_result_bytes=1234, now=1_000_000.4)
    assert opts.drain_at == 1_003_600.0  # walltime from the submission, whole seconds
    argv = shlex.split(opts.command(python="/usr/bin/python3"))
    assert argv[:4] == ["/usr/bin/python3", "-m", "funcx_flows.endpoint.manager", "--options"]
    assert ManagerOptions.from_json(argv[4]) == opts


def test_a_local_block_never_drains():
    plan = LaunchPlan(interchange="tcp://127.0.0.1:1", workers=1, prefetch=0,
                      heartbeat_period_s=1.0, heartbeat_threshold_s=5.0)
    assert plan.options("b", 10, now=5.0).drain_at is None


@pytest.mark.parametrize("text, cause", [
    ("not json", "JSON"),
    ('{"block_id": "b"}', "interchange"),
    ('{"interchange": "tcp://h:1", "workers": 0}', "workers"),
    ('{"interchange": "tcp://h:1", "wrokers": 2}', "wrokers"),
])
def test_a_bad_document_is_refused_with_its_cause(text: str, cause: str,
                                                  capsys: pytest.CaptureFixture[str]):
    with pytest.raises(ConfigError, match=cause):
        ManagerOptions.from_json(text)
    with pytest.raises(SystemExit) as exit_:
        manager.main(["--options", text])
    assert str(exit_.value).startswith("manager: --options is not a manager's options")
    assert cause in str(exit_.value)
