"""The records the API answers with, built from stored rows (see docs/protocol.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from funcx_flows.service import lifecycle as lc

# each state's timestamp, by the state's name; the terminal ones as "completed"
_STAMPED = [(state, col) for state, col in lc.TIMESTAMP_OF.items() if state not in lc.TERMINAL]


def _stamps(row: Mapping[str, Any]) -> dict[str, float]:
    stamps = {state: row[col] for state, col in _STAMPED if row.get(col)}
    if row.get("t_completed"):
        stamps["completed"] = row["t_completed"]
    return stamps


def task_summary(row: Mapping[str, Any]) -> dict[str, Any]:
    """A listed task (``store.listing.LISTED_COLUMNS``): its error as code and message."""
    err = row.get("error")
    return {
        "task_id": row["task_id"], "function_id": row["function_id"],
        "endpoint_id": row["endpoint_id"], "group_id": row.get("group_id"),
        "state": row["state"], "timestamps": _stamps(row),
        "attempts": row.get("attempts") or 0,
        "error": {"code": str(err.get("code", "")), "message": str(err.get("message", ""))}
        if isinstance(err, dict) else None,
    }


def task_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """The public TaskRecord of docs/protocol.md from a tasks row (or dict like it).

    ``result`` is left as the stored bytes: the result stream's msgspec encoder
    writes bytes as base64 in C, and ``TaskRecord`` encodes it for REST answers.
    A 10 MB result costs ~30 ms less than with ``base64.b64encode`` here."""
    stamps = _stamps(row)
    result = row.get("result") if row["state"] == lc.SUCCESS else None
    return {
        "task_id": row["task_id"],
        "function_id": row["function_id"],
        "endpoint_id": row["endpoint_id"],
        "group_id": row.get("group_id"),
        "state": row["state"],
        "seq": row.get("seq") or 0,
        "timestamps": stamps,
        "result": None if result is None else bytes(result),  # a driver's memoryview
        "error": row.get("error"),
        "stdout": row.get("stdout") or "",
        "logs": row.get("logs") or [],
        "attempts": row.get("attempts") or 0,
    }
