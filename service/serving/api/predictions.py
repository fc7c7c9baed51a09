"""POST /v1/models/<flag>/predict and GET /v1/models/<flag>/resolve."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from service.errors import BadRequest
from service.serving import context as unleash_context
from service.serving.api import authorize, json_body, request_id, selector

bp = Blueprint("models", __name__, url_prefix="/v1/models")


@bp.post("/<flag>/predict")
def predict(flag: str) -> Any:
    authorize("predict")
    body = json_body()
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object with 'context' and 'inputs'")
    if "context" not in body:
        raise BadRequest('\'context\' is required (an Unleash context, e.g. {"userId": "u1"})')
    if "inputs" not in body:
        raise BadRequest("'inputs' is required (the model's input records)")
    context = unleash_context.from_json(body["context"])
    result = selector().predict(flag, context, body["inputs"], request_id())
    return {
        "request_id": result.request_id,
        **result.decision.as_dict(),
        "fallback": result.fallback,
        "prediction": result.body,
        "latency_ms": round(result.latency_ms, 3),
    }


@bp.get("/<flag>/resolve")
def resolve(flag: str) -> Any:
    # Tells which arm a user is in: keyed like predict when ROLLOUT_REQUIRE_KEYS=predict.
    authorize("predict")
    decision = selector().resolve(flag, unleash_context.from_query(request.args))
    return decision.as_dict()
