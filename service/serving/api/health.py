"""GET /healthz (the process is up) and GET /readyz (flags loaded, bentos known)."""

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
    state = selector().readiness()
    ready = state["flags_loaded"] and bool(state["bentos"])
    return {"status": "ready" if ready else "not_ready", **state}, 200 if ready else 503
