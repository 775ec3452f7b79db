"""One client per candidate bus, as a service replica would use it (bench_bus.py).

Each class plays one role per instance: a publisher (``publish``) or a subscriber
(``receive``). All of them carry the same wake-up on one channel that every
subscriber gets (a fanout): PostgreSQL ``NOTIFY`` to ``LISTEN``ers, a Redis
pub/sub channel, a RabbitMQ fanout exchange with one exclusive, non-durable queue
per subscriber (no persistence, no publisher confirms: a wake-up, not a message
to keep). Per-user or per-endpoint routing is the same with more channel names or
routing keys.

A subscriber raises ``BusLost`` when its connection ends. redis-py's pub/sub
reconnects and resubscribes by itself when its retries succeed; the
subscriber here counts such silent reconnects (``reconnects``), because
whatever was published meanwhile is gone and the replica must catch up from
the tables either way.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

CHANNEL = "funcx_bus"

Sink = Callable[[bytes], None]


class BusLost(Exception):
    """The subscriber's connection to the bus ended."""


class PgBus:
    """LISTEN/NOTIFY on a dedicated autocommit connection (psycopg 3)."""

    def __init__(self, url: str, role: str, sync_commit: bool = True) -> None:
        import psycopg

        self._psycopg = psycopg
        self.reconnects = 0
        self.conn = psycopg.connect(url, autocommit=True, connect_timeout=2)
        if role == "sub":
            self.conn.execute(f"LISTEN {CHANNEL}")
        elif not sync_commit:
            # a NOTIFY of its own commits like any transaction; a wake-up need not wait
            # for the disk
            self.conn.execute("SET synchronous_commit = off")
        self._cur = self.conn.cursor()

    def publish(self, payload: bytes) -> None:
        try:
            self._cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload.decode()))
        except self._psycopg.OperationalError as exc:
            raise BusLost(str(exc)) from exc

    def receive(self, timeout: float, sink: Sink) -> None:
        try:
            for n in self.conn.notifies(timeout=timeout):
                sink(n.payload.encode())
        except self._psycopg.OperationalError as exc:
            raise BusLost(str(exc)) from exc

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


class RedisBus:
    """redis-py: PUBLISH, and a PubSub whose every reconnect is counted."""

    def __init__(self, url: str, role: str, sync_commit: bool = True) -> None:
        import redis
        from redis.client import PubSub

        self._redis = redis
        self.client = redis.Redis.from_url(url, socket_connect_timeout=2)
        self.receivers_zero = 0  # publishes that reached no subscriber
        self.reconnects = 0
        self.pubsub: Any = None
        if role == "sub":
            bus = self

            class CountingPubSub(PubSub):
                connects = 0

                def on_connect(self, connection: Any) -> None:
                    self.connects += 1
                    if self.connects > 1:
                        bus.reconnects += 1
                    super().on_connect(connection)

            self.pubsub = CountingPubSub(self.client.connection_pool,
                                         ignore_subscribe_messages=True)
            self.pubsub.subscribe(CHANNEL)
            self.pubsub.connects = 1  # the first connect happened before subscribing
            # wait for the subscription's confirmation, so the first publish reaches it
            deadline = time.monotonic() + 5
            while not self.pubsub.subscribed and time.monotonic() < deadline:
                self.pubsub.get_message(timeout=0.05)

    def publish(self, payload: bytes) -> None:
        try:
            if not self.client.publish(CHANNEL, payload):
                self.receivers_zero += 1
        except (self._redis.ConnectionError, self._redis.TimeoutError) as exc:
            raise BusLost(str(exc)) from exc

    def receive(self, timeout: float, sink: Sink) -> None:
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                msg = self.pubsub.get_message(timeout=max(left, 0.0))
                if msg is not None:
                    if msg["type"] == "message":
                        sink(msg["data"])
                elif left <= 0:
                    return
        except (self._redis.ConnectionError, self._redis.TimeoutError) as exc:
            raise BusLost(str(exc)) from exc

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.pubsub is not None:
                self.pubsub.close()
            self.client.close()


class RabbitBus:
    """pika's BlockingConnection: a fanout exchange, an exclusive queue per subscriber."""

    def __init__(self, url: str, role: str, sync_commit: bool = True) -> None:
        import pika

        self._pika = pika
        self.reconnects = 0
        params = pika.URLParameters(url)
        params.socket_timeout = 2
        params.blocked_connection_timeout = 10
        self.conn = pika.BlockingConnection(params)
        self.ch = self.conn.channel()
        self.ch.exchange_declare(CHANNEL, "fanout", durable=False)
        self._sink: Sink | None = None
        if role == "sub":
            q = self.ch.queue_declare("", exclusive=True, auto_delete=True).method.queue
            self.ch.queue_bind(q, CHANNEL)
            self.ch.basic_consume(q, self._on_message, auto_ack=True)

    def _on_message(self, _ch: Any, _method: Any, _props: Any, body: bytes) -> None:
        assert self._sink is not None
        self._sink(body)

    def publish(self, payload: bytes) -> None:
        try:
            self.ch.basic_publish(CHANNEL, "", payload)
        except self._pika.exceptions.AMQPError as exc:
            raise BusLost(repr(exc)) from exc

    def receive(self, timeout: float, sink: Sink) -> None:
        self._sink = sink
        try:
            self.conn.process_data_events(time_limit=timeout)
        except self._pika.exceptions.AMQPError as exc:
            raise BusLost(repr(exc)) from exc

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


class FloorBus:
    """The calibration relay's client (busengines.FloorRelay): newline-ended payloads."""

    def __init__(self, url: str, role: str, sync_commit: bool = True) -> None:
        import socket

        host, port = url.removeprefix("tcp://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=2)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(b"S" if role == "sub" else b"P")
        self.reconnects = 0
        self._buf = b""
        if role == "sub":
            time.sleep(0.05)  # the relay reads the role before the first payload

    def publish(self, payload: bytes) -> None:
        try:
            self.sock.sendall(payload + b"\n")
        except OSError as exc:
            raise BusLost(str(exc)) from exc

    def receive(self, timeout: float, sink: Sink) -> None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return
        except OSError as exc:
            raise BusLost(str(exc)) from exc
        if not data:
            raise BusLost("the relay closed the connection")
        *lines, self._buf = (self._buf + data).split(b"\n")
        for line in lines:
            sink(line)

    def close(self) -> None:
        self.sock.close()


Bus = PgBus | RedisBus | RabbitBus | FloorBus
CLIENTS: dict[str, type[Bus]] = {
    "postgres": PgBus, "redis": RedisBus, "rabbitmq": RabbitBus, "floor": FloorBus}


def connect(engine: str, url: str, role: str, sync_commit: bool = True) -> Bus:
    return CLIENTS[engine](url, role, sync_commit)
