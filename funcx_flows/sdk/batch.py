"""A batch of calls built client-side, in our shape and in Globus Compute's.

``Batch.add`` takes a registered function's id (or, from a client's
``create_batch``, a function, which it registers), and checks the arguments as
Globus Compute's ``Batch.add`` does, so that a mistake is a TypeError showing the
call meant rather than an encoder's complaint from the wire.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from funcx_flows import serialize

if TYPE_CHECKING:
    from funcx_flows.sdk.client import Client


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str) -> bytes:
    return base64.b64decode(text)


def function_id_of(value: Any, what: str) -> str:
    """A registered function's id from a str or UUID; anything else is refused
    with the call that was meant (a non-callable is never registered)."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str):
        try:
            return str(uuid.UUID(value))
        except ValueError:
            pass
    raise TypeError(f"{what}: {type(value).__name__} {value!r} is not a function id "
                    f"(a UUID from register_function) nor a function")


def _call_args(args: Any, kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Globus Compute's checks of ``batch.add``'s arguments, with the call shown."""
    if args is None:
        args = ()
    if not isinstance(args, list | tuple):
        raise TypeError(f"args is the tuple of positional arguments, not "
                        f"{type(args).__name__}: batch.add(function_id, args=({args!r},))")
    if kwargs is None:
        kwargs = {}
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise TypeError("kwargs is a dict of keyword arguments with str keys: "
                        "batch.add(function_id, args=(...), kwargs={'name': value})")
    return tuple(args), dict(kwargs)


@dataclass
class Batch:
    """Tasks collected client-side and submitted in one request.

    ``endpoint_id`` may be left for ``batch_run(endpoint_id, batch)`` to give, as
    in Globus Compute."""

    endpoint_id: str | None = None
    group_id: str | None = None
    tasks: list[dict[str, Any]] = field(default_factory=list)
    resources: dict[str, Any] | None = None
    client: Client | None = field(default=None, repr=False, compare=False)

    def add(
        self,
        function_id: str | uuid.UUID | Callable[..., Any],
        args: Sequence[Any] | None = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        resources: Mapping[str, Any] | None = None,
    ) -> str:
        """Add one call of a registered function (or of a function, registered
        through the batch's client) and return its task id."""
        if callable(function_id) and not isinstance(function_id, str | uuid.UUID):
            if self.client is None:
                raise TypeError("batch.add takes a function id here: "
                                "batch.add(client.register_function(fn), args=(...))")
            function_id = self.client.register_function(function_id)
        fid = function_id_of(function_id, "batch.add")
        call_args, call_kwargs = _call_args(args, kwargs)
        task_id = str(uuid.uuid4())
        task: dict[str, Any] = {
            "task_id": task_id,
            "function_id": fid,
            "endpoint_id": self.endpoint_id,
            "payload": b64encode(serialize.pack_call(call_args, call_kwargs)),
        }
        if self.group_id:
            task["group_id"] = self.group_id
        res = resources or self.resources
        if res:
            task["resources"] = dict(res)
        self.tasks.append(task)
        return task_id
