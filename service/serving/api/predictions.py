"""POST /v1/models/<flag>/predict and GET /v1/models/<flag>/resolve."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Blueprint, Response, request

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
    head = {
        "request_id": result.request_id,
        **result.decision.as_dict(),
        "fallback": result.fallback,
    }
    # The bento's reply goes out as the bytes it sent (parsed once, for the exposure's score),
    # spliced into our object: {...head, "prediction": <bento JSON>, "latency_ms": ...}.
    latency = orjson.dumps(round(result.latency_ms, 3))
    out = orjson.dumps(head)[:-1] + b',"prediction":' + result.body_json
    return Response(out + b',"latency_ms":' + latency + b"}\n", mimetype="application/json")


@bp.get("/<flag>/resolve")
def resolve(flag: str) -> Any:
    # Tells which arm a user is in: keyed like predict when ROLLOUT_REQUIRE_KEYS=predict.
    authorize("predict")
    decision = selector().resolve(flag, unleash_context.from_query(request.args))
    return decision.as_dict()
