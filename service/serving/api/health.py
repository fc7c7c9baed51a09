"""GET /healthz (the process is up) and GET /readyz (flags loaded, a bento answers)."""

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
    body = {"status": "ready" if ready else "not_ready", **state, "answering_bento": answering}
    return body, 200 if ready else 503
