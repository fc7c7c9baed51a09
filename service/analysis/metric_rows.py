"""The A/B report's results table as data: one row per metric, read from `decision.json`.

Every number a row shows is a number of the decision document (the primary metric's deciding
check, each goal metric's check, each guardrail's), so the page and the machine-readable
decision can never disagree. Each row keeps one unit per column: the arms' values and the
absolute change in the metric's own unit (%, ms, per user), the relative change in percent, and
the interval bar on an axis every row shares (the relative change).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WIN, LOSS, INCONCLUSIVE = "win", "loss", "inconclusive"
NON_INFERIOR, NOT_MEASURED = "non-inferior", "not measured"
# Units of the guardrails measured on the exposures (service.analysis.queries.GUARDRAIL_COLUMNS).
GUARDRAIL_UNITS = {"error_rate": "%", "fallback_rate": "%", "latency_ms": "ms"}


@dataclass(frozen=True)
class MetricRow:
    """One metric, as the results table shows it (values in the metric's own scale: a rate is
    0.3 for 30%; `unit` says how to print them)."""

    metric: str
    role: str  # primary | goal | guardrail
    unit: str  # "%" (a rate), "ms", "per user"
    control: float | None
    treatment: float | None
    change: float | None  # treatment - control, in the metric's scale
    change_interval: tuple[float, float] | None
    relative: float | None  # treatment / control - 1
    relative_interval: tuple[float, float] | None
    p_value: float | None  # the deciding p-value (corrected for goal metrics)
    chance_to_win: float | None  # Bayesian engine only
    risk: float | None  # Bayesian: expected loss of choosing the treatment (relative)
    verdict: str  # win | loss | inconclusive | non-inferior | not measured
    method: str  # for the footnote, never the cell
    check: str  # the decision.json check the numbers come from
    margin: float | None = None  # a guardrail's margin on the relative axis


def metric_rows(document: dict[str, Any]) -> list[MetricRow]:
    """Primary metric, goal metrics, guardrails: in that order, those the document has."""
    checks = {c["name"]: c for c in document.get("checks", [])}
    rows = []
    primary = _primary(document, checks)
    if primary is not None:
        rows.append(primary)
    rows += [_goal(c, document["alpha"]) for name, c in checks.items() if name.startswith("goal_")]
    rows += [_guardrail(c) for name, c in checks.items() if name.startswith("guardrail_")]
    return rows


def _primary(document: dict[str, Any], checks: dict[str, Any]) -> MetricRow | None:
    difference, lift = checks.get("difference"), checks.get("relative_lift")
    if difference is None:
        return None
    arms = {arm["role"]: arm for arm in document["arms"]}
    primary = document.get("primary") or {}
    decided = checks.get(primary.get("check") or "difference", difference)
    control, treatment = arms["control"]["rate"], arms["treatment"]["rate"]
    change, interval = decided["estimate"], _pair(decided["interval"])
    relative, rel_interval = (lift["estimate"], _pair(lift["interval"])) if lift else (None, None)
    chance = risk = None
    method = decided["method"]
    if decided["name"] == "cuped":
        relative = decided["details"]["relative_lift"]
        rel_interval = _pair(decided["details"]["relative_lift_interval"])
    elif decided["name"] in ("sequential", "group_sequential") and control:
        # The always-valid interval is on the difference; divided by control's rate it is
        # the relative change's, with control's rate taken as known.
        rel_interval = _scaled(interval, 1 / control)
        method += "; relative interval: the difference's divided by control's rate"
    elif decided["name"] == "bayesian":
        relative, rel_interval = decided["estimate"], _pair(decided["interval"])
        chance = decided["details"]["chance_to_win"]
        risk = decided["details"]["risk_treatment"]
        change, interval = difference["estimate"], _pair(difference["interval"])
        method += f"; absolute change: {difference['method']}"
    p_value = primary.get("p_value", decided["p_value"]) if chance is None else None
    verdict = _primary_verdict(primary, decided, chance, document["alpha"])
    return MetricRow(
        metric=document["metric"],
        role="primary",
        unit="%",
        control=control,
        treatment=treatment,
        change=change,
        change_interval=interval,
        relative=relative,
        relative_interval=rel_interval,
        p_value=p_value,
        chance_to_win=chance,
        risk=risk,
        verdict=verdict,
        method=method,
        check=decided["name"],
    )


def _primary_verdict(
    primary: dict[str, Any], decided: dict[str, Any], chance: float | None, alpha: float
) -> str:
    if chance is not None:
        if chance >= 1 - alpha / 2:
            return WIN
        return LOSS if chance <= alpha / 2 else INCONCLUSIVE
    significant = primary.get("significant")
    if significant is None:
        significant = decided["p_value"] is not None and decided["p_value"] < alpha
    if not significant:
        return INCONCLUSIVE
    higher_is_better = decided["details"].get("higher_is_better", True)
    return WIN if (decided["estimate"] > 0) == higher_is_better else LOSS


def _goal(check: dict[str, Any], alpha: float) -> MetricRow:
    details = check["details"]
    p = check["p_value"]
    verdict = INCONCLUSIVE
    if p is not None and p < alpha:
        verdict = WIN if check["passed"] else LOSS
    return MetricRow(
        metric=check["name"].removeprefix("goal_"),
        role="goal",
        unit="per user",
        control=details["control"],
        treatment=details["treatment"],
        change=check["estimate"],
        change_interval=_pair(check["interval"]),
        relative=details["relative_lift"],
        relative_interval=_pair(details["relative_lift_interval"]),
        p_value=p,
        chance_to_win=None,
        risk=None,
        verdict=verdict,
        method=f"{check['method']}; p-value corrected: {details['correction']}",
        check=check["name"],
    )


def _guardrail(check: dict[str, Any]) -> MetricRow:
    details, name = check["details"], check["name"].removeprefix("guardrail_")
    outcome = details["outcome"]
    verdict = {"non_inferior": NON_INFERIOR, "inferior": LOSS, "inconclusive": INCONCLUSIVE}
    control = details["control"]
    margin = details["margin"]
    if not details["relative_margin"]:
        margin = margin / control if control else None
    return MetricRow(
        metric=name,
        role="guardrail",
        unit=GUARDRAIL_UNITS.get(name, ""),
        control=control,
        treatment=details["treatment"],
        change=check["estimate"],
        change_interval=_pair(check["interval"]),
        relative=details["relative_lift"],
        relative_interval=_pair(details.get("relative_lift_interval")),
        p_value=check["p_value"],
        chance_to_win=None,
        risk=None,
        verdict=verdict.get(outcome, NOT_MEASURED),
        method=check["method"]
        if outcome != "not_measured"
        else f"not measured: {details['missing']}",
        check=check["name"],
        margin=margin,
    )


def _pair(value: Any) -> tuple[float, float] | None:
    if not value or value[0] is None or value[1] is None:
        return None
    return (float(value[0]), float(value[1]))


def _scaled(pair: tuple[float, float] | None, factor: float) -> tuple[float, float] | None:
    return (pair[0] * factor, pair[1] * factor) if pair else None
