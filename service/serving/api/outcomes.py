"""POST /v1/outcomes: one outcome, a list, or {"outcomes": [...]}; all or nothing.

Needs an API key of scope `outcomes` once any key exists; every outcome must join an exposure
the selector served (service.serving.outcome_check), or none is recorded.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, current_app

from service.errors import BadRequest
from service.serving.api import authorize, json_body, selector
from service.serving.limits import MAX_OUTCOMES, OUTCOME_LENGTHS, check_length, finite_number
from service.serving.outcome_check import OutcomeCheck
from service.store.events import Outcome

bp = Blueprint("outcomes", __name__, url_prefix="/v1")

# Outcomes may arrive late, but not from the future (a clock a little ahead is fine).
MAX_CLOCK_SKEW = 86_400.0


@bp.post("/outcomes")
def record() -> Any:
    authorize("outcomes")
    body = json_body()
    items = body.get("outcomes") if isinstance(body, dict) and "outcomes" in body else body
    items = [items] if isinstance(items, dict) else items
    if not isinstance(items, list) or not items:
        raise BadRequest('send an outcome object, a non-empty array, or {"outcomes": [...]}')
    if len(items) > MAX_OUTCOMES:
        raise BadRequest(f"at most {MAX_OUTCOMES} outcomes per request, got {len(items)}")
    # Validate everything before recording anything, so a bad item loses nothing half-way.
    now = time.time()
    outcomes = [parse(item, f"outcomes[{i}]", now) for i, item in enumerate(items)]
    check: OutcomeCheck = current_app.extensions["outcome_check"]
    check.require_exposed(outcomes)
    selector().record_outcomes(outcomes)
    return {"accepted": len(outcomes)}, 202


def parse(item: Any, where: str, now: float) -> Outcome:
    if not isinstance(item, dict):
        raise BadRequest(f"{where} must be an object")
    metric = item.get("metric")
    if not isinstance(metric, str) or not metric:
        raise BadRequest(f"{where}.metric is required (a non-empty string, e.g. 'retained')")
    if "value" not in item or not isinstance(item["value"], int | float):
        raise BadRequest(f"{where}.value is required (a number; true/false count as 1/0)")
    value = finite_number(item["value"], f"{where}.value")
    ids = {key: item.get(key) for key in ("request_id", "user_id", "flag")}
    for key, given in {**ids, "metric": metric}.items():
        limit = OUTCOME_LENGTHS[key]
        if given is not None and not isinstance(given, str):
            raise BadRequest(f"{where}.{key} must be a string of at most {limit} characters")
        if given is not None:
            check_length(given, limit, f"{where}.{key}")
    if not ids["request_id"] and not (ids["user_id"] and ids["flag"]):
        raise BadRequest(
            f"{where} needs request_id, or user_id and flag, to join it to an exposure"
        )
    ts = finite_number(item.get("ts", now), f"{where}.ts")
    if not 0 <= ts <= now + MAX_CLOCK_SKEW:
        raise BadRequest(f"{where}.ts must be epoch seconds, not in the future")
    return Outcome(
        metric=metric,
        value=value,
        ts=ts,
        request_id=ids["request_id"],
        user_id=ids["user_id"],
        flag=ids["flag"],
    )
