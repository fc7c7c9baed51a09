"""Post-rollout validation's rule and decision: keep, investigate, rollback, or hold.

How a bento does on live traffic, against its previous version and its model card's offline
metrics, with drift and shadow agreement (`analysis.validation_evidence`); everything ends in
the same `decision.json` shape as the A/B report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from statistics import NormalDist
from typing import Any

from service.analysis.decision import Check, Decision, missing_inputs_check
from service.analysis.drift import DriftResult
from service.analysis.model_quality import CALIBRATION_BINS, Performance
from service.analysis.queries import Window
from service.analysis.validation_evidence import ValidationEvidence, ValidationPolicy

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
    """Live AUC far below the model card's; informational (no finding) when the labels are
    affected by the model's own actions and the previous version was compared like with like."""
    if card_is_informational(ev, policy):
        return []
    found: list[Finding] = []
    for where, live, offline in _vs_card(ev, policy):
        if live.auc is not None and offline.get("auc") is not None:
            drop = float(offline["auc"]) - live.auc
            if drop > policy.auc_drop_vs_offline:
                hint = (
                    " (labels are affected by the model's own offers: pass the previous version "
                    "to compare like with like)"
                    if policy.labels_affected_by_treatment
                    else ""
                )
                found.append(
                    (
                        "investigate",
                        f"{where}: live AUC {live.auc:.3f} is {drop:.3f} "
                        f"below the model card's {offline['auc']:.3f}{hint}",
                    )
                )
    return found


def same_window_comparison(ev: ValidationEvidence, policy: ValidationPolicy) -> bool:
    """Whether the previous version was scored in the same window with enough labels."""
    prev = ev.previous_live
    return prev is not None and prev.auc is not None and prev.rows >= policy.min_labelled


def card_is_informational(ev: ValidationEvidence, policy: ValidationPolicy) -> bool:
    """The offline card cannot judge live labels the model's own actions changed, when the
    like-with-like comparison (the previous version, same window) is there to judge instead."""
    return policy.labels_affected_by_treatment and same_window_comparison(ev, policy)


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
    """Miscalibration only when the data show it beyond their noise (one-sided, at alpha):
    the ECE of a few hundred rows is inflated by chance, so a point estimate over a threshold
    is not evidence."""
    live = ev.live
    if not live or live.calibration_rows < policy.min_labelled:
        return []
    z = NormalDist().inv_cdf(1 - policy.alpha)
    prev = ev.previous_live
    if card_is_informational(ev, policy) and prev is not None:
        # Both versions' errors are over requests no offer touched (scored below the action
        # threshold); the rest of the live labels still differ from the card's training
        # labels, so the previous version in the same window is the comparison.
        worse = live.calibration_error - prev.calibration_error
        noise = math.hypot(live.calibration_error_se, prev.calibration_error_se)
        if worse <= policy.calibration_margin or worse - z * noise <= 0:
            return []
        return [
            (
                "investigate",
                f"miscalibrated: expected calibration error {live.calibration_error:.3f}, "
                f"worse than the previous version's {prev.calibration_error:.3f} by "
                f"{worse:.3f} (> {policy.calibration_margin}, standard error {noise:.3f})",
            )
        ]
    if live.calibration_error - z * live.calibration_error_se <= policy.max_calibration_error:
        return []
    return [
        (
            "investigate",
            f"miscalibrated: expected calibration error {live.calibration_error:.3f} "
            f"(standard error {live.calibration_error_se:.3f}) > {policy.max_calibration_error}",
        )
    ]


def _calibrated_where(threshold: float | None) -> str:
    if threshold is None:
        return ""
    return f", on requests scored below {threshold:g} (no offer changed their outcome)"


def drift_counts(d: DriftResult, policy: ValidationPolicy) -> bool:
    """Significant drift that may trigger a finding: the PSI band, a significant two-sample
    test at alpha, and enough live values for the PSI to mean something."""
    return (
        d.band == "significant"
        and d.p_value < policy.alpha
        and d.live_size >= policy.min_drift_sample
    )


def _drift(ev: ValidationEvidence, policy: ValidationPolicy) -> list[Finding]:
    return [
        (
            "investigate",
            f"drift in {d.feature}: PSI {d.psi:.2f} ({d.band}), "
            f"{d.test_method} p = {d.p_value:.2g} on {d.live_size:,} live values",
        )
        for d in ev.drift
        if drift_counts(d, policy)
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
    checks += [_drift_check(d, policy) for d in ev.drift]
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
                # The card is the offline truth of unaffected labels; live labels follow the
                # model's offers, so with a same-window previous version it only informs.
                "offline_comparison": (
                    "informational" if card_is_informational(ev, policy) else "judged"
                ),
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
            f"expected calibration error, {CALIBRATION_BINS} bins"
            + _calibrated_where(live.calibrated_below),
            live.calibration_error,
            not _calibration(ev, policy),  # the same rule that may call it miscalibrated
            {
                "standard_error": live.calibration_error_se,
                "brier": live.brier,
                "offline_brier": offline.get("brier"),
                "previous": prev.calibration_error if prev else None,
                "previous_standard_error": prev.calibration_error_se if prev else None,
                "scored_below": live.calibrated_below,
                "rows": live.calibration_rows,
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


def _drift_check(d: DriftResult, policy: ValidationPolicy) -> Check:
    return Check(
        f"drift_{d.feature}",
        f"population stability index; {d.test_method}",
        d.psi,
        d.statistic,
        d.p_value,
        None,
        not drift_counts(d, policy),
        {
            "band": d.band,
            "reference_size": d.reference_size,
            "live_size": d.live_size,
            "min_live_size": policy.min_drift_sample,
            "counts": d.live_size >= policy.min_drift_sample,
        },
        estimand=f"PSI of {d.feature}, live vs training",
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
    """The decision, then one short line per reason (a Markdown list, not a run-on sentence)."""
    why = "\n".join(f"- {reason[0].upper()}{reason[1:]}" for reason in reasons if reason)
    return f"**{recommendation.upper()}** for `{ev.bento}`. Why:\n\n{why}"
