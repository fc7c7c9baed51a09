"""GET /healthz (the process is up) and GET /readyz (flags loaded, bentos known, the store)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from service.serving.api import selector

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> Any:
    current = selector()
    state = current.readiness()
    ready = state["flags_loaded"] and bool(state["bentos"])
    # A failing store does not stop serving (events go to the spill file), so by default it is
    # reported, not a 503: a balancer would otherwise take every replica out at once.
    store_failing = state["event_store"]["failing"]
    if store_failing and current.settings.ready_requires_store:
        ready = False
    status = "not_ready" if not ready else "degraded" if store_failing else "ready"
    return {"status": status, **state}, 200 if ready else 503
