"""Field types that every request passes through: what the service agrees to store.

Anything stored must read back on every route, for every user it is shared with,
on SQLite and PostgreSQL alike. So the edge refuses (422) what one of them would
keep and the other refuse, or what could be stored but not served:

- text that is not valid Unicode for UTF-8 (a lone surrogate such as ``"\\ud800"``
  is accepted by Python's JSON parser, stored by SQLite, and then fails every
  response that carries it);
- NUL and other control characters (PostgreSQL's text types refuse NUL; SQLite
  keeps it); free text (descriptions) may hold tab, newline and carriage return;
- numbers that are not finite (``1e999``, ``Infinity``, ``NaN``), and integers past
  64 bits;
- endpoint metadata larger than ``METADATA_MAX_BYTES`` as JSON or nested deeper
  than ``METADATA_MAX_DEPTH``;
- public keys that are not 40 characters of the Z85 alphabet.

Ids are UUIDs, and any spelling of one (upper case, no dashes, braces) is the same
id: ``canonical_id`` writes it in the one form the database holds, so that a task
resubmitted with its id in capitals is recognised, and found.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from funcx_flows.errors import InvalidRequest
from funcx_flows.service.store.identity import canonical_uuid

METADATA_MAX_BYTES = 64 * 1024
METADATA_MAX_DEPTH = 8
_INT_LIMIT = 2**63
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_Z85 = re.compile(r"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")


def canonical_id(value: str) -> str:
    """A UUID in its canonical spelling; anything else unchanged (it then matches
    nothing, and the route answers 404 as for any unknown id)."""
    found: str | None = canonical_uuid(value)
    return value if found is None else found


def _uuid(value: str) -> str:
    found: str | None = canonical_uuid(value)
    if found is None:
        raise ValueError(f"{value!r} is not a UUID")
    return found


def _unicode(value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains a lone surrogate (not valid Unicode)") from None


def _name(value: str) -> str:
    _unicode(value)
    if _CONTROL.search(value):
        raise ValueError("contains a control character")
    return value


def _text(value: str) -> str:
    _unicode(value)
    if _CONTROL_BUT_LINES.search(value):
        raise ValueError("contains a control character other than tab or a line break")
    return value


def _z85_key(value: str) -> str:
    if not _Z85.match(value):
        raise ValueError("is not a Z85-encoded CurveZMQ key (40 characters of the Z85 "
                         "alphabet)")
    return value


def check_json(value: Any, depth: int = 0, where: str = "") -> None:
    """Raise ValueError naming the first thing in ``value`` that cannot be stored and
    served as JSON by both databases."""
    if depth > METADATA_MAX_DEPTH:
        raise ValueError(f"nested deeper than {METADATA_MAX_DEPTH} levels at {where or 'top'}")
    if isinstance(value, str):
        try:
            _text(value)
        except ValueError as exc:
            raise ValueError(f"{where or 'value'} {exc}") from None
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if not -_INT_LIMIT <= value < _INT_LIMIT:
            raise ValueError(f"{where or 'value'} is an integer past 64 bits")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where or 'value'} is not a finite number")
    elif isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{where or 'top'} has a key that is not a string")
            try:
                _name(k)
            except ValueError as exc:
                raise ValueError(f"a key at {where or 'top'} {exc}") from None
            check_json(v, depth + 1, f"{where}.{k}" if where else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_json(v, depth + 1, f"{where}[{i}]")
    else:
        raise ValueError(f"{where or 'value'} is not JSON")


def _metadata(value: dict[str, Any]) -> dict[str, Any]:
    check_json(value)
    size = len(json.dumps(value, ensure_ascii=False).encode())
    if size > METADATA_MAX_BYTES:
        raise ValueError(f"is {size} bytes as JSON; at most {METADATA_MAX_BYTES} are kept")
    return value


# An id as a path parameter or in a body: canonical when it is a UUID.
Id = Annotated[str, Field(max_length=64), AfterValidator(canonical_id)]
# A task id a client chooses: must be a UUID (it is the idempotency key).
TaskIdIn = Annotated[str, Field(max_length=64), AfterValidator(_uuid)]
Name = Annotated[str, AfterValidator(_name)]
Text = Annotated[str, AfterValidator(_text)]
Metadata = Annotated[dict[str, Any], AfterValidator(_metadata)]
Z85Key = Annotated[str, Field(min_length=40, max_length=40), AfterValidator(_z85_key)]


def parse_time(value: str | None, name: str) -> float | None:
    """A time given in a query: seconds since the epoch, or ISO 8601 (UTC when it
    names no zone). InvalidRequest (422) naming ``name`` for anything else."""
    if value is None or value == "":
        return None
    try:
        at = float(value)
    except ValueError:
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidRequest(f"{name} {value!r} is neither seconds since the epoch nor "
                                 "an ISO 8601 time (2026-01-31T12:00:00Z)",
                                 field=name) from None
        at = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    if not math.isfinite(at):
        raise InvalidRequest(f"{name} {value!r} is not a finite time", field=name)
    return at
