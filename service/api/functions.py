"""Functions: register (deduplicated by content), get, list, share, delete."""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Depends

from funcx_flows import serialize
from funcx_flows.errors import InvalidRequest, PayloadTooLarge, SerializationError
from funcx_flows.service.api.deps import Parts, current_user, parts_dep
from funcx_flows.service.api.fields import Id
from funcx_flows.service.api.models import (
    Deleted,
    FunctionCreated,
    FunctionIn,
    FunctionInfo,
    FunctionList,
    Sharing,
    decode_b64,
)
from funcx_flows.service.store import User

router = APIRouter(tags=["functions"])
UserDep = Annotated[User, Depends(current_user)]
PartsDep = Annotated[Parts, Depends(parts_dep)]


@router.post("/functions", response_model=FunctionCreated)
def register_function(body: FunctionIn, user: UserDep, p: PartsDep) -> FunctionCreated:
    data = decode_b64(body.function, "function")
    if len(data) > p.settings.max_payload_bytes:
        raise PayloadTooLarge(
            f"function is {len(data)} bytes; the limit is {p.settings.max_payload_bytes}",
            limit="max_payload_bytes")
    try:
        serialize.envelope_info(data)  # checks the header only; never unpickles
    except SerializationError as exc:
        raise InvalidRequest(f"function is not a funcx-flows envelope: {exc}") from None
    function_id, created = p.store.register_function(user, body.name, body.description, data,
                                                     body.memoize)
    return FunctionCreated(function_id=function_id, created=created)


@router.get("/functions", response_model=FunctionList)
def list_functions(user: UserDep, p: PartsDep, shared: bool = False) -> FunctionList:
    """Your functions; with ``shared=true`` also those shared with you or everyone."""
    return FunctionList(functions=[FunctionInfo(**f)
                                   for f in p.store.list_functions(user, shared)])


@router.get("/functions/{function_id}", response_model=FunctionInfo)
def get_function(function_id: Id, user: UserDep, p: PartsDep) -> FunctionInfo:
    row = p.store.get_function(user, function_id)
    body = base64.b64encode(row.pop("body")).decode("ascii")
    row.pop("owner_id", None)
    return FunctionInfo(**row, function=body)


@router.get("/functions/{function_id}/sharing", response_model=Sharing)
def get_function_sharing(function_id: Id, user: UserDep, p: PartsDep) -> Sharing:
    return Sharing(**p.store.get_sharing(user, "function", function_id))


@router.put("/functions/{function_id}/sharing", response_model=Sharing)
def set_function_sharing(function_id: Id, body: Sharing, user: UserDep, p: PartsDep
                         ) -> Sharing:
    """Replace whom the function is shared with (owner only)."""
    return Sharing(**p.store.set_sharing(user, "function", function_id, public=body.public,
                                         user_names=body.users, groups=body.groups))


@router.delete("/functions/{function_id}", response_model=Deleted)
def delete_function(function_id: Id, user: UserDep, p: PartsDep) -> Deleted:
    p.store.delete_function(user, function_id)
    return Deleted(deleted=function_id)
