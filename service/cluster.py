"""Replicas of the service on one PostgreSQL (``settings.cluster``).

The database stays the source of truth; PostgreSQL's LISTEN/NOTIFY wakes the
replica that has something to do (the measurements that chose it are in
docs/deploy.md, "Replicas: the bus"). A notification is only a hint: every one a
replica could miss (its listening connection dropped, the sender died between its
commit and its NOTIFY) is made up by a sweep every SWEEP_S and by a full catch-up
each time the listening connection comes back.

    ff_tasks    <endpoint id>   tasks were stored waiting for that endpoint: the
                                replica that holds its link claims and sends them
    ff_results  ""              tasks finished: every replica reads the finished
                                rows after the last sequence number it published
                                and hands them to the result streams it holds
    ff_cancel   {"e", "t"}      the holder of endpoint e's link tells it to cancel t
    ff_forget   <endpoint id>   the endpoint was deleted: its holder ends the link

Results reach the streams in sequence order with no gap: finishing transactions
take their numbers on the counters row, which they hold to their commit, so the
rows read after a number form a prefix of what will ever be committed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Engine

from funcx_flows import messages as m
from funcx_flows.retry import Backoff, RetryPolicy
from funcx_flows.service.hub import Hub
from funcx_flows.service.replica_state import ReplicaState
from funcx_flows.service.store import Store

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

CHANNELS = ("ff_tasks", "ff_results", "ff_cancel", "ff_forget")
SWEEP_S = 1.0
ALIVE_S = 5 * SWEEP_S  # a replica not heard of for this long is gone
MAX_PAYLOAD = 7000  # PostgreSQL refuses NOTIFY payloads of 8000 bytes and more
RECONNECT = RetryPolicy(initial=0.1, max_delay=2.0)


def conninfo(engine: Engine) -> str:
    """A libpq connection string for the engine's database."""
    url = engine.url.set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class Bus:
    """LISTEN on one connection (a thread), NOTIFY from another (a thread fed by a
    queue: ``notify`` never blocks the caller). ``on_note(channel, payload)`` and
    ``on_connected()`` are called in the listening thread."""

    def __init__(self, dsn: str, on_note: Callable[[str, str], None],
                 on_connected: Callable[[], None]) -> None:
        self.dsn = dsn
        self.on_note = on_note
        self.on_connected = on_connected
        self._out: queue.SimpleQueue[tuple[str, str] | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._listen, name="bus-listen", daemon=True),
                         threading.Thread(target=self._send, name="bus-send", daemon=True)]
        self.connected = threading.Event()
        self._sender_pid = 0  # the sending connection's server process

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        self._out.put(None)
        for t in self._threads:
            t.join(timeout=5)

    def notify(self, channel: str, payload: str = "") -> None:
        self._out.put((channel, payload))

    def _listen(self) -> None:
        import psycopg  # (here: a service on SQLite never loads the driver, ~9 MB)

        backoff = Backoff(RECONNECT)
        while not self._stop.is_set():
            try:
                # keepalives: a connection that died silently (a host or network
                # lost) ends within ~11 s, and the catch-up follows
                with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5,
                                     keepalives_idle=5, keepalives_interval=2,
                                     keepalives_count=3) as conn:
                    for channel in CHANNELS:
                        conn.execute(f"LISTEN {channel}")
                    self.connected.set()
                    backoff.succeeded()
                    self.on_connected()  # what was missed while not listening
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            if note.pid != self._sender_pid:  # not its own
                                self.on_note(note.channel, note.payload)
            except psycopg.Error as exc:
                self.connected.clear()
                if self._stop.is_set():
                    return
                delay = backoff.failed()
                log.warning("bus: the listening connection failed (%s); again in %.1fs",
                            str(exc).strip() or type(exc).__name__, delay)
                self._stop.wait(delay)

    def _send(self) -> None:
        import psycopg

        conn: psycopg.Connection[Any] | None = None
        try:
            while True:
                first = self._out.get()
                if first is None:
                    return
                notes = {first}
                with contextlib.suppress(queue.Empty):
                    while len(notes) < 500:
                        item = self._out.get_nowait()
                        if item is None:
                            self._out.put(None)
                            break
                        notes.add(item)
                try:
                    if conn is None or conn.closed:
                        conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
                        # a notification need not be durable (it is a hint): its
                        # transaction does not wait for the WAL to reach the disk
                        conn.execute("SET synchronous_commit = off")
                        self._sender_pid = conn.info.backend_pid
                    with conn.transaction():
                        for channel, payload in notes:
                            conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))
                except psycopg.Error as exc:
                    # the sweeps make up for them: a notification is only a hint
                    log.warning("bus: %d notifications not sent (%s)", len(notes),
                                str(exc).strip() or type(exc).__name__)
                    if conn is not None:
                        conn.close()
                    conn = None
        finally:
            if conn is not None:
                conn.close()


def cancel_notes(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """ff_cancel payloads for finished rows: per endpoint, task ids in chunks that
    fit a notification."""
    by_endpoint: dict[str, list[str]] = {}
    for r in rows:
        by_endpoint.setdefault(str(r["endpoint_id"]), []).append(str(r["task_id"]))
    out = []
    per_note = (MAX_PAYLOAD - 64) // 40
    for eid, ids in by_endpoint.items():
        for i in range(0, len(ids), per_note):
            out.append(json.dumps({"e": eid, "t": ids[i:i + per_note]}))
    return out


class Waker:
    """An asyncio event set from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.event = asyncio.Event()

    def set(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
            self.loop.call_soon_threadsafe(self.event.set)


class Links(Protocol):
    """The links this replica holds (the dispatcher)."""

    def online_endpoints(self) -> set[str]: ...
    def send_tasks(self, endpoint_id: str, specs: list[m.TaskSpec]) -> None: ...
    def send_cancel(self, endpoint_id: str, task_ids: list[str]) -> None: ...
    def drop_link(self, endpoint_id: str) -> None: ...
    def link_records(self) -> list[tuple[str, bool, dict[str, Any]]]: ...


class Replicas:
    """One replica's part: wakes, claims, fan-out, link records. Lives on the
    service's event loop; ``links`` is the dispatcher (the links this replica holds)."""

    def __init__(self, store: Store, hub: Hub, links: Links, state: ReplicaState,
                 heartbeat_period_s: float, publishable: Callable[[list[dict[str, Any]]], Any]
                 ) -> None:
        self.store = store
        self.hub = hub
        self.links = links
        self.state = state
        self.heartbeat_period_s = heartbeat_period_s
        self.publishable = publishable
        self.bus = Bus(conninfo(store.engine), self._on_note, self._on_connected)
        self.cursor = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: Waker | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._claiming: dict[str, bool] = {}  # endpoint id -> claim again when done
        # rows this replica finished, in sequence order (appended from any thread)
        self._local: collections.deque[list[dict[str, Any]]] = collections.deque()
        self._read_due = True  # others may have finished rows: read the table
        self.others = 1  # how many other replicas live (said so within ALIVE_S)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = Waker(self._loop)
        self.others = await asyncio.to_thread(self.state.alive, ALIVE_S)
        self.cursor = await asyncio.to_thread(self.store.last_seq)
        # finished rows reach the streams by the fan-out below, whichever replica
        # finished them (this one included): one path, one order
        self.store.publish_with(self._finished)
        self.bus.start()
        self._tasks = [asyncio.create_task(self._fan_out(), name="replicas-fan-out"),
                       asyncio.create_task(self._sweep(), name="replicas-sweep")]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await asyncio.to_thread(self.bus.stop)
        with contextlib.suppress(Exception):  # the database may be away: records go stale
            await asyncio.to_thread(self.state.forget_links)

    # -------------------------------------------------------- from anywhere --

    def _finished(self, rows: list[dict[str, Any]]) -> None:
        """After a commit that finished tasks, in the committing thread (the store
        calls this in sequence order): the rows go to the fan-out as they are."""
        self._local.append(rows)
        self._notify("ff_results")
        if self._wake is not None:
            self._wake.set()

    def stored_waiting(self, endpoint_ids: Iterable[str]) -> None:
        for eid in endpoint_ids:
            self._notify("ff_tasks", eid)

    def cancelled(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for payload in cancel_notes(rows):
            self._notify("ff_cancel", payload)

    def forgotten(self, endpoint_id: str) -> None:
        self._notify("ff_forget", endpoint_id)

    def _notify(self, channel: str, payload: str = "") -> None:
        """Only while other replicas live: a notification costs a transaction
        (~150 us of service CPU per task with one per result batch, measured), and
        with none to hear it, nothing. A replica that starts says it lives before it
        serves; those that miss its first second's notifications meanwhile read
        what they missed at their next sweep."""
        if self.others:
            self.bus.notify(channel, payload)

    # ------------------------------------------------------ in the listener --

    def _on_note(self, channel: str, payload: str) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._handle, channel, payload)

    def _on_connected(self) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._catch_up)

    # ----------------------------------------------------------- on the loop --

    def _handle(self, channel: str, payload: str) -> None:
        if channel == "ff_results":
            assert self._wake is not None
            self._read_due = True
            self._wake.event.set()
        elif channel == "ff_tasks":
            if payload in self.links.online_endpoints():
                self._claim(payload)
        elif channel == "ff_cancel":
            try:
                note = json.loads(payload)
                eid, ids = str(note["e"]), [str(t) for t in note["t"]]
            except (ValueError, KeyError, TypeError):
                log.warning("bus: a cancel note that does not parse: %.80r", payload)
                return
            self.links.send_cancel(eid, ids)
        elif channel == "ff_forget":
            self.links.drop_link(payload)

    def _catch_up(self) -> None:
        """What notifications may have missed: finished rows, waiting tasks."""
        assert self._wake is not None
        self._read_due = True
        self._wake.event.set()
        for eid in self.links.online_endpoints():
            self._claim(eid)

    def _claim(self, endpoint_id: str) -> None:
        if endpoint_id in self._claiming:
            self._claiming[endpoint_id] = True  # once more when the running one ends
            return
        self._claiming[endpoint_id] = False
        task = asyncio.create_task(self._claim_loop(endpoint_id))
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    async def _claim_loop(self, endpoint_id: str) -> None:
        try:
            while True:
                specs = await asyncio.to_thread(self.store.claim_waiting, endpoint_id)
                if specs:
                    self.links.send_tasks(endpoint_id, specs)
                if not self._claiming.get(endpoint_id):
                    return
                self._claiming[endpoint_id] = False
        except Exception as exc:  # the database is away: the sweep claims them later
            log.warning("could not claim tasks for endpoint %s: %s", endpoint_id, exc)
        finally:
            self._claiming.pop(endpoint_id, None)

    async def _fan_out(self, page: int = 1000) -> None:
        """The one consumer of finished rows, so they go out in sequence order. Rows
        this replica finished go out as they are when nothing can be missing below
        them (they start right after the last number pushed); otherwise, and when
        another replica finished some, the table is read after that number."""
        assert self._wake is not None
        event = self._wake.event
        while True:
            await event.wait()
            event.clear()
            while self._local:
                rows = self._local.popleft()
                if int(rows[-1]["seq"]) <= self.cursor:
                    continue  # read from the table already
                if int(rows[0]["seq"]) != self.cursor + 1:
                    self._read_due = True  # a gap: another's rows, or unused numbers
                    break
                self.cursor = int(rows[-1]["seq"])
                self.hub.publish(self.publishable(rows))
            if not self._read_due:
                continue
            self._read_due = False
            try:
                if not self.hub.subscribers:
                    # no stream here: nothing to read, only where a stream opened from
                    # now on would start (it reads what came before by itself)
                    self.cursor = max(self.cursor, await asyncio.to_thread(self.store.last_seq))
                    continue
                while True:
                    rows = await asyncio.to_thread(self.store.finished_since, self.cursor, page)
                    if rows:
                        self.cursor = int(rows[-1]["seq"])
                        self.hub.publish(self.publishable(rows))
                    if len(rows) < page:
                        break
            except Exception as exc:  # the database is away: the sweep wakes us again
                self._read_due = True
                log.warning("could not read finished tasks: %s", exc)

    async def _sweep(self) -> None:
        """Every SWEEP_S: catch up, and record the links whose status changed (all of
        them every heartbeat period: their records' age says the holder lives)."""
        refreshed = 0.0
        recorded: dict[str, Any] = {}  # endpoint id -> what was recorded
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_S)
            self._catch_up()
            try:
                self.others = await asyncio.to_thread(self.state.alive, ALIVE_S)
            except Exception as exc:  # the database is away: notify meanwhile
                self.others = max(self.others, 1)
                log.warning("could not say this replica lives: %s", exc)
            everything = loop.time() - refreshed >= self.heartbeat_period_s
            if everything:
                refreshed = loop.time()
            for eid, online, info in self.links.link_records():
                if not everything and recorded.get(eid) == (online, info):
                    continue
                try:
                    await asyncio.to_thread(self.state.record_link, eid, online, info)
                except Exception as exc:
                    log.warning("could not record endpoint %s's link: %s", eid, exc)
                    break
                recorded[eid] = (online, info)
