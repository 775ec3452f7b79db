import random

from funcx_flows import errors
from funcx_flows.retry import Backoff, RetryPolicy


def test_every_error_has_a_unique_code_and_a_common_root():
    classes = list(errors.ERRORS_BY_CODE.values())
    assert all(issubclass(c, errors.FuncxFlowsError) for c in classes)
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes))


def test_error_from_code_rebuilds_remote_errors_with_traceback():
    exc = errors.error_from_code("remote_exception", "boom", remote_type="ValueError",
                                 remote_traceback="Traceback ...")
    assert isinstance(exc, errors.RemoteExecutionError)
    assert "ValueError: boom" in str(exc) and "Traceback ..." in str(exc)


def test_unknown_code_falls_back_to_the_root():
    exc = errors.error_from_code("from_the_future", "x")
    assert type(exc) is errors.FuncxFlowsError and exc.message == "x"


def test_system_failures_are_task_errors():
    for cls in (errors.WorkerLost, errors.ManagerLost, errors.PilotEnded):
        assert issubclass(cls, errors.SystemFailure) and issubclass(cls, errors.TaskError)


def test_backoff_grows_caps_and_jitters_within_bounds():
    policy = RetryPolicy(initial=0.1, multiplier=2, max_delay=1.0, jitter=0.5,
                         rng=random.Random(7))
    delays = [policy.delay(n) for n in range(8)]
    for n, d in enumerate(delays):
        base = min(1.0, 0.1 * 2**n)
        assert base * 0.5 <= d <= base
    assert max(delays) <= 1.0


def test_bounded_policy_stops_and_backoff_resets():
    policy = RetryPolicy(max_attempts=3, rng=random.Random(1))
    assert len(list(policy.delays())) == 3
    b = Backoff(policy)
    first = b.failed()
    b.failed()
    b.succeeded()
    assert b.attempt == 0 and first <= policy.initial
