import random

import pytest

from funcx_flows import errors
from funcx_flows.retry import Backoff, RetryPolicy, poll_until


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


def test_each_delay_is_half_fixed_half_random_as_the_docstring_says():
    policy = RetryPolicy(initial=1.0, multiplier=2.0, max_delay=8.0, rng=random.Random(3))
    for attempt, base in enumerate([1.0, 2.0, 4.0, 8.0, 8.0]):
        drawn = [policy.delay(attempt) for _ in range(200)]
        assert all(base / 2 <= d <= base for d in drawn)
        assert max(drawn) - min(drawn) > base / 4  # spread, not a constant
    assert RetryPolicy(initial=0.3, jitter=0.0).delay(0) == 0.3


def test_poll_until_returns_the_value_waits_the_policys_delays_and_gives_up():
    slept: list[float] = []
    policy = RetryPolicy(initial=0.01, multiplier=2.0, max_delay=0.04, jitter=0.0,
                         sleep=slept.append)
    answers = iter([0, None, "", "ready"])
    assert poll_until(lambda: next(answers), 10, policy) == "ready"
    assert slept == [0.01, 0.02, 0.04]
    assert poll_until(lambda: False, 0.05) is None  # the real clock: gives up at the deadline
    with pytest.raises(ZeroDivisionError):  # what the predicate raises goes through
        poll_until(lambda: 1 / 0, 10, policy)


def test_one_status_map_derived_from_the_tree():
    """The client and the service read an answer without a code the same way: a
    status names the most general service error answered with it."""
    assert errors.code_for_status(404) == errors.NotFound.code
    assert errors.code_for_status(405) == errors.code_for_status(400) == \
        errors.InvalidRequest.code
    assert errors.code_for_status(503) == errors.ServiceUnavailable.code  # not storage's
    assert errors.code_for_status(500) == errors.code_for_status(418) == \
        errors.ServiceError.code
    for cls in errors.ERRORS_BY_CODE.values():
        if issubclass(cls, errors.ServiceError) and cls is not errors.ServiceError:
            rebuilt = errors.error_from_code(errors.code_for_status(cls.http_status), "x")
            assert isinstance(rebuilt, errors.ServiceError)
            assert rebuilt.http_status == cls.http_status


def test_a_client_reads_a_bare_405_as_invalid_request():
    import httpx

    from funcx_flows.sdk.client import Client

    exc = Client._error_from_response(httpx.Response(405, text="Method Not Allowed"))
    assert isinstance(exc, errors.InvalidRequest) and exc.details["http_status"] == 405


def test_a_task_failure_is_never_a_refusal_of_a_request():
    """Records stored by older services named these failures with request codes."""
    deleted = errors.task_error_from_code("not_found", "endpoint e was deleted")
    assert type(deleted) is errors.EndpointDeleted
    lost = errors.task_error_from_code("storage_error", "lost")
    assert type(lost) is errors.ArgumentsLost and isinstance(lost, errors.SystemFailure)
    refused = errors.task_error_from_code("permission_denied", "endpoint does not allow f")
    assert type(refused) is errors.FunctionNotAllowed  # an endpoint's allow-list, before
    odd = errors.task_error_from_code("rate_limited", "no")
    assert type(odd) is errors.TaskError and odd.details["code"] == "rate_limited"
    assert type(errors.task_error_from_code("worker_lost", "w")) is errors.WorkerLost
    # a worker's own kinds of failure keep their class
    assert type(errors.task_error_from_code("serialization_error", "s")) is \
        errors.SerializationError


def test_a_failed_record_with_a_request_code_raises_a_task_error():
    from funcx_flows.sdk.client import result_from_record

    record = {"task_id": "t", "state": "failed",
              "error": {"code": "endpoint_deleted", "message": "endpoint e was deleted"}}
    with pytest.raises(errors.EndpointDeleted, match="was deleted"):
        result_from_record(record)
    with pytest.raises(errors.EndpointDeleted):
        result_from_record({**record, "error": {"code": "not_found", "message": "old"}})
