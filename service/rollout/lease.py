"""One guard acts per flag: a lease row in the shared database, renewed while its holder lives.

Several guard processes may run for one flag (a rolling update, two pods by mistake). Each
tries to take the flag's row in `guard_leases`: it succeeds when the row is free, expired, or
already its own. The holder renews the row from a heartbeat thread every third of the lease
time, so a tick that runs long (an A/B report) never loses it; a holder that dies (kill -9, a
lost node) stops renewing, and the row expires one lease time after the last renewal. A standby
sleeps only until then, so it takes over within one interval of the leader's death.

Taking the row is one statement (INSERT ... ON CONFLICT DO UPDATE ... WHERE free or expired or
ours), atomic on PostgreSQL and SQLite alike: two guards can never both win. A guard checks
its lease right before each tick, and the lease time equals the guard interval, so a leader cut
off from the database stops acting within one interval too. Times are the guards' own clocks:
keep them in sync (NTP) to well under the interval.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from service.store.events import metadata

log = logging.getLogger(__name__)

guard_leases = sa.Table(
    "guard_leases",
    metadata,
    sa.Column("flag", sa.String(200), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("acquired_at", sa.Float, nullable=False),  # epoch seconds, when this holder took it
    sa.Column("expires_at", sa.Float, nullable=False),
)


def holder_id() -> str:
    """This process, recognisably: `host:pid:random` (a pod name is the host in Kubernetes)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class LeaseState:
    """Who holds a flag's lease and until when (None when nobody ever held it)."""

    flag: str
    holder: str | None
    acquired_at: float | None
    expires_at: float | None

    def describe(self, now: float) -> str:
        if self.holder is None or self.expires_at is None:
            return "nobody holds the lease"
        until = datetime.fromtimestamp(self.expires_at, UTC).isoformat(timespec="seconds")
        state = "until" if self.expires_at > now else "expired at"
        return f"{self.holder} holds the lease {state} {until}"


class FlagLease:
    """The lease of one flag for one guard process. `acquire()` before acting, `release()` at exit.

    Not a context of its own: the guard asks at every tick, and a lost lease (the database was
    unreachable for a lease time) simply makes this guard a standby until it can take it back.
    """

    def __init__(
        self,
        engine: sa.Engine,
        flag: str,
        seconds: float,
        *,
        holder: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine, self.flag, self.seconds = engine, flag, seconds
        self.holder, self.clock = holder or holder_id(), clock
        self._held = False
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        metadata.create_all(engine, tables=[guard_leases])

    @property
    def held(self) -> bool:
        return self._held

    def acquire(self) -> bool:
        """Take or renew the lease; True when this process holds it now."""
        now = self.clock()
        try:
            with self.engine.begin() as conn:
                conn.execute(self._take(now))
                row = conn.execute(
                    sa.select(guard_leases.c.holder).where(guard_leases.c.flag == self.flag)
                ).one()
        except sa.exc.DBAPIError:
            log.warning("lease of %s: the database is unreachable", self.flag, exc_info=True)
            row = None
        held = row is not None and row.holder == self.holder
        if held and not self._held:
            log.warning("guard %s: leader of %s", self.holder, self.flag)
        self._held = held
        if held:
            self._start_heartbeat()
        return held

    def _take(self, now: float) -> sa.Executable:
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        values = {
            "flag": self.flag,
            "holder": self.holder,
            "acquired_at": now,
            "expires_at": now + self.seconds,
        }
        statement = dialect.insert(guard_leases).values(**values)
        ours = guard_leases.c.holder == self.holder
        return statement.on_conflict_do_update(
            index_elements=[guard_leases.c.flag],
            set_={
                "holder": self.holder,
                "expires_at": now + self.seconds,
                # A renewal keeps when it was taken; a takeover starts a new tenure.
                "acquired_at": sa.case((ours, guard_leases.c.acquired_at), else_=now),
            },
            where=sa.or_(ours, guard_leases.c.expires_at < now),
        )

    def state(self) -> LeaseState:
        """The flag's lease row as it is now."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(guard_leases).where(guard_leases.c.flag == self.flag)
            ).one_or_none()
        if row is None:
            return LeaseState(self.flag, None, None, None)
        return LeaseState(self.flag, row.holder, row.acquired_at, row.expires_at)

    def describe(self) -> str:
        """For a standby's status: who leads and until when."""
        return "standby: " + self.state().describe(self.clock())

    def wait(self, interval: float) -> float:
        """How long a guard should sleep: its interval, or less when standing by, so that it
        looks again just after the leader's lease would run out."""
        if self._held:
            return interval
        expires = self.state().expires_at
        if expires is None:
            return interval
        return max(0.05, min(interval, expires - self.clock() + 0.05))

    def release(self) -> None:
        """Give the lease up now (a graceful stop): a standby need not wait for it to expire."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
        if not self._held:
            return
        self._held = False
        with self.engine.begin() as conn:
            conn.execute(
                guard_leases.update()
                .where(guard_leases.c.flag == self.flag, guard_leases.c.holder == self.holder)
                .values(expires_at=0.0)
            )

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None or not self._heartbeat.is_alive():
            self._stop.clear()
            self._heartbeat = threading.Thread(
                target=self._beat, name=f"lease-{self.flag}", daemon=True
            )
            self._heartbeat.start()

    def _beat(self) -> None:
        """Renew every third of the lease time while held; stop when the lease is lost."""
        while not self._stop.wait(self.seconds / 3):
            if not self.acquire():
                log.warning("guard %s: lost the lease of %s", self.holder, self.flag)
                return
