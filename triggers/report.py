"""Status reports of a trigger process to the service's dashboard.

With ``report:`` in the trigger config, a thread of the trigger process sends,
every ``every_s``, what the state database says of each trigger (files seen and
waiting, runs by state, the age of the oldest queued run as its lag, its
current problem) through the SDK client to POST /v1/triggers/status. It reads
the state database only; a service that is away costs a warning (once per
distinct error), never the triggers' work.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

from funcx_flows.errors import FuncxFlowsError
from funcx_flows.sdk.client import Client
from funcx_flows.triggers.config import FileTriggerConfig, ReportConfig, TriggersFile
from funcx_flows.triggers.state import StateStore

log = logging.getLogger(__name__)


def snapshot(config: TriggersFile, store: StateStore, process: str,
             now: float | None = None) -> dict[str, Any]:
    """The report body: one entry per configured trigger."""
    at = time.time() if now is None else now
    counts, waiting = store.counts(), store.waiting_files()
    problems, backlog = store.marks("problem"), store.backlog()
    triggers = []
    for t in config.triggers:
        files, oldest_queued = backlog.get(t.name, (0, None))
        if isinstance(t, FileTriggerConfig):
            kind, watching = "files", list(t.paths)
        else:
            kind = "globus"
            watching = [f"globus:{t.destination_endpoint or 'transfers of this identity'}"]
        triggers.append({
            "name": t.name, "kind": kind, "watching": watching, "files_seen": files,
            "files_waiting": waiting.get(t.name, 0), "runs": counts.get(t.name, {}),
            "lag_s": None if oldest_queued is None else max(0.0, at - oldest_queued),
            "problem": problems.get(t.name, "")[:2000]})
    return {"process": process, "host": socket.gethostname(), "triggers": triggers}


class Reporter:
    """Sends ``snapshot`` now and every ``every_s`` until stopped (a context manager)."""

    def __init__(self, report: ReportConfig, config: TriggersFile, store: StateStore,
                 config_path: Path | None = None, client: Client | None = None) -> None:
        self.report = report
        self.config = config
        self.store = store
        self.process = report.process or (
            f"{socket.gethostname()}:{config_path.name if config_path else 'triggers'}")
        self.client = client or Client(report.service_url or None, report.token or None)
        self.sent = 0
        self._stop = threading.Event()
        self._last_error = ""
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name="funcx-trigger-report")

    def send_once(self) -> bool:
        try:
            self.client.report_trigger_status(snapshot(self.config, self.store, self.process))
        except FuncxFlowsError as exc:
            if str(exc) != self._last_error:  # said once, not every period
                log.warning("cannot report the triggers' status to the service: %s", exc)
            self._last_error = str(exc)
            return False
        if self._last_error:
            log.info("the triggers' status reaches the service again")
        self._last_error = ""
        self.sent += 1
        return True

    def _run(self) -> None:
        while True:
            self.send_once()
            if self._stop.wait(self.report.every_s):
                return

    def __enter__(self) -> Reporter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)
        self.client.close()
