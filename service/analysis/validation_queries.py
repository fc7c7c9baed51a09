"""The event-store reads post-rollout validation needs: live rows, serving stats, shadows.

The model predicts churn; the label of a served request is `1 - retained` (the outcome metric).
Performance needs each request's score and label, so live rows are read (capped at `max_rows`,
the most recent first) rather than aggregated; latency and error rates are aggregated in SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from service.analysis.queries import Window
from service.store import PRIMARY_METRIC
from service.store.events import exposures, outcomes

DEFAULT_MAX_ROWS = 200_000


@dataclass(frozen=True)
class Serving:
    """Requests served by the bento and how they went."""

    requests: int
    errors: int
    fallbacks: int
    latency_p50: float | None
    latency_p95: float | None
    latency_p99: float | None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def fallback_rate(self) -> float | None:
        return self.fallbacks / self.requests if self.requests else None


# --- reading the event store ------------------------------------------------------------------


def live_rows(
    engine: sa.Engine,
    *,
    flag: str,
    bento: str,
    window: Window,
    metric: str = PRIMARY_METRIC,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> pd.DataFrame:
    """The most recent successful live predictions of `bento`, with `label` = 1 - metric value
    (by request id, else the user's outcome for the flag; NaN when unlabelled)."""
    e, o = exposures.c, outcomes.c
    by_request = (
        sa.select(o.request_id, sa.func.max(o.value).label("value"))
        .where(o.metric == metric, o.request_id.is_not(None))
        .group_by(o.request_id)
        .subquery("by_request")
    )
    by_user = (
        sa.select(o.user_id, sa.func.max(o.value).label("value"))
        .where(o.metric == metric, o.request_id.is_(None), o.flag == flag)
        .group_by(o.user_id)
        .subquery("by_user")
    )
    value = sa.func.coalesce(by_request.c.value, by_user.c.value)
    query = (
        sa.select(
            e.request_id,
            e.ts,
            e.region,
            e.segment,
            e.prediction,
            e.inputs,
            e.latency_ms,
            (1 - value).label("label"),
        )
        .select_from(
            exposures.outerjoin(by_request, by_request.c.request_id == e.request_id).outerjoin(
                by_user, by_user.c.user_id == e.user_id
            )
        )
        .where(*_served(flag, bento, window), e.status < 500, e.prediction.is_not(None))
        .order_by(e.ts.desc())
        .limit(max_rows)
    )
    with engine.connect() as conn:
        return pd.DataFrame(
            conn.execute(query).mappings().all(), columns=list(query.selected_columns.keys())
        )


def serving_stats(
    engine: sa.Engine, *, flag: str, bento: str, window: Window, max_rows: int = DEFAULT_MAX_ROWS
) -> Serving:
    """Requests, 5xx and fallbacks (in SQL), and latency percentiles of recent requests."""
    e = exposures.c
    counts = sa.select(
        sa.func.count(),
        sa.func.sum(sa.case((e.status >= 500, 1), else_=0)),
        sa.func.sum(sa.case((e.fallback, 1), else_=0)),
    ).where(*_served(flag, bento, window))
    latencies = (
        sa.select(e.latency_ms)
        .where(*_served(flag, bento, window), e.latency_ms.is_not(None))
        .order_by(e.ts.desc())
        .limit(max_rows)
    )
    with engine.connect() as conn:
        requests, errors, fallbacks = conn.execute(counts).one()
        values = np.array([row[0] for row in conn.execute(latencies)], float)
    pct = np.percentile(values, [50, 95, 99]).tolist() if values.size else [None] * 3
    return Serving(int(requests or 0), int(errors or 0), int(fallbacks or 0), *pct)


def shadow_rows(
    engine: sa.Engine, *, flag: str, bento: str, window: Window, max_rows: int = DEFAULT_MAX_ROWS
) -> dict[str, pd.DataFrame]:
    """Per shadow bento: live and shadow score and the shadow's status, per request."""
    live, shadow = exposures.alias("live"), exposures.alias("shadow")
    query = (
        sa.select(
            shadow.c.bento,
            live.c.prediction.label("live"),
            shadow.c.prediction.label("shadow"),
            shadow.c.status,
        )
        .select_from(live.join(shadow, shadow.c.request_id == live.c.request_id))
        .where(*_served(flag, bento, window, live.c), shadow.c.shadow)
        .order_by(live.c.ts.desc())
        .limit(max_rows)
    )
    with engine.connect() as conn:
        frame = pd.DataFrame(
            conn.execute(query).mappings().all(), columns=["bento", "live", "shadow", "status"]
        )
    return {str(tag): rows for tag, rows in frame.groupby("bento")}


def _served(flag: str, bento: str, window: Window, c: Any = exposures.c) -> list[Any]:
    conditions = [c.flag == flag, c.bento == bento, sa.not_(c.shadow)]
    if window.start is not None:
        conditions.append(c.ts >= window.start.timestamp())
    if window.end is not None:
        conditions.append(c.ts < window.end.timestamp())
    return conditions


def live_features(rows: pd.DataFrame) -> pd.DataFrame:
    """Model inputs as sent (the first record of each request) plus the score, for drift."""
    records = [
        r[0] if isinstance(r, list) and r else r if isinstance(r, dict) else {}
        for r in rows.get("inputs", pd.Series(dtype=object))
    ]
    frame = pd.DataFrame.from_records(records, index=rows.index) if records else pd.DataFrame()
    return frame.assign(score=rows["prediction"].astype(float)) if len(rows) else frame
