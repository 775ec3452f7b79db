"""``transfer``: a Globus transfer as a Prefect task.

It submits through globus-sdk with a submission id that is stored before the
submit (so a retried task run cannot start a second transfer: Globus answers a
repeated submission id with the first task), waits while logging progress, and
fails with Globus's own words when the transfer fails.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import globus_sdk
from prefect import task
from prefect.cache_policies import NO_CACHE

from funcx_flows.errors import ConfigError, TransferFailed
from funcx_flows.home import home_dir, write_secret
from funcx_flows.prefect._remote import _run_logger

CLIENT_ID_ENV = "FUNCX_FLOWS_GLOBUS_CLIENT_ID"
CLIENT_SECRET_ENV = "FUNCX_FLOWS_GLOBUS_CLIENT_SECRET"


def transfer_client_from_env() -> globus_sdk.TransferClient:
    """A TransferClient for a confidential client (service account) given by the environment."""
    client_id, secret = os.environ.get(CLIENT_ID_ENV), os.environ.get(CLIENT_SECRET_ENV)
    if not client_id or not secret:
        raise ConfigError(f"no Globus credentials: pass client= or set {CLIENT_ID_ENV} and "
                          f"{CLIENT_SECRET_ENV} (a confidential client)")
    auth = globus_sdk.ConfidentialAppAuthClient(client_id, secret)
    authorizer = globus_sdk.ClientCredentialsAuthorizer(
        auth, scopes=globus_sdk.TransferClient.scopes.all)
    return globus_sdk.TransferClient(authorizer=authorizer)


def _state_path(key: str, home: Path | None) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
    return (home or home_dir()) / "transfers" / f"{safe}.json"


def _run_key() -> str | None:
    try:
        from prefect.context import TaskRunContext

        ctx = TaskRunContext.get()
    except ImportError:
        return None
    return None if ctx is None else str(ctx.task_run.id)


def _items(items: Iterable[Any]) -> list[tuple[str, str, bool]]:
    out = []
    for item in items:
        if isinstance(item, dict):
            out.append((item["source"], item["destination"], bool(item.get("recursive", False))))
        else:
            src, dst, *rest = item
            out.append((str(src), str(dst), bool(rest[0]) if rest else False))
    if not out:
        raise ConfigError("transfer needs at least one (source, destination) item")
    return out


def _describe_failure(tc: globus_sdk.TransferClient, task_id: str, doc: Any) -> str:
    reason = doc.get("nice_status_short_description") or doc.get("nice_status") or ""
    fatal = doc.get("fatal_error") or {}
    if isinstance(fatal, dict) and fatal.get("description"):
        reason = f"{fatal.get('code', '')}: {fatal['description']}".strip(": ")
    if not reason:
        try:
            for event in tc.task_event_list(task_id, limit=5):
                if event.get("is_error"):
                    reason = f"{event.get('code')}: {event.get('description')}"
                    break
        except globus_sdk.GlobusAPIError:
            pass
    return reason or "no reason given"


def run_transfer(source_endpoint: str, destination_endpoint: str,
                 items: Sequence[Any], *, label: str | None = None,
                 sync_level: str | None = "checksum", verify_checksum: bool = True,
                 client: globus_sdk.TransferClient | None = None,
                 submission_key: str | None = None, poll_interval_s: float = 10.0,
                 timeout_s: float | None = None, home: Path | None = None) -> dict[str, Any]:
    """Submit (at most once per ``submission_key``) and wait; returns the task's summary."""
    logger = _run_logger()
    tc = client or transfer_client_from_env()
    key = submission_key or _run_key()
    state: dict[str, Any] = {}
    path = _state_path(key, home) if key else None
    if path is not None and path.exists():
        state = json.loads(path.read_text())
    try:
        if "submission_id" not in state:
            state["submission_id"] = tc.get_submission_id()["value"]
            if path is not None:
                write_secret(path, json.dumps(state))
        if "task_id" not in state:
            options: dict[str, Any] = {"verify_checksum": verify_checksum,
                                       "submission_id": state["submission_id"]}
            if label is not None:
                options["label"] = label
            if sync_level is not None:
                options["sync_level"] = sync_level
            data = globus_sdk.TransferData(
                source_endpoint=source_endpoint, destination_endpoint=destination_endpoint,
                **options)
            for src, dst, recursive in _items(items):
                data.add_item(src, dst, recursive=recursive)
            answer = tc.submit_transfer(data)
            state["task_id"] = answer["task_id"]
            if path is not None:
                write_secret(path, json.dumps(state))
            logger.info("submitted Globus transfer %s (%s -> %s, %d items)", state["task_id"],
                        source_endpoint, destination_endpoint, len(items))
        else:
            logger.info("resuming Globus transfer %s", state["task_id"])
    except globus_sdk.GlobusAPIError as exc:
        raise TransferFailed(f"Globus refused the transfer: {exc.code}: {exc.message}",
                             http_status=exc.http_status) from None
    return _wait(tc, str(state["task_id"]), poll_interval_s, timeout_s, logger)


def _wait(tc: globus_sdk.TransferClient, task_id: str, poll_interval_s: float,
          timeout_s: float | None, logger: Any) -> dict[str, Any]:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    last = None
    while True:
        try:
            doc = tc.get_task(task_id)
        except globus_sdk.GlobusAPIError as exc:
            if exc.http_status in (429, 502, 503, 504):
                logger.warning("Globus busy (%s); polling again", exc.http_status)
                time.sleep(poll_interval_s)
                continue
            raise TransferFailed(f"cannot read transfer {task_id}: {exc.code}: "
                                 f"{exc.message}") from None
        except globus_sdk.GlobusConnectionError as exc:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"Globus unreachable while waiting for transfer {task_id}: "
                                   f"{exc}") from None
            logger.warning("Globus unreachable (%s); polling again", exc)
            time.sleep(poll_interval_s)
            continue
        status = doc["status"]
        progress = (doc.get("files_transferred", 0), doc.get("files", 0),
                    doc.get("bytes_transferred", 0))
        if (status, progress) != last:
            last = (status, progress)
            logger.info("Globus transfer %s: %s, %d/%d files, %d bytes", task_id, status,
                        progress[0], progress[1], progress[2])
        if status == "SUCCEEDED":
            return {"task_id": task_id, "status": status, "files": progress[1],
                    "files_transferred": progress[0], "bytes_transferred": progress[2]}
        if status == "FAILED":
            raise TransferFailed(f"Globus transfer {task_id} failed: "
                                 f"{_describe_failure(tc, task_id, doc)}", task_id=task_id)
        if deadline is not None and time.monotonic() >= deadline:
            try:
                tc.cancel_task(task_id)
            except globus_sdk.GlobusError as exc:
                logger.warning("could not cancel Globus transfer %s: %s", task_id, exc)
            raise TimeoutError(f"Globus transfer {task_id} did not finish in {timeout_s}s; "
                               "cancelled it")
        time.sleep(poll_interval_s if deadline is None
                   else max(0.0, min(poll_interval_s, deadline - time.monotonic())))


@task(name="globus-transfer", cache_policy=NO_CACHE)
def transfer(source_endpoint: str, destination_endpoint: str, items: Sequence[Any], *,
             label: str | None = None, sync_level: str | None = "checksum",
             verify_checksum: bool = True, client: globus_sdk.TransferClient | None = None,
             submission_key: str | None = None, poll_interval_s: float = 10.0,
             timeout_s: float | None = None) -> dict[str, Any]:
    """Transfer ``items`` ((source path, destination path[, recursive]) pairs or dicts)
    between two Globus collections; returns the finished task's summary."""
    return run_transfer(source_endpoint, destination_endpoint, items, label=label,
                        sync_level=sync_level, verify_checksum=verify_checksum, client=client,
                        submission_key=submission_key, poll_interval_s=poll_interval_s,
                        timeout_s=timeout_s)
