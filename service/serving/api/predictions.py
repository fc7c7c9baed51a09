"""POST /v1/models/<flag>/predict and GET /v1/models/<flag>/resolve."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Blueprint, Response, request

from service.errors import BadRequest
from service.serving import context as unleash_context
from service.serving.api import authorize, json_body, request_id, selector
from service.serving.selector import Selector

bp = Blueprint("models", __name__, url_prefix="/v1/models")


@bp.post("/<flag>/predict")
def predict(flag: str) -> Any:
    authorize("predict")
    reply = predict_reply(selector(), flag, json_body(), request_id())
    return Response(reply, mimetype="application/json")


def predict_reply(selector: Selector, flag: str, body: Any, request_id: str) -> bytes:
    """Validate a parsed predict body, serve it, and render the answer (JSON bytes).

    Shared by this route and the front that answers predict ahead of Flask
    (service.serving.api.fast_predict), so both refuse and answer alike.
    """
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object with 'context' and 'inputs'")
    if "context" not in body:
        raise BadRequest('\'context\' is required (an Unleash context, e.g. {"userId": "u1"})')
    if "inputs" not in body:
        raise BadRequest("'inputs' is required (the model's input records)")
    context = unleash_context.from_json(body["context"])
    result = selector.predict(flag, context, body["inputs"], request_id)
    head = {
        "request_id": result.request_id,
        **result.decision.as_dict(),
        "fallback": result.fallback,
    }
    # The bento's reply goes out as the bytes it sent (parsed once, for the exposure's score),
    # spliced into our object: {...head, "prediction": <bento JSON>, "latency_ms": ...}.
    latency = orjson.dumps(round(result.latency_ms, 3))
    out = orjson.dumps(head)[:-1] + b',"prediction":' + result.body_json
    return out + b',"latency_ms":' + latency + b"}\n"


@bp.get("/<flag>/resolve")
def resolve(flag: str) -> Any:
    # Tells which arm a user is in: keyed like predict when ROLLOUT_REQUIRE_KEYS=predict.
    authorize("predict")
    decision = selector().resolve(flag, unleash_context.from_query(request.args))
    return decision.as_dict()
