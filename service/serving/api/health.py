"""GET /healthz (the process is up) and GET /readyz (flags loaded, a bento answers, the store)."""

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
    # Known bentos are not enough: after `make demo` the catalog names bentos that are gone.
    answering = current.answering_bento() if state["flags_loaded"] else None
    ready = state["flags_loaded"] and answering is not None
    # A failing store does not stop serving (events go to the spill file), so by default it is
    # reported, not a 503: a balancer would otherwise take every replica out at once.
    store_failing = state["event_store"]["failing"]
    if store_failing and current.settings.ready_requires_store:
        ready = False
    status = "not_ready" if not ready else "degraded" if store_failing else "ready"
    return {"status": status, **state, "answering_bento": answering}, 200 if ready else 503
