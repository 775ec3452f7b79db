"""Endpoints: register (idempotent per name), get, list, status, share, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from funcx_flows.service.api.deps import Parts, current_user, parts_dep
from funcx_flows.service.api.fields import Id
from funcx_flows.service.api.models import (
    Deleted,
    EndpointCreated,
    EndpointIn,
    EndpointInfo,
    EndpointList,
    EndpointStatusOut,
    Sharing,
)
from funcx_flows.service.store import User

router = APIRouter(tags=["endpoints"])
UserDep = Annotated[User, Depends(current_user)]
PartsDep = Annotated[Parts, Depends(parts_dep)]


def _info(row: dict[str, Any], link: dict[str, Any]) -> dict[str, Any]:
    return {
        "endpoint_id": row["endpoint_id"], "name": row["name"], "state": link["state"],
        "created_at": row["created_at"],
        "last_seen": link.get("last_seen") or row.get("last_seen"),
        "metadata": row.get("metadata") or {}, "owned": row.get("owned", True),
    }


@router.post("/endpoints", response_model=EndpointCreated)
def register_endpoint(body: EndpointIn, user: UserDep, p: PartsDep) -> EndpointCreated:
    endpoint_id, created = p.store.register_endpoint(user, body.name, body.public_key,
                                                     body.metadata)
    p.dispatcher.set_endpoint_key(endpoint_id, body.public_key)
    return EndpointCreated(endpoint_id=endpoint_id, service_public_key=p.dispatcher.keys.public,
                           zmq_url=p.dispatcher.url, created=created,
                           link_token=p.store.new_link_token(endpoint_id))


@router.get("/endpoints", response_model=EndpointList)
def list_endpoints(user: UserDep, p: PartsDep, shared: bool = False) -> EndpointList:
    """Your endpoints; with ``shared=true`` also those shared with you or everyone."""
    rows = p.store.list_endpoints(user, shared)
    links = p.dispatcher.link_infos([r["endpoint_id"] for r in rows])  # one query for all
    return EndpointList(endpoints=[EndpointInfo(**_info(r, links[r["endpoint_id"]]))
                                   for r in rows])


@router.get("/endpoints/{endpoint_id}", response_model=EndpointInfo)
def get_endpoint(endpoint_id: Id, user: UserDep, p: PartsDep) -> EndpointInfo:
    row = p.store.get_endpoint(user, endpoint_id)
    return EndpointInfo(**_info(row, p.dispatcher.link_info(row["endpoint_id"])))


@router.get("/endpoints/{endpoint_id}/status", response_model=EndpointStatusOut)
def endpoint_status(endpoint_id: Id, user: UserDep, p: PartsDep) -> EndpointStatusOut:
    row = p.store.get_endpoint(user, endpoint_id)
    link = p.dispatcher.link_info(endpoint_id)
    info = _info(row, link)
    link = dict(link)
    depths = p.store.queue_depths(endpoint_id)
    link.update(info)
    link["tasks_waiting"] = depths.get("waiting_for_endpoint", 0)
    link["tasks_unfinished"] = sum(depths.values())
    return EndpointStatusOut(**link)


@router.get("/endpoints/{endpoint_id}/sharing", response_model=Sharing)
def get_endpoint_sharing(endpoint_id: Id, user: UserDep, p: PartsDep) -> Sharing:
    return Sharing(**p.store.get_sharing(user, "endpoint", endpoint_id))


@router.put("/endpoints/{endpoint_id}/sharing", response_model=Sharing)
def set_endpoint_sharing(endpoint_id: Id, body: Sharing, user: UserDep, p: PartsDep
                         ) -> Sharing:
    """Replace whom the endpoint is shared with (owner only); tasks that others send
    to it run under the endpoint owner's account."""
    return Sharing(**p.store.set_sharing(user, "endpoint", endpoint_id, public=body.public,
                                         user_names=body.users, groups=body.groups))


@router.delete("/endpoints/{endpoint_id}", response_model=Deleted)
def delete_endpoint(endpoint_id: Id, user: UserDep, p: PartsDep) -> Deleted:
    p.store.delete_endpoint(user, endpoint_id)  # its tasks' records: published by the store
    p.dispatcher.forget_endpoint(endpoint_id)
    return Deleted(deleted=endpoint_id)
