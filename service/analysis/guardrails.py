"""Live guardrails: the canary against control, straight from the exposures table.

The guard reads these on every interval. Rates are aggregated in SQL; latencies and scores
are read for the window (capped at `max_rows` per arm, newest first) for the p99 and the PSI.
A rate guardrail breaches only when the canary is worse by more than its margin *and* the
difference is significant (one-sided Fisher exact test at the schedule's alpha: exact, since
early in a step the counts are small and a z-test would overstate the evidence), so a handful
of unlucky requests at a 5% step does not roll a good version back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa
from scipy import stats as scipy_stats

from service.analysis.drift import numeric_drift
from service.flags.model import Guardrails
from service.store.events import exposures

MAX_ROWS = 50_000


@dataclass(frozen=True)
class ArmTraffic:
    """One arm's live traffic in a window."""

    variant: str
    requests: int
    users: int
    errors: int  # HTTP status >= 500 returned to the caller
    fallbacks: int  # served by the default bento after the chosen one failed
    latency_p99_ms: float | None
    predictions: tuple[float, ...]

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def fallback_rate(self) -> float:
        return self.fallbacks / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class GuardrailCheck:
    """One guardrail's reading: canary vs control, its limit, and whether it breached."""

    name: str
    canary: float | None
    control: float | None
    limit: float
    breached: bool
    detail: str


def arm_traffic(
    engine: sa.Engine, flag: str, variant: str, since: float, max_rows: int = MAX_ROWS
) -> ArmTraffic:
    """The live (not shadow) traffic `variant` of `flag` served since `since` (epoch s)."""
    e = exposures.c
    where = sa.and_(e.flag == flag, e.variant == variant, e.ts >= since, ~e.shadow)
    totals = sa.select(
        sa.func.count(),
        sa.func.count(sa.distinct(e.user_id)),
        sa.func.sum(sa.case((e.status >= 500, 1), else_=0)),
        sa.func.sum(sa.case((e.fallback, 1), else_=0)),
    ).where(where)
    recent = (
        sa.select(e.latency_ms, e.prediction).where(where).order_by(e.ts.desc()).limit(max_rows)
    )
    with engine.connect() as conn:
        requests, users, errors, fallbacks = conn.execute(totals).one()
        rows = conn.execute(recent).all()
    latencies = [r.latency_ms for r in rows if r.latency_ms is not None]
    return ArmTraffic(
        variant,
        int(requests or 0),
        int(users or 0),
        int(errors or 0),
        int(fallbacks or 0),
        float(np.percentile(latencies, 99)) if latencies else None,
        tuple(float(r.prediction) for r in rows if r.prediction is not None),
    )


def check_guardrails(
    canary: ArmTraffic,
    control: ArmTraffic,
    limits: Guardrails,
    concurrent_control: ArmTraffic | None = None,
) -> list[GuardrailCheck]:
    """Every configured guardrail; none can breach before both arms have `min_requests`.

    Rates compare with `control` (since the rollout began); latency depends on the load of
    the moment, so it compares only with `concurrent_control` (control over the canary's own
    window) and is skipped when that has fewer than `min_requests` (at 100%, say).
    """
    if min(canary.requests, control.requests) < limits.min_requests:
        return []
    checks = []
    for name, margin in (
        ("error_rate", limits.error_rate),
        ("fallback_rate", limits.fallback_rate),
    ):
        if margin is not None:
            checks.append(_rate_check(name, canary, control, margin, limits.alpha))
    now = concurrent_control if concurrent_control is not None else control
    comparable = (
        now.requests >= limits.min_requests and canary.latency_p99_ms and now.latency_p99_ms
    )
    if comparable and limits.latency_p99_ratio is not None:
        checks.append(_latency_check(canary, now, limits.latency_p99_ratio))
    if limits.prediction_psi is not None and canary.predictions and control.predictions:
        psi = numeric_drift("prediction", control.predictions, canary.predictions).psi
        checks.append(
            GuardrailCheck(
                "prediction_psi",
                psi,
                0.0,
                limits.prediction_psi,
                psi > limits.prediction_psi,
                f"PSI of canary vs control scores {psi:.3f} (limit {limits.prediction_psi:g})",
            )
        )
    return checks


def _latency_check(canary: ArmTraffic, control: ArmTraffic, limit: float) -> GuardrailCheck:
    assert canary.latency_p99_ms and control.latency_p99_ms
    ratio = canary.latency_p99_ms / control.latency_p99_ms
    return GuardrailCheck(
        "latency_p99_ratio",
        canary.latency_p99_ms,
        control.latency_p99_ms,
        limit,
        ratio > limit,
        f"p99 {canary.latency_p99_ms:.1f} ms vs {control.latency_p99_ms:.1f} ms over the same "
        f"window (x{ratio:.2f}, limit x{limit:g})",
    )


def _rate_check(
    name: str, canary: ArmTraffic, control: ArmTraffic, margin: float, alpha: float
) -> GuardrailCheck:
    bad_canary, bad_control = getattr(canary, name), getattr(control, name)
    count = "errors" if name == "error_rate" else "fallbacks"
    p_value = worse_p_value(
        getattr(canary, count), canary.requests, getattr(control, count), control.requests
    )
    breached = bad_canary - bad_control > margin and p_value < alpha
    return GuardrailCheck(
        name,
        bad_canary,
        bad_control,
        margin,
        breached,
        f"{bad_canary:.2%} of {canary.requests} canary requests vs {bad_control:.2%} of "
        f"{control.requests} control (margin +{margin:.0%}, one-sided p = {p_value:.2g})",
    )


def worse_p_value(bad_a: int, n_a: int, bad_b: int, n_b: int) -> float:
    """One-sided p-value of "arm a's rate is above arm b's" (Fisher's exact test)."""
    table = [[bad_a, n_a - bad_a], [bad_b, n_b - bad_b]]
    return float(scipy_stats.fisher_exact(table, alternative="greater").pvalue)
