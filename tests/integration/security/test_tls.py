"""TLS the service serves itself (one host, no proxy), and every way of getting it
wrong: an unknown CA, an expired certificate, a certificate for another host, plain
HTTP to the TLS port and TLS to a plain port. Each is one line that names the
problem, from the SDK and from `funcx-endpoint start`, and nothing hangs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from pki import CA
from stacks import running

from funcx_flows.errors import ServiceUnavailable
from funcx_flows.localstack import LocalStack
from funcx_flows.retry import RetryPolicy
from funcx_flows.sdk.client import Client
from funcx_flows.sdk.executor import Executor

NO_RETRY = RetryPolicy(max_attempts=0)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CA:
    return CA(Path(tmp_path_factory.mktemp("pki")))


def _stack(tmp: Path, ca: CA, label: str, healthy: bool = False, **cert: object
           ) -> contextlib.AbstractContextManager[LocalStack]:
    made = ca.issue(label, **cert)  # type: ignore[arg-type]
    return running(tmp / label, env={"FUNCX_FLOWS_CA_BUNDLE": str(ca.pem)},
                   service_args=["--tls-cert", str(made.cert), "--tls-key", str(made.key)],
                   healthy=healthy)


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory, ca: CA) -> Iterator[LocalStack]:
    with _stack(Path(tmp_path_factory.mktemp("tls")), ca, "good", healthy=True,
                dns=["localhost"], ips=["127.0.0.1"]) as s:
        yield s


def _token(stack: LocalStack) -> str:
    return (stack.home / "token").read_text().strip()


def _refusal(url: str, token: str, monkeypatch: pytest.MonkeyPatch,
             ca_bundle: str | None) -> str:
    if ca_bundle is None:
        monkeypatch.delenv("FUNCX_FLOWS_CA_BUNDLE", raising=False)
    else:
        monkeypatch.setenv("FUNCX_FLOWS_CA_BUNDLE", ca_bundle)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with Client(url, token, timeout=10, retry=NO_RETRY) as c, \
            pytest.raises(ServiceUnavailable) as refused:
        c.whoami()
    message = refused.value.message
    assert "\n" not in message
    return message


def test_the_service_serves_tls_itself_to_the_sdk_and_an_endpoint(good, monkeypatch):
    monkeypatch.setenv("FUNCX_FLOWS_CA_BUNDLE", str(good.env["FUNCX_FLOWS_CA_BUNDLE"]))
    assert good.service_url.startswith("https://127.0.0.1:")
    ep = good.start_endpoint("tls", {"max_workers_per_node": 1})  # link: auto -> wss
    assert "connected to the service" in (ep.folder / "foreground.log").read_text()
    with Client(good.service_url, _token(good)) as c, \
            Executor(endpoint_id=ep.endpoint_id, client=c) as ex:
        assert list(ex.map(abs, range(-5, 0))) == [5, 4, 3, 2, 1]
    good.stop_endpoint("tls")


def test_a_ca_this_machine_does_not_trust_is_named(good, monkeypatch):
    message = _refusal(good.service_url, _token(good), monkeypatch, ca_bundle=None)
    assert "not signed by a CA this machine trusts" in message
    assert "FUNCX_FLOWS_CA_BUNDLE" in message


@pytest.mark.parametrize("label, cert, words", [
    ("expired", {"dns": ["localhost"], "ips": ["127.0.0.1"], "expired": True}, "expired"),
    ("other", {"dns": ["other.test"]}, "another host name"),
])
def test_a_certificate_that_is_expired_or_for_another_host_is_named(
        tmp_path, ca, monkeypatch, label, cert, words):
    with _stack(tmp_path, ca, label, **cert) as s:
        message = _refusal(s.service_url, _token(s), monkeypatch, str(ca.pem))
        assert words in message, message


def test_plain_http_to_the_tls_port_and_tls_to_a_plain_port(good, tmp_path, monkeypatch):
    plain_url = good.service_url.replace("https://", "http://")
    message = _refusal(plain_url, _token(good), monkeypatch, str(good.env[
        "FUNCX_FLOWS_CA_BUNDLE"]))
    assert "use https://" in message, message
    with running(tmp_path / "plain") as plain:
        message = _refusal(plain.service_url.replace("http://", "https://"), _token(plain),
                           monkeypatch, None)
        assert "does not speak TLS" in message, message


def test_funcx_endpoint_start_says_what_is_wrong_with_the_certificate(good, tmp_path):
    """The CLI with no CA bundle: a one-line error and exit 1, no traceback."""
    stack = LocalStack(tmp_path / "ep-home")
    stack.env["FUNCX_FLOWS_SERVICE_URL"] = good.service_url
    stack.env["FUNCX_FLOWS_TOKEN"] = _token(good)
    stack.env.pop("FUNCX_FLOWS_CA_BUNDLE", None)
    stack.configure_endpoint("ep", {"service_url": good.service_url})
    out = stack.endpoint_cli("start", "ep", "--foreground", check=False)
    assert out.returncode == 1, out
    assert "Traceback" not in out.stderr and "not signed by a CA" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (stack.home / "endpoints" / "ep" / "endpoint.json").exists()


def test_an_executor_streams_results_with_the_ca_its_client_was_given(good, monkeypatch):
    """The CA passed to the Client, not only the environment's, is trusted by the
    result stream too (it was not: futures waited forever while the stream retried)."""
    monkeypatch.delenv("FUNCX_FLOWS_CA_BUNDLE", raising=False)
    ep = good.start_endpoint("ca-param", {"max_workers_per_node": 1})
    try:
        with Client(good.service_url, _token(good), ca_bundle=good.env[
                "FUNCX_FLOWS_CA_BUNDLE"]) as c, Executor(endpoint_id=ep.endpoint_id,
                                                        client=c) as ex:
            assert ex.submit(abs, -9).result(timeout=60) == 9
    finally:
        good.stop_endpoint("ca-param")
