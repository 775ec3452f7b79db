"""TLS for every client of the service: the SDK, the endpoint's link, the triggers.

One setting says whom to trust beyond the system's store: ``FUNCX_FLOWS_CA_BUNDLE``
(a PEM file of CA certificates, for a facility's private CA), else ``SSL_CERT_FILE``.
Certificates are always verified, host names included.

A TLS failure becomes one line that names the problem (an unknown CA, an expired
certificate, a certificate for another host, plain HTTP where TLS was expected, or
the reverse) and what to do about it.
"""

from __future__ import annotations

import os
import ssl
from functools import lru_cache

CA_BUNDLE_ENV = "FUNCX_FLOWS_CA_BUNDLE"

# OpenSSL's X509_V_ERR_* codes that users meet
_EXPIRED = 10
_NOT_YET_VALID = 9
_SELF_SIGNED = 18
_SELF_SIGNED_IN_CHAIN = 19
_UNKNOWN_ISSUER = 20
_UNABLE_TO_VERIFY_LEAF = 21
_HOSTNAME_MISMATCH = 62
_IP_ADDRESS_MISMATCH = 64


def ca_bundle() -> str | None:
    """The extra CA file to trust: ``$FUNCX_FLOWS_CA_BUNDLE``, else ``$SSL_CERT_FILE``."""
    return os.environ.get(CA_BUNDLE_ENV) or os.environ.get("SSL_CERT_FILE") or None


def client_context(bundle: str | None = None) -> ssl.SSLContext:
    """A verifying client context: the system's CAs and those of ``bundle`` (default
    ``ca_bundle()``)."""
    return _context(bundle or ca_bundle())


@lru_cache(maxsize=8)
def _context(bundle: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if bundle:
        try:
            ctx.load_verify_locations(cafile=bundle)
        except (OSError, ssl.SSLError) as exc:
            from funcx_flows.errors import ConfigError

            raise ConfigError(f"cannot read the CA bundle {bundle} (from {CA_BUNDLE_ENV} or "
                              f"SSL_CERT_FILE): {exc}") from exc
    return ctx


def describe(exc: BaseException, url: str) -> str | None:
    """One line for a TLS problem in ``exc`` (or its causes) reaching ``url``; None
    when it is not one."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        text = _describe_one(cur, url)
        if text:
            return text
        cur = cur.__cause__ or cur.__context__
    return None


def _describe_one(exc: BaseException, url: str) -> str | None:
    hint = f"set {CA_BUNDLE_ENV} to the PEM file of the CA that signed it"
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        why = exc.verify_message or str(exc)
        if code == _EXPIRED:
            return f"the certificate of {url} has expired ({why})"
        if code == _NOT_YET_VALID:
            return f"the certificate of {url} is not valid yet ({why})"
        if code in (_HOSTNAME_MISMATCH, _IP_ADDRESS_MISMATCH):
            return f"the certificate of {url} is for another host name or address ({why})"
        if code in (_SELF_SIGNED, _SELF_SIGNED_IN_CHAIN, _UNKNOWN_ISSUER,
                    _UNABLE_TO_VERIFY_LEAF):
            return f"the certificate of {url} is not signed by a CA this machine trusts " \
                   f"({why}); {hint}"
        return f"the certificate of {url} cannot be verified ({why})"
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", "") or ""
        if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "HTTP_REQUEST"):
            return f"{url} does not speak TLS (is it http:// rather than https://?)"
        return f"the TLS handshake with {url} failed: {reason or exc}"
    return None
