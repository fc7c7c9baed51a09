"""HTTP blueprints: each parses and validates the request, calls the selector, renders JSON."""

from __future__ import annotations

import random
import re
import time
from typing import Any

from flask import current_app, request

from service.api_keys import ApiKey
from service.errors import BadRequest, UnsupportedMediaType
from service.serving.forwarding import decode
from service.serving.keys import Access
from service.serving.limits import MAX_DEPTH, check_tree
from service.serving.selector import Selector

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def selector() -> Selector:
    selector: Selector = current_app.extensions["selector"]
    return selector


def authorize(scope: str) -> ApiKey | None:
    """The caller's key when this call needs `scope` (401/403 otherwise), else None."""
    access: Access = current_app.extensions["access"]
    return access.authorize(scope, request.headers.get("Authorization"))


def json_body() -> Any:
    """The request's JSON body: 415 for another content type, 400 when it does not parse,
    nests deeper than MAX_DEPTH or holds NaN/Infinity (naming the field)."""
    if not request.is_json:
        raise UnsupportedMediaType(
            f"send JSON with Content-Type: application/json (got '{request.content_type}')"
        )
    return parse_json(request.get_data(cache=True))


def parse_json(data: bytes) -> Any:
    """A request body's JSON: 400 when it does not parse, nests deeper than MAX_DEPTH or holds
    NaN/Infinity (naming the field)."""
    try:
        body = decode(data)
    except RecursionError as exc:
        raise BadRequest(f"the body nests deeper than {MAX_DEPTH} levels") from exc
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON ({_reason(exc)})") from exc
    check_tree(body)
    return body


def _reason(exc: ValueError) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else "unparseable"


def request_id() -> str:
    """The caller's X-Request-ID when it is usable, else a fresh one."""
    return request_id_from(request.headers.get("X-Request-ID", ""))


def request_id_from(given: str) -> str:
    """`given` (an X-Request-ID header) when it is usable, else a fresh id."""
    if REQUEST_ID.match(given):
        return given
    return new_request_id()


def new_request_id() -> str:
    """32 hex digits: the time in nanoseconds, then 64 random bits (as event ids are made).

    Time first, so the request ids of new exposures sort after older ones: on SQLite each
    insert lands at the right edge of the `request_id` index instead of on a random page (the
    random page was the costliest part of writing an exposure there, scripts/benchmarks/
    event_rates.py). Unique, not secret: `random` is seeded from urandom once per process (and
    again after a fork), where uuid4() made a getrandom syscall per id (0.37 ms under load).
    """
    return f"{time.time_ns():016x}{random.getrandbits(64):016x}"
