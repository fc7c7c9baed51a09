"""The OpenAPI 3.1 document of the selector's whole HTTP API, served at /openapi.json.

Built per process from what the selector knows: the flags it serves (the `flag` path parameter)
and each model family's input schema (`bentos/<family>/input_schema.json`), so the document and
the validation the selector applies are the same schemas.
"""

from __future__ import annotations

from typing import Any

from service.serving.contracts import InputContract
from service.serving.routing import REASONS

SCALAR = {"type": ["string", "number", "boolean"], "maxLength": 1000}
JSON_ERRORS = (400, 404, 413, 415, 422)


def document(flags: list[str], contracts: dict[str, InputContract]) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "model-rollout selector",
            "version": "1",
            "description": "Routes each prediction to the bento an Unleash flag picks; "
            "logs every decision.",
        },
        "paths": _paths(),
        "components": {
            "schemas": _schemas(flags, contracts),
            "responses": _responses(),
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A key from `rollout keys create NAME --scopes ...`. Outcomes "
                    "need scope `outcomes` once any key exists; predict and resolve need "
                    "`predict` when ROLLOUT_REQUIRE_KEYS=predict; /metrics needs `metrics` "
                    "when ROLLOUT_PROTECT_METRICS is set.",
                }
            },
        },
    }


# Keyed when required; `{}` (no credential) is allowed while the deployment does not require one.
_KEYED: list[dict[str, list[str]]] = [{"apiKey": []}, {}]


def _paths() -> dict[str, Any]:
    flag = {
        "name": "flag",
        "in": "path",
        "required": True,
        "schema": {"$ref": "#/components/schemas/FlagName"},
    }
    return {
        "/v1/models/{flag}/predict": {
            "post": {
                "summary": "Route one request to the flag's bento, forward it, log the exposure",
                "parameters": [flag, _request_id_header()],
                "security": _KEYED,
                "requestBody": _json_body("PredictRequest"),
                "responses": {
                    "200": _json_response("Prediction", "PredictResponse"),
                    **_errors(400, 401, 403, 404, 405, 413, 415, 422),
                    "503": {"$ref": "#/components/responses/Unavailable"},
                },
            }
        },
        "/v1/models/{flag}/resolve": {
            "get": {
                "summary": "The routing decision only (no exposure is logged)",
                "parameters": [flag, *_context_query()],
                "security": _KEYED,
                "responses": {
                    "200": _json_response("Routing decision", "RoutingDecision"),
                    **_errors(400, 401, 403, 404, 405),
                    "503": {"$ref": "#/components/responses/Unavailable"},
                },
            }
        },
        "/v1/outcomes": {
            "post": {
                "summary": "Record outcome events (one, a list, or {outcomes: [...]})",
                "security": _KEYED,
                "requestBody": _json_body("OutcomeBatch"),
                "responses": {
                    "202": _json_response("Accepted", "Accepted"),
                    **_errors(400, 401, 403, 405, 413, 415, 422),
                    "503": {"$ref": "#/components/responses/Unavailable"},
                },
            }
        },
        "/healthz": {"get": _plain_get("The process is up", "Health")},
        "/readyz": {
            "get": {
                **_plain_get("Flags loaded and bentos known; each bento's circuit", "Readiness"),
                "responses": {
                    "200": _json_response("Ready", "Readiness"),
                    "503": _json_response("Not ready", "Readiness"),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus text exposition format",
                "security": _KEYED,
                "responses": {
                    **_errors(401, 403),
                    "200": {
                        "description": "Metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                },
            }
        },
        "/openapi.json": {"get": _plain_get("This document", "Document")},
    }


def _request_id_header() -> dict[str, Any]:
    return {
        "name": "X-Request-ID",
        "in": "header",
        "required": False,
        "description": "Used as the exposure's request id when it matches the pattern.",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,64}$"},
    }


def _context_query() -> list[dict[str, Any]]:
    return [
        {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
        for name in ("userId", "sessionId", "remoteAddress", "region", "segment")
    ]


def _json_body(schema: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _json_response(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _plain_get(summary: str, schema: str) -> dict[str, Any]:
    return {"summary": summary, "responses": {"200": _json_response(summary, schema)}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"$ref": "#/components/responses/Error"} for s in statuses}


def _responses() -> dict[str, Any]:
    error = _json_response("A JSON error naming the problem", "Error")
    return {
        "Error": error,
        "Unavailable": {
            **error,
            "description": "Neither the chosen nor the default bento (predict), or the event "
            "store cannot be read to check outcomes against exposures (outcomes)",
        },
    }


def _schemas(flags: list[str], contracts: dict[str, InputContract]) -> dict[str, Any]:
    inputs = [_inline_defs(contract.schema) for contract in contracts.values()] or [{}]
    return {
        "FlagName": {"type": "string", "enum": flags} if flags else {"type": "string"},
        "Context": {
            "type": "object",
            "description": "An Unleash context; other top-level fields become properties.",
            "properties": {
                "userId": SCALAR,
                "sessionId": SCALAR,
                "remoteAddress": SCALAR,
                "currentTime": SCALAR,
                "properties": {"type": "object", "additionalProperties": SCALAR},
            },
            "additionalProperties": SCALAR,
        },
        "PredictRequest": {
            "type": "object",
            "required": ["context", "inputs"],
            "properties": {
                "context": {"$ref": "#/components/schemas/Context"},
                # One family's records; which family is the flag's (its bentos').
                "inputs": inputs[0] if len(inputs) == 1 else {"anyOf": inputs},
            },
        },
        "PredictResponse": _predict_response(),
        "RoutingDecision": _decision(),
        "Outcome": _outcome(),
        "OutcomeBatch": {
            # An object with `outcomes` is a batch; any other object is one outcome.
            "anyOf": [
                {"$ref": "#/components/schemas/Outcome"},
                _outcome_list(),
                {
                    "type": "object",
                    "required": ["outcomes"],
                    "properties": {"outcomes": _outcome_list()},
                },
            ]
        },
        "Accepted": {
            "type": "object",
            "required": ["accepted"],
            "properties": {"accepted": {"type": "integer"}},
        },
        "Error": _error(),
        "Health": {"type": "object", "required": ["status"]},
        "Readiness": _readiness(),
        "Document": {"type": "object", "required": ["openapi", "paths"]},
    }


def _inline_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """The family schema with its `#/$defs/...` references replaced by their targets.

    Inside this document such a reference would point at the document's root, where there is
    no `$defs`; pydantic's schemas are not recursive, so inlining always terminates.
    """
    defs = schema.get("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    result: dict[str, Any] = inline(schema)
    return result


def _decision() -> dict[str, Any]:
    text = {"type": "string"}
    return {
        "type": "object",
        "required": ["flag", "variant", "bento", "reason", "default_bento"],
        "properties": {
            "flag": text,
            "variant": text,
            "bento": text,
            "reason": {"enum": list(REASONS)},
            "default_bento": text,
            "detail": text,
        },
    }


def _predict_response() -> dict[str, Any]:
    decision = _decision()
    return {
        **decision,
        "required": [*decision["required"], "request_id", "fallback", "prediction", "latency_ms"],
        "properties": {
            **decision["properties"],
            "request_id": {"type": "string"},
            "fallback": {"type": "boolean"},
            "prediction": {"type": "object", "description": "The bento's reply, as it sent it"},
            "latency_ms": {"type": "number"},
        },
    }


def _outcome() -> dict[str, Any]:
    ref = {"type": "string", "minLength": 1, "maxLength": 200}
    return {
        "type": "object",
        "required": ["metric", "value"],
        "anyOf": [{"required": ["request_id"]}, {"required": ["user_id", "flag"]}],
        "not": {"required": ["outcomes"]},
        "properties": {
            "metric": {"type": "string", "minLength": 1, "maxLength": 200},
            "value": {"type": ["number", "boolean"]},
            "request_id": {**ref, "maxLength": 64},
            "user_id": ref,
            "flag": {"type": "string", "maxLength": 200},
            "ts": {"type": "number", "minimum": 0, "description": "Epoch seconds; now if absent"},
        },
    }


def _outcome_list() -> dict[str, Any]:
    return {
        "type": "array",
        "minItems": 1,
        "maxItems": 10_000,
        "items": {"$ref": "#/components/schemas/Outcome"},
    }


def _error() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    }


def _readiness() -> dict[str, Any]:
    circuit = {"enum": ["closed", "open", "half_open"]}
    return {
        "type": "object",
        "required": ["status", "flags_loaded", "mode", "flags", "bentos"],
        "properties": {
            "status": {"enum": ["ready", "degraded", "not_ready"]},
            "flags_loaded": {"type": "boolean"},
            "mode": {"enum": ["embedded", "server"]},
            "flags": {"type": "array", "items": {"type": "string"}},
            "bentos": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "required": ["url", "circuit"],
                    "properties": {"url": {"type": "string"}, "circuit": circuit},
                },
            },
            "event_queue_depth": {"type": "integer"},
            "shadow_queue_depth": {"type": "integer"},
            "event_store": {
                "type": "object",
                "description": "failing while writes fail; events then go to the spill file",
                "properties": {"status": {"enum": ["ok", "failing"]}},
            },
        },
    }
