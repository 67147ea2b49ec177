"""The delivery record of a sink other than MQTT (the webhook, issue 13 item 3): tables deliveries and
delivery_cursors of migration 0006, queried through the Store's engine.

A sink is done with an inspection once it has a deliveries row (sink, inspection_id): "delivered" (the endpoint
accepted it) or "refused" (it refused that message for good). What is left to send is the anti-join "rows of
this station, line and camera with id > floor and no deliveries row", read in id order. Because it is an anti-join
and not a "last id" cursor, a row that commits after a larger id was already delivered (several stations on one
PostgreSQL: ids are handed out at insert and committed a moment later, in any order) is still found, and sent.

The floor only keeps that scan short. It starts at the newest inspection id when the sink is first opened: rows
recorded before the sink was configured are never sent (a fresh MES gets no flood of historic verdicts; migration
0005 made the same choice for MQTT). advance() moves it up to the newest row delivered more than SETTLE_S ago,
never past a row still waiting: by then no smaller id can still be uncommitted (the committer's transactions last
milliseconds). One caveat, at the first open only: a row committed a moment after the floor was set but with a
smaller id (PostgreSQL, another station mid-commit) counts as historic.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from inspector.store import Delivery, DeliveryCursor, Inspection, Store

SETTLE_S = 300.0  # a row delivered this long ago: no smaller id of its station can still be uncommitted
OUTCOMES = ("delivered", "refused")
_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


@dataclass(frozen=True)
class Done:
    """What became of one inspection at a sink."""

    inspection_id: int
    outcome: str  # "delivered" or "refused"
    at: datetime
    status: int | None = None  # the HTTP status of a refusal
    detail: str | None = None  # the start of the endpoint's answer to a refusal


class DeliveryLog:
    """One sink's record for the rows of one station, line and camera."""

    def __init__(self, store: Store, sink: str, station: str, line: str, camera: str) -> None:
        """A log; open() it before the first read."""
        self.store = store
        self.sink = sink
        self.scope = (station, line, camera)
        self.floor = 0  # every row of the scope with id <= floor is done (or predates the sink)

    def _key(self) -> list[Any]:
        """The WHERE terms of this sink's cursor row."""
        station, line, camera = self.scope
        return [DeliveryCursor.sink == self.sink, DeliveryCursor.station == station, DeliveryCursor.line == line,
                DeliveryCursor.camera == camera]

    def _mine(self) -> list[Any]:
        """The WHERE terms of this scope's inspections that this sink is not done with, above the floor."""
        station, line, camera = self.scope
        done = exists().where(Delivery.sink == self.sink, Delivery.inspection_id == Inspection.id)
        return [Inspection.station == station, Inspection.line == line, Inspection.camera == camera,
                Inspection.id > self.floor, ~done]

    def open(self) -> int:
        """Read the floor, creating the cursor at the newest inspection id when this sink is new; returns it."""
        station, line, camera = self.scope
        now = datetime.now(timezone.utc)
        with self.store._guard("write to"), self.store._writer.begin() as conn:
            newest = conn.execute(select(func.coalesce(func.max(Inspection.id), 0))).scalar_one()
            stmt = _INSERTS[self.store.dialect](DeliveryCursor.__table__).values(
                sink=self.sink, station=station, line=line, camera=camera, floor_id=newest, created_at=now,
                updated_at=now).on_conflict_do_nothing()
            conn.execute(stmt)
            self.floor = int(conn.execute(select(DeliveryCursor.floor_id).where(*self._key())).scalar_one())
        return self.floor

    def pending(self, after_id: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """The oldest rows this sink is not done with, id > after_id (and > the floor), in id order, at most
        `limit`."""
        stmt = (select(Inspection).where(*self._mine(), Inspection.id > after_id).order_by(Inspection.id)
                .limit(limit))
        return self.store._rows(stmt)

    def count_pending(self) -> int:
        """How many rows this sink is not done with."""
        with self.store._guard("read"), self.store.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(Inspection).where(*self._mine())).scalar_one())

    def record(self, done: list[Done]) -> None:
        """Record outcomes in one write transaction (a row recorded before keeps its first outcome)."""
        if not done:
            return
        values = [{"sink": self.sink, "inspection_id": d.inspection_id, "outcome": d.outcome, "delivered_at": d.at,
                   "status": d.status, "detail": d.detail} for d in done]
        stmt = _INSERTS[self.store.dialect](Delivery.__table__).on_conflict_do_nothing()
        with self.store._guard("write to"), self.store._writer.begin() as conn:
            conn.execute(stmt, values)

    def advance(self, now: datetime | None = None) -> int:
        """Move the floor up to the newest row done more than SETTLE_S before `now`, but below every row still
        pending; returns the floor."""
        cutoff = (now or datetime.now(timezone.utc)) - timedelta(seconds=SETTLE_S)
        station, line, camera = self.scope
        settled = (select(func.max(Delivery.inspection_id)).join(Inspection, Inspection.id == Delivery.inspection_id)
                   .where(Delivery.sink == self.sink, Delivery.inspection_id > self.floor,
                          Delivery.delivered_at < cutoff, Inspection.station == station, Inspection.line == line,
                          Inspection.camera == camera))
        waiting = select(func.min(Inspection.id)).where(*self._mine())
        with self.store._guard("write to"), self.store._writer.begin() as conn:
            top = conn.execute(settled).scalar_one_or_none()
            if top is None:
                return self.floor
            oldest = conn.execute(waiting).scalar_one_or_none()
            floor = min(int(top), int(oldest) - 1) if oldest is not None else int(top)
            if floor > self.floor:
                conn.execute(update(DeliveryCursor).where(*self._key(), DeliveryCursor.floor_id < floor)
                             .values(floor_id=floor, updated_at=datetime.now(timezone.utc)))
                self.floor = floor
        return self.floor

    def outcomes(self) -> list[Done]:
        """Every outcome this sink recorded for the scope, in id order (for tests and diagnosis)."""
        station, line, camera = self.scope
        stmt = (select(Delivery).join(Inspection, Inspection.id == Delivery.inspection_id)
                .where(Delivery.sink == self.sink, Inspection.station == station, Inspection.line == line,
                       Inspection.camera == camera).order_by(Delivery.inspection_id))
        with self.store._guard("read"), self.store.engine.connect() as conn:
            return [Done(r.inspection_id, r.outcome, r.delivered_at, r.status, r.detail)
                    for r in conn.execute(stmt)]


__all__ = ["OUTCOMES", "SETTLE_S", "DeliveryLog", "Done"]
