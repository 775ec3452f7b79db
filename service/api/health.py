"""Health for operators and load balancers: no token needed.

``/health/live``: the process answers (restart it if not). ``/health/ready``: it can
serve, which means its database can be written (a one-row update in a
transaction); a proxy sends it no requests while that fails, and a 503
``storage_unavailable`` says why. ``/health`` stays as it was (live, and the
version) for clients that check a service before using it.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

from fastapi import APIRouter, Depends

from funcx_flows.service.api.deps import Parts, parts_dep
from funcx_flows.service.api.models import Health

router = APIRouter(tags=["health"])
PartsDep = Annotated[Parts, Depends(parts_dep)]


def _version() -> str:
    try:
        return version("funcx-flows")
    except PackageNotFoundError:
        return "unknown"


@router.get("/health", response_model=Health)
@router.get("/health/live", response_model=Health)
async def live() -> Health:
    return Health(status="ok", version=_version())


@router.get("/health/ready", response_model=Health,
            responses={503: {"description": "the database cannot be written"}})
async def ready(p: PartsDep) -> Health:
    await asyncio.to_thread(p.store.probe_write)  # a DBAPIError answers 503 (app.py)
    return Health(status="ready", version=_version())
