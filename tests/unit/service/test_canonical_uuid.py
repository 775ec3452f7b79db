"""The ids' fast path says what parsing the UUID says, for any text."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from funcx_flows.service.api.fields import canonical_id
from funcx_flows.service.store.identity import canonical_uuid, valid_uuid


def parsed(value: str) -> str | None:
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        return None


def spellings(u: uuid.UUID) -> list[str]:
    s = str(u)
    return [s, s.upper(), u.hex, u.hex.upper(), "{" + s + "}", f"urn:uuid:{s}",
            s[:8] + "-" + s[9:].upper()]


@given(st.uuids())
def test_every_spelling_of_a_uuid_is_its_canonical_form(u: uuid.UUID) -> None:
    for spelled in spellings(u):
        assert canonical_uuid(spelled) == str(u)
        assert canonical_id(spelled) == str(u)
        assert valid_uuid(spelled)


@given(st.one_of(
    st.text(max_size=50),
    st.text(alphabet="0123456789abcdefABCDEF-{}:urn", min_size=30, max_size=45),
    st.uuids().map(lambda u: str(u)[:-1] + "g"),
    st.uuids().map(lambda u: " " + str(u)),
    st.uuids().map(lambda u: str(u) + "\n"),
))
def test_any_text_reads_as_parsing_reads_it(value: str) -> None:
    assert canonical_uuid(value) == parsed(value)
    assert canonical_id(value) == (parsed(value) or value)


def test_what_is_not_text_is_not_an_id() -> None:
    for value in (None, 12, b"x" * 16):
        assert canonical_uuid(value) is None  # type: ignore[arg-type]
