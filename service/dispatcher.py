"""The service's side of the endpoint links, whatever carries them.

Runs on the service's event loop. Two transports deliver endpoints' messages to
``receive``, each with the channel that answers that endpoint: the CurveZMQ
ROUTER (``zmqlink.py``) and the WebSocket on the HTTPS origin
(``api/link.py``). Routes (in worker threads) hand it work with the
``*_threadsafe`` methods. A bad message is logged and dropped, never fatal.

Each endpoint's messages come in order; its results are stored before they are
acknowledged (the agent keeps them spooled until then), and every message it is
sent goes over the channel its last message came by::

    endpoints' links                 Dispatcher (on the service's event loop)
    ----------------                 ----------------------------------------
    ZmqLinks (ROUTER, CurveZMQ) --+
                                  +--> receive(channel, msgs)
    WS /endpoints/{id}/link ------+      Hello ----------> Welcome, then Tasks (store.resend)
    (api/link.py)                        Results --------> store.complete (one transaction per
                                                           endpoint) --> hub --> result streams
                                                           ResultsAck within ACK_DELAY_S
                                         TaskStates -----> "running", written every 0.1 s
                                         EndpointStatus -> link.status (GET .../status)
    channel.send <-- Tasks, Cancel <---- routes (worker threads): *_threadsafe
                 <-- Tasks, Cancel, Bye  replicas (cluster.py): send_tasks, send_cancel, drop_link
                 <-- Heartbeat <-------- heartbeat loop: offline past the threshold

(One module past 400 lines: receiving, sending, acknowledging and the links'
timers all read and write the same ``Link`` records on one event loop.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.exc import DBAPIError

from funcx_flows import messages as m
from funcx_flows.errors import ProtocolError, StorageUnavailable
from funcx_flows.service.api.records import task_record
from funcx_flows.service.cluster import Replicas
from funcx_flows.service.hub import Hub, Outbox
from funcx_flows.service.replica_state import ReplicaState
from funcx_flows.service.settings import ServiceSettings
from funcx_flows.service.store import Store
from funcx_flows.service.zmqlink import ServiceKeys, ZmqLinks

log = logging.getLogger(__name__)

TASKS_PER_MESSAGE = 512
INLINE_RESULTS = 8


class Channel(Protocol):
    """How the dispatcher answers one endpoint: a transport's connection to it."""

    endpoint_id: str

    def send(self, frame: bytes) -> None: ...

    def close(self) -> None: ...


RUNNING_FLUSH_S = 0.1
# Results acks wait this long, and go out together: the agent needs one only to
# forget results from its spool, and each message costs both processes ~50-100 us
# of CPU (the receiver wakes at once). One task at a time, that was one of three
# messages per task; at ~1.4 ms a task, ten now share one ack.
ACK_DELAY_S = 0.02
ACK_MAX_IDS = 4096  # more than this waiting: they go out at once


@dataclass
class Link:
    """What the service knows about one connected endpoint."""

    endpoint_id: str
    online: bool = False
    last_seen: float = 0.0
    connected_at: float = 0.0
    hostname: str = ""
    python_version: str = ""
    agent_version: str = ""
    status: m.EndpointStatus | None = None
    channel: Channel | None = None  # where its last message came from


def publishable(rows: Iterable[Mapping[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(str(r["owner_id"]), task_record(r)) for r in rows]


class Dispatcher:
    def __init__(self, settings: ServiceSettings, store: Store, hub: Hub,
                 keys: ServiceKeys) -> None:
        self.settings = settings
        self.store = store
        self.hub = hub
        self._outbox = Outbox(hub, publishable)
        self.keys = keys
        self.links: dict[str, Link] = {}
        self.zmq = ZmqLinks(settings, keys, self)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._tasks: list[asyncio.Task[None]] = []
        # "running" states, written to the database in one transaction every
        # RUNNING_FLUSH_S; a task whose result comes first needs no such write
        self._running: dict[str, tuple[str, float]] = {}  # task id -> (endpoint, at)
        self._acks: dict[str, list[str]] = {}  # endpoint id -> task ids to acknowledge
        self.replicas: Replicas | None = None
        if settings.cluster:
            state = ReplicaState(store.engine, f"{socket.gethostname()}:{os.getpid()}")
            self.replicas = Replicas(store, hub, self, state, settings.heartbeat_period_s,
                                     publishable)

    # ---------------------------------------------------------- life cycle --

    async def start(self) -> str:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._outbox.bind(self._loop)
        if self.replicas is not None:
            await self.replicas.start()  # finished records: through the database
        else:
            # every finished task's record reaches the result streams through the outbox
            self.store.publish_with(self._outbox.put)
        for eid, key in (await asyncio.to_thread(self.store.endpoint_keys)).items():
            self.zmq.set_endpoint_key(eid, key)
        url: str = await self.zmq.start()
        self._tasks = [asyncio.create_task(self._heartbeat_loop(), name="dispatcher-heartbeat"),
                       asyncio.create_task(self._running_loop(), name="dispatcher-running")]
        return url

    @property
    def url(self) -> str:
        """Where endpoints that use ZeroMQ dial."""
        url: str = self.zmq.url
        return url

    async def stop(self) -> None:
        self.store.publish_with(None)
        if self.replicas is not None:
            await self.replicas.stop()
        await self.zmq.stop()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for endpoint_id in list(self._acks):
            self._flush_acks(endpoint_id)  # else resent to the next service, and dropped
        for link in self.links.values():
            if link.online:
                self._send(link.endpoint_id, m.Bye(reason="service stopping"))
            if link.channel is not None:
                link.channel.close()
        self.zmq.close()

    # ---------------------------------------------------------------- keys --

    def set_endpoint_key(self, endpoint_id: str, public_key: str) -> None:
        self.zmq.set_endpoint_key(endpoint_id, public_key)

    def forget_endpoint(self, endpoint_id: str) -> None:
        """Deleted: it is told so, and its link ends."""
        self.zmq.forget_endpoint(endpoint_id)
        self._call(self._forget_link, endpoint_id)
        if self.replicas is not None:
            self.replicas.forgotten(endpoint_id)

    def _forget_link(self, endpoint_id: str) -> None:
        link = self.links.pop(endpoint_id, None)
        if link is not None and link.channel is not None:
            log.info("endpoint %s was deleted: its link ends", endpoint_id)
            if link.online:
                link.channel.send(m.encode(m.Bye(reason="endpoint deleted")))
            link.channel.close()

    # ------------------------------------------------------- from threads --

    def _call(self, fn: Any, *args: Any) -> None:
        """Run ``fn`` on the event loop: at once when already there (an async route
        saves a loop wake-up per request), else at its next turn."""
        if self._loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def online_endpoints(self) -> set[str]:
        return {eid for eid, link in list(self.links.items()) if link.online}

    def send_tasks_threadsafe(self, to_send: Mapping[str, list[m.TaskSpec]]) -> None:
        for eid, specs in to_send.items():
            self._call(self._send_tasks, eid, specs)

    def cancel_threadsafe(self, rows: Iterable[Mapping[str, Any]]) -> None:
        by_endpoint: dict[str, list[str]] = {}
        for r in rows:
            by_endpoint.setdefault(str(r["endpoint_id"]), []).append(str(r["task_id"]))
        for eid, ids in by_endpoint.items():
            self._call(self._send, eid, m.Cancel(task_ids=ids))
        if self.replicas is not None:  # the replica that holds the link tells it
            here = self.online_endpoints()
            self.replicas.cancelled(r for r in rows if str(r["endpoint_id"]) not in here)

    def stored_waiting(self, endpoint_ids: Iterable[str]) -> None:
        """Tasks were stored for these endpoints, whose links are not held here."""
        if self.replicas is not None:
            self.replicas.stored_waiting(endpoint_ids)

    # ------------------------------------------------- for the replicas --

    def send_tasks(self, endpoint_id: str, specs: list[m.TaskSpec]) -> None:
        self._send_tasks(endpoint_id, specs)

    def send_cancel(self, endpoint_id: str, task_ids: list[str]) -> None:
        self._send(endpoint_id, m.Cancel(task_ids=task_ids))

    def drop_link(self, endpoint_id: str) -> None:
        self._forget_link(endpoint_id)

    def link_records(self) -> list[tuple[str, bool, dict[str, Any]]]:
        return [(eid, link.online, self._local_info(link))
                for eid, link in list(self.links.items())]

    def link_info(self, endpoint_id: str) -> dict[str, Any]:
        return self.link_infos([endpoint_id])[endpoint_id]

    def link_infos(self, endpoint_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Each endpoint's link and status as this replica knows it; with replicas,
        those not online here as the replica that holds them recorded it (from a
        worker thread: one query for them all, not one per endpoint)."""
        recorded: dict[str, dict[str, Any]] = {}
        if self.replicas is not None:
            away = [eid for eid in endpoint_ids
                    if (link := self.links.get(eid)) is None or not link.online]
            recorded = self.replicas.state.links_of(away, self.settings.heartbeat_threshold_s)
        out = {}
        for eid in endpoint_ids:
            found = recorded.get(eid)
            if found is None:
                link = self.links.get(eid)
                found = _offline() if link is None else self._local_info(link)
            out[eid] = found
        return out

    @staticmethod
    def _local_info(link: Link) -> dict[str, Any]:
        st = link.status or m.EndpointStatus()
        return {
            "state": "online" if link.online else "offline",
            "last_seen": link.last_seen, "connected_at": link.connected_at,
            "hostname": link.hostname, "python_version": link.python_version,
            "agent_version": link.agent_version,
            "workers_total": st.workers_total, "workers_busy": st.workers_busy,
            "tasks_queued": st.tasks_queued, "tasks_running": st.tasks_running,
            "managers": [_plain(x) for x in st.managers],
            "managers_total": st.managers_total,
            "blocks": [_plain(x) for x in st.blocks],
            "recent_errors": list(st.recent_errors),
        }

    # ------------------------------------------------------------- sending --

    def _send(self, endpoint_id: str, msg: m.Message) -> None:
        """To the endpoint over the channel its last message came by; nowhere when it
        has none (what it misses it is sent again when it next says Hello)."""
        link = self.links.get(endpoint_id)
        if link is not None and link.channel is not None:
            link.channel.send(m.encode(msg))

    def _send_tasks(self, endpoint_id: str, specs: list[m.TaskSpec]) -> None:
        for i in range(0, len(specs), TASKS_PER_MESSAGE):
            self._send(endpoint_id, m.Tasks(tasks=specs[i:i + TASKS_PER_MESSAGE]))

    # ------------------------------------------------------------ receiving --

    async def receive(self, messages: Sequence[tuple[Channel, m.Message]]) -> None:
        """Handle what a transport received, in order; the results of each endpoint
        among them merged into one transaction."""
        merged: dict[str, m.Results] = {}
        for channel, msg in messages:
            if isinstance(msg, m.Results):
                eid = channel.endpoint_id
                if eid in merged:
                    merged[eid].results.extend(msg.results)
                    continue
                merged[eid] = msg
        for channel, msg in messages:
            eid = channel.endpoint_id
            if isinstance(msg, m.Results) and merged.get(eid) is not msg:
                continue
            try:
                await self._handle(channel, msg)
            except ProtocolError as exc:
                log.warning("dropped a bad message: %s", exc)
            except DBAPIError as exc:
                # Not acknowledged: the agent keeps the results spooled and resends.
                log.error("database error on %s from endpoint %s (%s); will be resent",
                          type(msg).__name__, eid, str(exc.orig).strip())
            except StorageUnavailable as exc:  # a result's file could not be written
                log.error("storage error on %s from endpoint %s (%s); will be resent",
                          type(msg).__name__, eid, exc.message)
            except Exception:
                log.exception("error while handling an endpoint message")

    def detach(self, channel: Channel) -> None:
        """A channel closed (its WebSocket ended): its endpoint is offline now, unless
        it came back on another meanwhile."""
        link = self.links.get(channel.endpoint_id)
        if link is not None and link.channel is channel:
            link.channel = None
            if link.online:
                link.online = False
                log.info("endpoint %s disconnected", link.endpoint_id)

    async def _handle(self, channel: Channel, msg: m.Message) -> None:
        endpoint_id = channel.endpoint_id
        link = self.links.get(endpoint_id)
        if link is None:
            link = self.links[endpoint_id] = Link(endpoint_id)
        if link.channel is not channel:
            if link.channel is not None:  # the endpoint came back another way
                log.info("endpoint %s came back on a new link: the old one ends", endpoint_id)
                link.channel.close()
            link.channel = channel
        link.last_seen = time.time()
        if isinstance(msg, m.Hello):
            await self._on_hello(link, msg)
            return
        if not link.online and not isinstance(msg, m.Bye):
            # A link this service does not know as online (it restarted, or gave up on
            # the link): handle the message, and ask the agent to say Hello again, so
            # that it resends its spool and receives the tasks it lacks.
            self._send(endpoint_id, m.Bye(reason="say hello"))
        if isinstance(msg, m.Results):
            await self._on_results(endpoint_id, msg)
        elif isinstance(msg, m.TaskStates):
            for st in msg.states:
                if st.state == "running":
                    self._running[st.task_id] = (endpoint_id, st.at)
        elif isinstance(msg, m.EndpointStatus):
            link.status = msg
        elif isinstance(msg, m.Bye):
            link.online = False
            log.info("endpoint %s said goodbye: %s", endpoint_id, msg.reason)

    async def _on_hello(self, link: Link, msg: m.Hello) -> None:
        if msg.endpoint_id != link.endpoint_id:
            raise ProtocolError("Hello names another endpoint than its routing id")
        s = self.settings
        link.online = True
        link.connected_at = time.time()
        log.info("endpoint %s connected (%s, holding %d tasks)", link.endpoint_id,
                 msg.hostname, len(msg.held_task_ids))
        link.hostname, link.python_version = msg.hostname, msg.python_version
        link.agent_version = msg.agent_version
        self._send(link.endpoint_id, m.Welcome(
            heartbeat_period_s=s.heartbeat_period_s,
            heartbeat_threshold_s=s.heartbeat_threshold_s,
            max_result_bytes=s.max_result_bytes))
        specs = await asyncio.to_thread(self.store.resend, link.endpoint_id, msg.held_task_ids)
        if specs:
            log.info("re-sending %d tasks to endpoint %s", len(specs), link.endpoint_id)
            self._send_tasks(link.endpoint_id, specs)
        await asyncio.to_thread(self.store.touch_endpoint, link.endpoint_id)
        if self.replicas is not None:  # any replica answers for it from now on
            await asyncio.to_thread(self.replicas.state.record_link, link.endpoint_id, True,
                                    self._local_info(link))

    async def _on_results(self, endpoint_id: str, msg: m.Results) -> None:
        if self._running:
            for r in msg.results:
                self._running.pop(r.task_id, None)
        if len(msg.results) <= INLINE_RESULTS:
            # A small batch commits faster here than a hop to a worker thread and back.
            self.store.complete(endpoint_id, msg.results)
        else:
            await asyncio.to_thread(self.store.complete, endpoint_id, msg.results)
        self._outbox.drain()  # the store put the records there: to the streams now
        self._ack_later(endpoint_id, [r.task_id for r in msg.results])

    def _ack_later(self, endpoint_id: str, task_ids: list[str]) -> None:
        """Acknowledged within ACK_DELAY_S, with whatever else finished meanwhile.
        Always after the records went out (their streams write at the next turn)."""
        pending = self._acks.get(endpoint_id)
        if pending is None:
            self._acks[endpoint_id] = pending = []
            assert self._loop is not None
            self._loop.call_later(ACK_DELAY_S, self._flush_acks, endpoint_id)
        pending.extend(task_ids)
        if len(pending) >= ACK_MAX_IDS:
            self._flush_acks(endpoint_id)

    def _flush_acks(self, endpoint_id: str) -> None:
        task_ids = self._acks.pop(endpoint_id, None)
        if task_ids:
            self._send(endpoint_id, m.ResultsAck(task_ids=task_ids))

    async def _running_loop(self) -> None:
        """Write the "running" states gathered meanwhile, off the receive loop, in one
        transaction per endpoint (mark_running never overrides a terminal state)."""
        while True:
            await asyncio.sleep(RUNNING_FLUSH_S)
            if not self._running:
                continue
            taken, self._running = self._running, {}
            by_endpoint: dict[str, list[tuple[str, float]]] = {}
            for task_id, (endpoint_id, at) in taken.items():
                by_endpoint.setdefault(endpoint_id, []).append((task_id, at))
            for endpoint_id, states in by_endpoint.items():
                try:
                    await asyncio.to_thread(self.store.mark_running, endpoint_id, states)
                except Exception as exc:  # informational only: never stop the loop
                    log.warning("could not record %d running tasks: %s", len(states), exc)

    async def _heartbeat_loop(self) -> None:
        s = self.settings
        while True:
            await asyncio.sleep(s.heartbeat_period_s)
            now = time.time()
            for link in list(self.links.values()):
                if not link.online:
                    continue
                if now - link.last_seen > s.heartbeat_threshold_s:
                    link.online = False
                    log.warning("endpoint %s missed its heartbeats: offline", link.endpoint_id)
                    continue
                self._send(link.endpoint_id, m.Heartbeat(sent_at=now))


def _offline() -> dict[str, Any]:
    """An endpoint no replica holds a link to."""
    return {"state": "offline", "last_seen": None, "workers_total": 0, "workers_busy": 0,
            "tasks_queued": 0, "tasks_running": 0, "managers": [], "managers_total": 0,
            "blocks": [], "recent_errors": []}


def _plain(record: Any) -> dict[str, Any]:
    import msgspec

    out: dict[str, Any] = msgspec.to_builtins(record)
    return out
