"""Post-rollout validation: how a bento does on live traffic, against its previous version and
its model card's offline metrics, with drift and shadow agreement.

The model predicts churn; the label of a served request is `1 - retained` (the outcome metric).
Performance needs each request's score and label, so live rows are read (capped at `max_rows`,
the most recent first) rather than aggregated; latency and error rates are aggregated in SQL.
Everything ends in the same `decision.json` shape as the A/B report, with `keep`,
`investigate`, `rollback` or (inputs missing) `hold`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from service.analysis.decision import Check, Decision, missing_inputs_check
from service.analysis.drift import DriftResult, categorical_drift, numeric_drift
from service.analysis.queries import Window
from service.registry.bentos import stored_bento
from service.registry.population import (
    CATEGORICAL_FEATURES,
    FEATURES,
    NUMERIC_FEATURES,
    training_data,
)
from service.store.events import exposures, outcomes

DEFAULT_MAX_ROWS = 200_000
CALIBRATION_BINS = 10


@dataclass(frozen=True)
class ValidationPolicy:
    """Thresholds of the keep / investigate / rollback rule."""

    max_error_rate: float = 0.05  # above this: roll back
    auc_drop_vs_previous: float = 0.02  # significant AUC drop beyond this: roll back
    auc_drop_vs_offline: float = 0.05  # live AUC this far below the card's: investigate
    max_calibration_error: float = 0.05  # expected calibration error above this: investigate
    min_shadow_agreement: float = 0.9  # share of requests on the same side of 0.5
    min_labelled: int = 200  # fewer labelled requests: performance is not judged
    alpha: float = 0.05


@dataclass(frozen=True)
class Performance:
    """Classification quality on labelled requests (label 1 = churned)."""

    rows: int
    churn_rate: float
    accuracy: float
    auc: float | None
    auc_standard_error: float | None  # Hanley & McNeil (1982)
    brier: float
    calibration_error: float  # expected calibration error over CALIBRATION_BINS equal bins
    calibration: list[tuple[float, float, int]]  # (mean score, observed churn rate, rows)


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


@dataclass(frozen=True)
class ShadowAgreement:
    """Live vs shadow predictions on the same requests."""

    shadow_bento: str
    requests: int
    failed: int
    agreement: float | None  # same side of 0.5
    mean_abs_difference: float | None


@dataclass(frozen=True)
class ValidationEvidence:
    """Everything the validation rule looks at."""

    bento: str
    previous: str | None
    live: Performance | None
    previous_live: Performance | None
    offline: dict[str, Any]  # the model card's metrics: overall, by_segment, by_region
    by_group: dict[str, dict[str, Performance]]  # "segment"/"region" -> value -> performance
    serving: Serving
    drift: list[DriftResult]
    shadows: list[ShadowAgreement]
    missing: list[str] = field(default_factory=list)


# --- pure metrics -----------------------------------------------------------------------------


def performance(scores: np.ndarray, labels: np.ndarray) -> Performance | None:
    """Accuracy at 0.5, AUC with its Hanley-McNeil standard error, Brier score, calibration."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, int)
    if scores.size == 0:
        return None
    auc = roc_auc(scores, labels)
    positives = int(labels.sum())
    curve = calibration_curve(scores, labels)
    ece = sum(n * abs(mean - observed) for mean, observed, n in curve) / scores.size
    return Performance(
        rows=int(scores.size),
        churn_rate=float(labels.mean()),
        accuracy=float(np.mean((scores >= 0.5) == (labels == 1))),
        auc=auc,
        auc_standard_error=(
            auc_standard_error(auc, positives, scores.size - positives) if auc else None
        ),
        brier=float(np.mean((scores - labels) ** 2)),
        calibration_error=float(ece),
        calibration=curve,
    )


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U / (n1 n0), ties counted half); None if one class."""
    positives = labels == 1
    n1, n0 = int(positives.sum()), int((~positives).sum())
    if n1 == 0 or n0 == 0:
        return None
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    u = ranks[positives].sum() - n1 * (n1 + 1) / 2
    return float(u / (n1 * n0))


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil (1982), Radiology 143:29-36, equation (2)."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = (
        auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2)
    ) / (positives * negatives)
    return math.sqrt(max(variance, 0.0))


def calibration_curve(
    scores: np.ndarray, labels: np.ndarray, bins: int = CALIBRATION_BINS
) -> list[tuple[float, float, int]]:
    """(mean score, observed rate, rows) per non-empty equal-width score bin."""
    index = np.minimum((scores * bins).astype(int), bins - 1)
    return [
        (
            float(scores[index == b].mean()),
            float(labels[index == b].mean()),
            int((index == b).sum()),
        )
        for b in range(bins)
        if (index == b).any()
    ]


def shadow_agreement(shadow_bento: str, frame: pd.DataFrame) -> ShadowAgreement:
    """`frame`: one row per request with `live` and `shadow` scores and the shadow `status`."""
    ok = frame[(frame["status"] < 500) & frame["shadow"].notna() & frame["live"].notna()]
    same = (ok["live"] >= 0.5) == (ok["shadow"] >= 0.5)
    return ShadowAgreement(
        shadow_bento,
        len(frame),
        int((frame["status"] >= 500).sum()),
        float(same.mean()) if len(ok) else None,
        float((ok["live"] - ok["shadow"]).abs().mean()) if len(ok) else None,
    )


def feature_drift(reference: pd.DataFrame, live: pd.DataFrame) -> list[DriftResult]:
    """PSI plus KS (numeric) or chi-square (categorical) for each model input and the score."""
    results = []
    for name in (*NUMERIC_FEATURES, "score"):
        if name in reference and name in live and live[name].notna().any():
            results.append(numeric_drift(name, reference[name].tolist(), live[name].tolist()))
    for name in CATEGORICAL_FEATURES:
        if name in reference and name in live and live[name].notna().any():
            results.append(
                categorical_drift(name, reference[name].tolist(), live[name].dropna().tolist())
            )
    return results


# --- reading the event store ------------------------------------------------------------------


def live_rows(
    engine: sa.Engine,
    *,
    flag: str,
    bento: str,
    window: Window,
    metric: str = "retained",
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


# --- the reference: the model card and the training data --------------------------------------


@dataclass(frozen=True)
class ModelCard:
    """What the validation compares a bento against: its offline metrics and training data."""

    bento: str
    offline: dict[str, Any]
    reference: pd.DataFrame  # training features plus the model's `score` on them
    problems: list[str]


def model_card(bento: str, settings: Any, max_rows: int = 20_000) -> ModelCard:
    """Offline metrics from the BentoML model's metadata and the training reference, rebuilt
    deterministically from its training seed and rows (scores from the saved pipeline)."""
    try:
        stored = stored_bento(bento, settings)
    except Exception as exc:  # unknown or unbuilt bento: validate without a reference
        return ModelCard(bento, {}, pd.DataFrame(), [f"model card of {bento}: {exc}"])
    meta = stored.model_metadata
    training = meta.get("training") or {}
    reference = training_data(
        min(int(training.get("rows", max_rows)), max_rows), int(training.get("seed", 0))
    )[list(FEATURES)]
    problems: list[str] = []
    try:
        reference = reference.assign(score=_scores(stored.model_path, reference))
    except Exception as exc:  # a missing or unreadable model: drift of inputs only
        problems.append(f"training scores of {bento} unavailable ({exc})")
    return ModelCard(bento, dict(meta.get("metrics") or {}), reference, problems)


def _scores(model_path: Path | None, frame: pd.DataFrame) -> np.ndarray:
    import joblib  # what bentoml.sklearn writes saved_model.pkl with

    if model_path is None:
        raise FileNotFoundError("the bento's model is not in the store")
    pipeline = joblib.load(model_path / "saved_model.pkl")
    return np.asarray(pipeline.predict_proba(frame)[:, 1], float)


# --- gathering and deciding -------------------------------------------------------------------


def gather(
    engine: sa.Engine,
    *,
    flag: str,
    bento: str,
    previous: str | None,
    window: Window,
    card: ModelCard,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> ValidationEvidence:
    """Read the store and compute every metric the validation rule needs."""
    query: dict[str, Any] = {"flag": flag, "window": window, "max_rows": max_rows}
    rows = live_rows(engine, bento=bento, **query)
    labelled = rows[rows["label"].notna()]
    missing = list(card.problems)
    if rows.empty:
        missing.append(f"no successful predictions of {bento} for flag '{flag}' in the window")
    elif labelled.empty:
        missing.append(f"no outcomes (labels) joined to the predictions of {bento}")
    previous_labelled = pd.DataFrame()
    if previous:
        prev = live_rows(engine, bento=previous, **query)
        previous_labelled = prev[prev["label"].notna()]
        if previous_labelled.empty:
            missing.append(f"no labelled predictions of the previous version {previous}")
    live = live_features(rows)
    return ValidationEvidence(
        bento=bento,
        previous=previous,
        live=_performance_of(labelled),
        previous_live=_performance_of(previous_labelled),
        offline=card.offline,
        by_group={g: _by(labelled, g) for g in ("segment", "region")},
        serving=serving_stats(engine, bento=bento, **query),
        drift=feature_drift(card.reference, live) if len(live) and len(card.reference) else [],
        shadows=[
            shadow_agreement(tag, frame)
            for tag, frame in shadow_rows(engine, bento=bento, **query).items()
        ],
        missing=missing,
    )


def _performance_of(rows: pd.DataFrame) -> Performance | None:
    if rows.empty:
        return None
    return performance(rows["prediction"].to_numpy(float), rows["label"].to_numpy(int))


def _by(rows: pd.DataFrame, group: str) -> dict[str, Performance]:
    found = {}
    for value, part in rows.groupby(group):
        result = _performance_of(part)
        if result is not None:
            found[str(value)] = result
    return found


Finding = tuple[str, str]  # (severity: "rollback" | "investigate", reason)


def findings(ev: ValidationEvidence, policy: ValidationPolicy) -> list[Finding]:
    """Every reason to roll back or investigate, in words."""
    found: list[Finding] = []
    for rule in VALIDATION_RULES:
        found.extend(rule(ev, policy))
    return found


def _errors(ev: ValidationEvidence, policy: ValidationPolicy) -> list[Finding]:
    rate = ev.serving.error_rate
    if rate is None or rate <= policy.max_error_rate:
        return []
    return [
        (
            "rollback",
            f"error rate {rate:.1%} of {ev.serving.requests:,} requests is above "
            f"{policy.max_error_rate:.0%}",
        )
    ]


def _auc_vs_previous(ev: ValidationEvidence, policy: ValidationPolicy) -> list[Finding]:
    z = _auc_drop_z(ev, policy)
    if z is None or z[1] >= policy.alpha or ev.live is None or ev.previous_live is None:
        return []
    drop, p = z
    return [
        (
            "rollback",
            f"AUC {ev.live.auc:.3f} is below the previous version's {ev.previous_live.auc:.3f} "
            f"by {drop:.3f} (one-sided p = {p:.2g})",
        )
    ]


def _auc_drop_z(ev: ValidationEvidence, policy: ValidationPolicy) -> tuple[float, float] | None:
    """(drop, one-sided p of drop > tolerance), comparing independent AUCs (Hanley-McNeil)."""
    live, prev = ev.live, ev.previous_live
    if not live or not prev or live.auc is None or prev.auc is None:
        return None
    if live.rows < policy.min_labelled or prev.rows < policy.min_labelled:
        return None
    se = math.hypot(live.auc_standard_error or 0.0, prev.auc_standard_error or 0.0)
    drop = prev.auc - live.auc
    if se == 0:
        return drop, 0.0 if drop > policy.auc_drop_vs_previous else 1.0
    from scipy.stats import norm

    return drop, float(norm.sf((drop - policy.auc_drop_vs_previous) / se))


def _auc_vs_offline(ev: ValidationEvidence, policy: ValidationPolicy) -> list[Finding]:
    found: list[Finding] = []
    for where, live, offline in _vs_card(ev, policy):
        if live.auc is not None and offline.get("auc") is not None:
            drop = float(offline["auc"]) - live.auc
            if drop > policy.auc_drop_vs_offline:
                found.append(
                    (
                        "investigate",
                        f"{where}: live AUC {live.auc:.3f} is {drop:.3f} "
                        f"below the model card's {offline['auc']:.3f}",
                    )
                )
    return found


def _vs_card(
    ev: ValidationEvidence, policy: ValidationPolicy
) -> list[tuple[str, Performance, dict[str, Any]]]:
    pairs = []
    if ev.live and ev.live.rows >= policy.min_labelled:
        pairs.append(("overall", ev.live, ev.offline.get("overall") or {}))
    for group, parts in ev.by_group.items():
        card = ev.offline.get(f"by_{group}") or {}
        pairs += [
            (f"{group} {value}", perf, card.get(value) or {})
            for value, perf in parts.items()
            if perf.rows >= policy.min_labelled
        ]
    return pairs


def _calibration(ev: ValidationEvidence, policy: ValidationPolicy) -> list[Finding]:
    live = ev.live
    if not live or live.rows < policy.min_labelled:
        return []
    if live.calibration_error <= policy.max_calibration_error:
        return []
    return [
        (
            "investigate",
            f"miscalibrated: expected calibration error "
            f"{live.calibration_error:.3f} > {policy.max_calibration_error}",
        )
    ]


def _drift(ev: ValidationEvidence, _policy: ValidationPolicy) -> list[Finding]:
    return [
        (
            "investigate",
            f"drift in {d.feature}: PSI {d.psi:.2f} ({d.band}), "
            f"{d.test_method} p = {d.p_value:.2g}",
        )
        for d in ev.drift
        if d.band == "significant"
    ]


def _shadows(ev: ValidationEvidence, policy: ValidationPolicy) -> list[Finding]:
    return [
        (
            "investigate",
            f"shadow {s.shadow_bento} agrees on {s.agreement:.1%} of "
            f"{s.requests:,} requests (< {policy.min_shadow_agreement:.0%})",
        )
        for s in ev.shadows
        if s.agreement is not None and s.agreement < policy.min_shadow_agreement
    ]


VALIDATION_RULES: tuple[Callable[[ValidationEvidence, ValidationPolicy], list[Finding]], ...] = (
    _errors,
    _auc_vs_previous,
    _auc_vs_offline,
    _calibration,
    _drift,
    _shadows,
)


def recommend(ev: ValidationEvidence, policy: ValidationPolicy) -> tuple[str, list[str]]:
    """`hold` if inputs are missing, `rollback` if any finding says so, then `investigate`,
    else `keep`."""
    found = findings(ev, policy)
    if ev.missing and (ev.live is None or ev.serving.requests == 0):
        return "hold", [f"missing: {m}" for m in ev.missing] + ["hold until the data is there"]
    for severity in ("rollback", "investigate"):
        reasons = [reason for level, reason in found if level == severity]
        if reasons:
            return severity, reasons
    return "keep", [_keep_words(ev)]


def _keep_words(ev: ValidationEvidence) -> str:
    live = ev.live
    auc = f"AUC {live.auc:.3f}" if live and live.auc is not None else "AUC n/a"
    rate = ev.serving.error_rate or 0.0
    return (
        f"{ev.bento} performs as expected: {auc}, error rate {rate:.2%}, "
        "no significant drift, no guardrail breached"
    )


# --- decision.json ----------------------------------------------------------------------------


def decide_validation(
    ev: ValidationEvidence,
    *,
    flag: str,
    window: Window,
    policy: ValidationPolicy | None = None,
    problems: Sequence[str] = (),
) -> Decision:
    """The validation's `decision.json` content, in the A/B report's shape (kind `validation`)."""
    policy = policy or ValidationPolicy()
    ev = ValidationEvidence(**{**ev.__dict__, "missing": [*problems, *ev.missing]})
    recommendation, reasons = recommend(ev, policy)
    if problems and recommendation == "keep":
        recommendation = "hold"
        reasons = [f"missing: {p}" for p in problems] + reasons
    checks = validation_checks(ev, policy)
    if ev.missing:
        checks.insert(
            0,
            missing_inputs_check(ev.missing),
        )
    return Decision(
        flag=flag,
        kind="validation",
        metric="churned (1 - retained)",
        window=window.to_dict(),
        arms=_arm_rows(ev),
        users_in_several_arms=0,
        alpha=policy.alpha,
        checks=checks,
        recommendation=recommendation,
        current_step=None,
        next_step=0 if recommendation == "rollback" else None,
        reasons=reasons,
        summary=_summary(ev, recommendation, reasons),
        generated_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        missing=list(ev.missing),
    )


def validation_checks(ev: ValidationEvidence, policy: ValidationPolicy) -> list[Check]:
    """Every number the rule looked at, one check each."""
    serving = ev.serving
    checks = [
        _check(
            "requests",
            "count of live exposures served by the bento",
            serving.requests,
            serving.requests > 0,
        ),
        _check(
            "error_rate",
            "share of requests with HTTP status >= 500",
            serving.error_rate,
            (serving.error_rate or 0.0) <= policy.max_error_rate,
            {"errors": serving.errors, "max": policy.max_error_rate},
        ),
        _check(
            "fallback_rate",
            "share of requests served by the fallback",
            serving.fallback_rate,
            True,
            {"fallbacks": serving.fallbacks},
        ),
        _check(
            "latency_ms",
            "latency percentiles of recent requests",
            serving.latency_p50,
            True,
            {"p50": serving.latency_p50, "p95": serving.latency_p95, "p99": serving.latency_p99},
        ),
    ]
    if ev.live is not None:
        checks += _performance_checks(ev, policy)
    checks += [_drift_check(d) for d in ev.drift]
    checks += [
        _check(
            f"shadow_{s.shadow_bento}",
            "share of requests where live and shadow agree on the 0.5 threshold",
            s.agreement,
            s.agreement is None or s.agreement >= policy.min_shadow_agreement,
            {
                "requests": s.requests,
                "failed": s.failed,
                "mean_abs_difference": s.mean_abs_difference,
            },
        )
        for s in ev.shadows
    ]
    return checks


def _performance_checks(ev: ValidationEvidence, policy: ValidationPolicy) -> list[Check]:
    live = ev.live
    assert live is not None
    offline = ev.offline.get("overall") or {}
    drop = _auc_drop_z(ev, policy)
    interval = (
        (live.auc - 1.96 * live.auc_standard_error, live.auc + 1.96 * live.auc_standard_error)
        if live.auc is not None and live.auc_standard_error is not None
        else None
    )
    prev = ev.previous_live
    checks = [
        Check(
            "auc",
            "ROC AUC (Mann-Whitney); Hanley-McNeil interval; one-sided z-test of a "
            f"drop > {policy.auc_drop_vs_previous} vs the previous version",
            live.auc,
            None,
            drop[1] if drop else None,
            interval,
            not any(f[0] == "rollback" for f in _auc_vs_previous(ev, policy))
            and not _auc_vs_offline(ev, policy),
            {
                "previous": prev.auc if prev else None,
                "offline": offline.get("auc"),
                "rows": live.rows,
            },
        ),
        _check(
            "accuracy",
            "share correct at threshold 0.5",
            live.accuracy,
            True,
            {"previous": prev.accuracy if prev else None, "offline": offline.get("accuracy")},
        ),
        _check(
            "calibration_error",
            f"expected calibration error, {CALIBRATION_BINS} bins",
            live.calibration_error,
            live.calibration_error <= policy.max_calibration_error,
            {
                "brier": live.brier,
                "offline_brier": offline.get("brier"),
                "previous": prev.calibration_error if prev else None,
            },
        ),
    ]
    for group, parts in ev.by_group.items():
        card = ev.offline.get(f"by_{group}") or {}
        for value, perf in parts.items():
            offline_auc = (card.get(value) or {}).get("auc")
            ok = (
                perf.auc is None
                or offline_auc is None
                or perf.rows < policy.min_labelled
                or (offline_auc - perf.auc <= policy.auc_drop_vs_offline)
            )
            checks.append(
                _check(
                    f"auc_{group}_{value}",
                    "ROC AUC within the group",
                    perf.auc,
                    ok,
                    {"offline": offline_auc, "rows": perf.rows, "accuracy": perf.accuracy},
                )
            )
    return checks


def _drift_check(d: DriftResult) -> Check:
    return Check(
        f"drift_{d.feature}",
        f"population stability index; {d.test_method}",
        d.psi,
        d.statistic,
        d.p_value,
        None,
        d.band != "significant",
        {"band": d.band, "reference_size": d.reference_size, "live_size": d.live_size},
    )


def _check(
    name: str,
    method: str,
    estimate: float | None,
    passed: bool,
    details: dict[str, Any] | None = None,
) -> Check:
    return Check(name, method, estimate, None, None, None, bool(passed), details or {})


def _arm_rows(ev: ValidationEvidence) -> list[dict[str, Any]]:
    rows = []
    for role, tag, perf in (
        ("live", ev.bento, ev.live),
        ("previous", ev.previous, ev.previous_live),
    ):
        if tag is not None:
            rows.append(
                {
                    "role": role,
                    "variant": tag,
                    "users": perf.rows if perf else 0,
                    "auc": perf.auc if perf else None,
                    "accuracy": perf.accuracy if perf else None,
                }
            )
    return rows


def _summary(ev: ValidationEvidence, recommendation: str, reasons: list[str]) -> str:
    why = "; ".join(reasons)
    return f"**{recommendation.upper()}** for `{ev.bento}`. Why: {why[0].upper()}{why[1:]}."
