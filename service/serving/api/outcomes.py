"""POST /v1/outcomes: one outcome, a list, or {"outcomes": [...]}; all or nothing."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint

from service.errors import BadRequest
from service.serving.api import json_body, selector
from service.store.events import Outcome

bp = Blueprint("outcomes", __name__, url_prefix="/v1")

MAX_BATCH = 10_000


@bp.post("/outcomes")
def record() -> Any:
    body = json_body()
    items = body.get("outcomes") if isinstance(body, dict) and "outcomes" in body else body
    items = [items] if isinstance(items, dict) else items
    if not isinstance(items, list) or not items:
        raise BadRequest('send an outcome object, a non-empty array, or {"outcomes": [...]}')
    if len(items) > MAX_BATCH:
        raise BadRequest(f"at most {MAX_BATCH} outcomes per request, got {len(items)}")
    # Validate everything before recording anything, so a bad item loses nothing half-way.
    outcomes = [parse(item, f"outcomes[{i}]") for i, item in enumerate(items)]
    selector().record_outcomes(outcomes)
    return {"accepted": len(outcomes)}, 202


def parse(item: Any, where: str) -> Outcome:
    if not isinstance(item, dict):
        raise BadRequest(f"{where} must be an object")
    metric, value = item.get("metric"), item.get("value")
    if not isinstance(metric, str) or not metric:
        raise BadRequest(f"{where}.metric is required (a non-empty string, e.g. 'retained')")
    if isinstance(value, bool):
        value = float(value)
    if not isinstance(value, int | float):
        raise BadRequest(f"{where}.value is required (a number; true/false count as 1/0)")
    ids = {key: item.get(key) for key in ("request_id", "user_id", "flag")}
    for key, given in ids.items():
        if given is not None and (not isinstance(given, str) or len(given) > 200):
            raise BadRequest(f"{where}.{key} must be a string of at most 200 characters")
    if not ids["request_id"] and not ids["user_id"]:
        raise BadRequest(f"{where} needs request_id or user_id to join it to an exposure")
    ts = item.get("ts", time.time())
    if not isinstance(ts, int | float) or isinstance(ts, bool):
        raise BadRequest(f"{where}.ts must be epoch seconds")
    return Outcome(metric=metric, value=float(value), ts=float(ts), **ids)
