"""API tokens of the caller: create (shown once), list, revoke."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends

from funcx_flows.service.api.deps import Parts, current_user, parts_dep
from funcx_flows.service.api.fields import Id
from funcx_flows.service.api.models import (
    Revoked,
    TokenCreated,
    TokenIn,
    TokenInfo,
    TokenList,
    WhoAmI,
)
from funcx_flows.service.store import User

router = APIRouter(tags=["identity"])
UserDep = Annotated[User, Depends(current_user)]
PartsDep = Annotated[Parts, Depends(parts_dep)]


@router.get("/whoami", response_model=WhoAmI)
async def whoami(user: UserDep) -> WhoAmI:
    return WhoAmI(user_id=user.user_id, name=user.name)


@router.post("/tokens", response_model=TokenCreated)
def create_token(body: TokenIn, user: UserDep, p: PartsDep) -> TokenCreated:
    token_id, token = p.store.create_token(user, body.name)
    return TokenCreated(token_id=token_id, token=token)


@router.get("/tokens", response_model=TokenList)
def list_tokens(user: UserDep, p: PartsDep) -> TokenList:
    return TokenList(tokens=[TokenInfo(**t) for t in p.store.list_tokens(user)])


@router.delete("/tokens/{token_id}", response_model=Revoked)
async def revoke_token(token_id: Id, user: UserDep, p: PartsDep) -> Revoked:
    """Revoke one of your tokens: refused on every request from now on, and the
    result streams open with it are closed (with the reason)."""
    digest = await asyncio.to_thread(p.store.revoke_token, token_id, user)
    p.hub.close_tokens({digest}, "the token was revoked")
    return Revoked(revoked=token_id)
