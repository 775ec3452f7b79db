"""A worker's calls from Prefect tasks: prefect.runtime and get_run_logger() in the
body, whether the body loads Prefect during the call or it was loaded before, in a
fresh process that has not imported Prefect (as a worker has not)."""

from __future__ import annotations

import subprocess
import sys

import msgspec
from prefect import get_run_logger

from funcx_flows import messages as m
from funcx_flows import serialize

CONTEXT = {"prefect": {"task_run": {"id": "tr-1", "name": "uses-7", "task_name": "uses",
                                    "tags": ["a", "b"], "run_count": 2},
                       "flow_run": {"id": "fr-1", "name": "quiet-fox", "flow_name": "scan"}},
           "log_level": 10}

WORKER = """
import logging, sys
import msgspec
from funcx_flows import messages as m
from funcx_flows.endpoint.callcontext import name_block_log
from funcx_flows.endpoint.worker import Runner

# as a manager and its workers set up logging (the block log is this stderr)
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s manager: %(message)s")
name_block_log()

specs = msgspec.msgpack.decode(sys.stdin.buffer.read(), type=list[m.TaskSpec])
runner, out = Runner(1 << 20), []
for spec in specs:
    out.append((runner.run(spec), "prefect" in sys.modules))
sys.stdout.buffer.write(msgspec.msgpack.encode(out))
"""


def uses_runtime(x, y=2):
    from prefect import get_run_logger
    from prefect.runtime import flow_run, task_run

    get_run_logger().debug("hello %s", x)
    return [task_run.id, task_run.name, task_run.task_name, task_run.tags, task_run.parameters,
            task_run.run_count, flow_run.id, flow_run.name, flow_run.flow_name]


def plain(x):
    return x + 1


def loads_prefect():
    import prefect  # noqa: F401

    return "loaded"


def held_logger():
    get_run_logger().info("from a logger taken before the call")  # this module's global
    return 1


def _run(*calls):
    specs = [m.TaskSpec(task_id=f"t{i}", function_id=fn.__name__,
                        function=serialize.pack_function(fn),
                        payload=serialize.pack_call(args, {}, context))
             for i, (fn, args, context) in enumerate(calls)]
    done = subprocess.run([sys.executable, "-c", WORKER], input=msgspec.msgpack.encode(specs),
                          capture_output=True, check=True, timeout=120)
    return (msgspec.msgpack.decode(done.stdout, type=list[tuple[m.TaskResult, bool]]),
            done.stderr.decode())


EXPECTED = ["tr-1", "uses-7", "uses", ["a", "b"], {"x": 7, "y": 2}, 2, "fr-1", "quiet-fox", "scan"]


def test_prefect_loaded_by_the_body_during_the_call():
    results, _ = _run((plain, (1,), None), (uses_runtime, (7,), CONTEXT))
    (first, loaded_after_plain), (second, _) = results
    assert not loaded_after_plain  # the worker itself never imports Prefect
    assert serialize.unpack(first.data) == 2
    assert second.ok, second.error
    assert serialize.unpack(second.data) == EXPECTED
    assert [(r.level, r.name, r.message) for r in second.logs] == [
        (10, m.REMOTE_RUN_LOGGER, "hello 7")]


def test_prefect_loaded_before_and_a_logger_held_from_before():
    results, block_log = _run((loads_prefect, (), None), (held_logger, (), CONTEXT),
                              (uses_runtime, (7,), CONTEXT), (uses_runtime, (7,), None))
    (loaded, in_modules), (held, _), (runtime, _), (outside, _) = results
    assert serialize.unpack(loaded.data) == "loaded" and in_modules
    assert held.ok, held.error
    assert [r.message for r in held.logs] == ["from a logger taken before the call"]
    line = next(x for x in block_log.splitlines() if "taken before the call" in x)
    assert "task t1 (held_logger)" in line and "manager:" not in line, line
    assert serialize.unpack(runtime.data) == EXPECTED
    # a call not sent by a Prefect task sees Prefect as it is: no run context
    assert not outside.ok and "MissingContextError" in outside.error.message
