"""The endpoint's status, made in one place.

What an operator and the service see of an endpoint comes from three owners:
the interchange knows its managers, workers and queue (its ``status()``, once a
second) and keeps the endpoint's recent errors (the loop adds the scaler's and
the outbox's notes to them), the scaler knows the blocks (its report), the agent
knows its link and its outbox (the spool). ``StatusBuilder`` puts them together:
the ``EndpointStatus`` message the agent sends the service, and the
``status.json`` file beside it that ``funcx-endpoint status`` reads::

    interchange.status() --load--+
    scaler.report ------blocks---+--> EndpointStatus --> service (when the link is up)
    recent errors of all parts --+
    link, outbox, pid -----------+--> status.json (written atomically)
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

import msgspec

from funcx_flows import messages as m
from funcx_flows.endpoint.scaler import ScalerReport

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"


class StatusBuilder:
    def __init__(self, endpoint_id: str, folder: Path) -> None:
        self.endpoint_id = endpoint_id
        self.path = folder / STATUS_FILE

    @staticmethod
    def build(load: m.EndpointStatus, report: ScalerReport,
              recent_errors: Iterable[str]) -> m.EndpointStatus:
        """The endpoint's status from the interchange's (which it takes over), the
        scaler's report and the recent errors of all parts (the interchange's list,
        to which the loop adds the others')."""
        load.recent_errors = list(recent_errors)
        load.blocks = [m.BlockInfo(block_id=b.block_id, job_id=b.job_id, state=b.state,
                                   nodes=b.nodes, submitted_at=b.submitted_at,
                                   message=b.message)
                       for b in report.blocks]
        return load

    def document(self, status: m.EndpointStatus, *, link_up: bool, results_spooled: int,
                 spool_error: str) -> dict[str, object]:
        """What status.json holds: the status and what only this host knows."""
        data: dict[str, object] = msgspec.to_builtins(status)
        data.update(endpoint_id=self.endpoint_id, link_up=link_up,
                    results_spooled=results_spooled, updated_at=time.time(), pid=os.getpid())
        if spool_error:
            data["spool_error"] = spool_error
        return data

    def write(self, status: m.EndpointStatus, *, link_up: bool, results_spooled: int,
              spool_error: str) -> None:
        data = self.document(status, link_up=link_up, results_spooled=results_spooled,
                             spool_error=spool_error)
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(data))
            tmp.replace(self.path)
        except OSError as exc:  # a full or read-only disk must not stop the agent
            log.warning("cannot write %s: %s", self.path, exc)
