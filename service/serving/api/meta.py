"""GET /metrics (Prometheus text format) and GET /openapi.json (the whole API)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from service.serving import openapi
from service.serving.api import authorize, selector
from service.serving.metrics import exposition

bp = Blueprint("meta", __name__)


@bp.get("/metrics")
def metrics() -> Any:
    authorize("metrics")  # open unless ROLLOUT_PROTECT_METRICS is set
    current = selector()
    current.refresh_gauges()
    body, content_type = exposition(current.metrics)
    return Response(body, content_type=content_type)


@bp.get("/openapi.json")
def openapi_document() -> Any:
    current = selector()
    return openapi.document(sorted(current.flags.flags()), current.contracts)
