"""The JSON every error answer carries, for Flask's error handlers and the predict front alike.

{"error": {"code": "bad_request", "message": "'context' is required ..."}}
"""

from __future__ import annotations

import orjson

from service.errors import RolloutError, StoreUnavailable, Unauthorized

# What an unexpected failure tells the caller: nothing of its internals (they go to the log).
INTERNAL_ERROR = ("internal_error", "the selector failed; see its log")


def error_json(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}}) + b"\n"


def error_headers(exc: RolloutError) -> dict[str, str]:
    """What a client needs beside the message: how to authenticate, when to retry."""
    if isinstance(exc, Unauthorized):
        return {"WWW-Authenticate": 'Bearer realm="rollout"'}
    if isinstance(exc, StoreUnavailable):
        return {"Retry-After": "5"}
    return {}
