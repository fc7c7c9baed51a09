"""Outcomes only for real exposures: an outcome must join something the selector served.

An outcome counts when it names a `request_id` the selector served (and, if it names a flag,
of that flag), or, without a request id, a user the selector exposed in the outcome's flag
within the last `window` seconds. Anything else is refused (422) before it is stored, so users
and requests made up by a caller never reach a report. The check looks at this process's own
recent exposures first (no I/O), then at the store; exposures another worker served a moment
ago may still be on their way to the store, so the store is asked again for up to `grace`
seconds before an outcome is refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import sqlalchemy as sa

from service.errors import StoreUnavailable, UnknownExposure
from service.store.events import Outcome, exposures
from service.store.writer import RecentExposures

CHUNK = 500


class OutcomeCheck:
    """Finds the outcomes that join no exposure; `clock`/`pause` injectable for tests."""

    def __init__(
        self,
        engine: sa.Engine,
        recent: RecentExposures,
        window: float,
        grace: float = 2.0,
        clock: Callable[[], float] = time.time,
        pause: Callable[[float], None] = time.sleep,
    ) -> None:
        self.engine, self.recent, self.window = engine, recent, window
        self.grace, self.clock, self.pause = grace, clock, pause

    def require_exposed(self, outcomes: Sequence[Outcome]) -> None:
        """Raise UnknownExposure naming the first outcome that joins no exposure."""
        waiting = [i for i, o in enumerate(outcomes) if not self._served_here(o)]
        deadline = self.clock() + self.grace
        while waiting:
            waiting = self._not_in_store(outcomes, waiting)
            if not waiting or self.clock() >= deadline:
                break
            self.pause(0.1)  # another worker's exposure may be a batch away from the store
        if waiting:
            first = outcomes[waiting[0]]
            what = (
                f"request_id '{first.request_id}'"
                if first.request_id
                else f"user '{first.user_id}' in flag '{first.flag}' within the last "
                f"{self.window / 3600:g} hours"
            )
            more = f" (and {len(waiting) - 1} more)" if len(waiting) > 1 else ""
            raise UnknownExposure(
                f"outcomes[{waiting[0]}]{more} joins no exposure: the selector served no "
                f"{what}; nothing was recorded"
            )

    def _served_here(self, outcome: Outcome) -> bool:
        if outcome.request_id:
            flag = self.recent.flag_of(outcome.request_id)
            return flag is not None and outcome.flag in (None, flag)
        served = self.recent.exposed_at(outcome.flag, outcome.user_id)
        return served is not None and served >= self.clock() - self.window

    def _not_in_store(self, outcomes: Sequence[Outcome], indexes: list[int]) -> list[int]:
        by_request = [i for i in indexes if outcomes[i].request_id]
        by_user = [i for i in indexes if not outcomes[i].request_id]
        try:
            requests = self._requests_served({outcomes[i].request_id for i in by_request})
            users = self._users_exposed({outcomes[i].user_id for i in by_user})
        except sa.exc.SQLAlchemyError as exc:
            raise StoreUnavailable(
                "the event store cannot be read to check these outcomes against their "
                "exposures; nothing was recorded, retry later"
            ) from exc
        missing = []
        for i in indexes:
            o = outcomes[i]
            if o.request_id:
                flag = requests.get(o.request_id)
                if flag is None or (o.flag is not None and o.flag != flag):
                    missing.append(i)
            elif (o.flag, o.user_id) not in users:
                missing.append(i)
        return missing

    def _requests_served(self, ids: set[str | None]) -> dict[str, str]:
        found: dict[str, str] = {}
        for chunk in _chunks(sorted(i for i in ids if i)):
            query = sa.select(exposures.c.request_id, exposures.c.flag).where(
                exposures.c.request_id.in_(chunk), exposures.c.shadow.is_(False)
            )
            with self.engine.connect() as conn:
                found.update({row.request_id: row.flag for row in conn.execute(query)})
        return found

    def _users_exposed(self, users: set[str | None]) -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        since = self.clock() - self.window
        for chunk in _chunks(sorted(u for u in users if u)):
            query = (
                sa.select(exposures.c.flag, exposures.c.user_id)
                .where(exposures.c.user_id.in_(chunk), exposures.c.ts >= since)
                .where(exposures.c.shadow.is_(False))
                .distinct()
            )
            with self.engine.connect() as conn:
                found.update((row.flag, row.user_id) for row in conn.execute(query))
        return found


def _chunks(items: list[str]) -> list[list[str]]:
    return [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]
