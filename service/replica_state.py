"""What replicas of the service share beyond tasks, in the database: where each
endpoint is linked and the status it last reported (any replica answers for any
endpoint), and the per-user request buckets (the rate limit counted once for all
replicas, not once per process)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from funcx_flows.errors import RateLimited
from funcx_flows.service.db import endpoint_links, rate_buckets, replicas

BURST_S = 5.0  # a bucket holds this many seconds' worth of requests


class ReplicaState:
    def __init__(self, engine: Engine, replica: str) -> None:
        self.engine = engine
        self.replica = replica

    # ------------------------------------------------------------ replicas --

    def alive(self, within_s: float) -> int:
        """Say this replica lives; how many others said so within ``within_s``."""
        now = time.time()
        stmt = pg_insert(replicas).values(name=self.replica, seen_at=now)
        with self.engine.begin() as conn:
            conn.execute(stmt.on_conflict_do_update(index_elements=[replicas.c.name],
                                                    set_={"seen_at": now}))
            conn.execute(delete(replicas).where(replicas.c.seen_at < now - 3600))
            return int(conn.execute(select(func.count()).select_from(replicas).where(
                replicas.c.name != self.replica,
                replicas.c.seen_at > now - within_s)).scalar_one())

    # ------------------------------------------------------ endpoint links --

    def record_link(self, endpoint_id: str, online: bool, info: dict[str, Any]) -> None:
        """This replica holds the endpoint's link (or held it: ``online`` False)."""
        row = {"endpoint_id": endpoint_id, "replica": self.replica, "online": online,
               "info": info, "updated_at": time.time()}
        stmt = pg_insert(endpoint_links).values(**row)
        with self.engine.begin() as conn:
            if online:
                conn.execute(stmt.on_conflict_do_update(
                    index_elements=[endpoint_links.c.endpoint_id],
                    set_={k: stmt.excluded[k] for k in row if k != "endpoint_id"}))
            else:  # only the replica that holds it says it went away
                conn.execute(update(endpoint_links).where(
                    endpoint_links.c.endpoint_id == endpoint_id,
                    endpoint_links.c.replica == self.replica).values(
                        online=False, info=info, updated_at=row["updated_at"]))

    def links_of(self, endpoint_ids: Sequence[str], fresh_s: float) -> dict[str, dict[str, Any]]:
        """The status a replica recorded for each of the endpoints (one query), for
        those online there with a record younger than ``fresh_s`` (a replica that
        died holding one leaves a record that goes stale)."""
        if not endpoint_ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(select(endpoint_links).where(
                endpoint_links.c.endpoint_id.in_(list(endpoint_ids)))).mappings().all()
        now, out = time.time(), {}
        for row in rows:
            if not row["online"] or now - row["updated_at"] > fresh_s:
                continue
            info = row["info"]
            found: dict[str, Any] = json.loads(info) if isinstance(info, str) else dict(info)
            found["replica"] = row["replica"]
            out[str(row["endpoint_id"])] = found
        return out

    def forget_links(self) -> None:
        """At this replica's stop: the links it held are gone, and so is it."""
        with self.engine.begin() as conn:
            conn.execute(delete(endpoint_links).where(
                endpoint_links.c.replica == self.replica))
            conn.execute(delete(replicas).where(replicas.c.name == self.replica))

    # ------------------------------------------------------- rate limiting --

    def take_request(self, user_id: str, rate: float) -> None:
        """One request from the user's bucket (``rate`` per second, bursts of
        BURST_S seconds' worth), in one statement; RateLimited when it is empty."""
        now = time.time()
        burst = rate * BURST_S
        stmt = pg_insert(rate_buckets).values(user_id=user_id, tokens=burst - 1, at=now)
        refill = rate_buckets.c.tokens + (now - rate_buckets.c.at) * rate
        with self.engine.begin() as conn:
            # the bucket refilled since its last use, capped at the burst; a request
            # is taken only when one is there (else the bucket keeps its level)
            tokens = conn.execute(stmt.on_conflict_do_update(
                index_elements=[rate_buckets.c.user_id],
                set_={"tokens": func.least(refill, burst) - 1, "at": now},
                where=refill >= 1).returning(rate_buckets.c.tokens)).scalar()
            if tokens is None:
                level = conn.execute(select(refill).where(
                    rate_buckets.c.user_id == user_id)).scalar() or 0.0
                raise RateLimited(
                    f"limit of {rate:g} requests per second per user exceeded",
                    limit="rate_limit_per_s",
                    retry_after_s=round(max(0.0, 1 - float(level)) / rate, 3))

