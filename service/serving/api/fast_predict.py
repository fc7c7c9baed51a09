"""POST /v1/models/<flag>/predict answered in front of Flask, for the common case.

Why: Flask's per-request machinery (request and app contexts, URL matching, the Request and
Response objects, its hooks) was about a third of a worker's CPU per predict in an in-process
profile, more than routing, the input checks and the event log together. This front answers
the one hot route as plain WSGI with the very functions the Flask route uses
(`predictions.predict_reply`, `parse_json`, `request_id_from`, the keys' `authorize`) and the
same error JSON, so both answer alike; the tests run every predict case through it.

Only the ordinary request takes this way: a POST to that path, a flag name as flags may be
named, a Content-Length within the limit, `Content-Type: application/json`. Anything else
(another method, a chunked or oversized body, another media type, a path Flask would redirect)
goes to Flask untouched, which answers it (405, 413, 415, ...) as it always did.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from flask import Flask

from service.errors import RolloutError
from service.flags.model import FLAG_NAME
from service.serving.api import parse_json, request_id_from
from service.serving.api.errors import INTERNAL_ERROR, error_headers, error_json
from service.serving.api.predictions import predict_reply
from service.serving.keys import Access
from service.serving.selector import Selector

log = logging.getLogger(__name__)

PREFIX = "/v1/models/"
SUFFIX = "/predict"
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class PredictFront:
    """A WSGI app: predict itself, everything else by `flask_wsgi` (Flask's own wsgi_app)."""

    def __init__(self, app: Flask, flask_wsgi: WSGIApp) -> None:
        self.flask_wsgi = flask_wsgi
        self.selector: Selector = app.extensions["selector"]
        self.access: Access = app.extensions["access"]
        self.limit: int = app.config["MAX_CONTENT_LENGTH"]

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        ordinary = self._ordinary(environ)
        if ordinary is None:
            return self.flask_wsgi(environ, start_response)
        status, body, headers = self._answer(*ordinary, environ)
        headers["Content-Type"] = "application/json"
        headers["Content-Length"] = str(len(body))
        start_response(f"{status} {HTTPStatus(status).phrase}", list(headers.items()))
        return [body]

    def _ordinary(self, environ: dict[str, Any]) -> tuple[str, int] | None:
        """The flag and body length of a predict this front answers; None to leave it to Flask."""
        path: str = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") != "POST" or not path.startswith(PREFIX):
            return None
        flag = path[len(PREFIX) : -len(SUFFIX)] if path.endswith(SUFFIX) else ""
        length = environ.get("CONTENT_LENGTH", "")
        content_type = environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
        if (
            not FLAG_NAME.match(flag)
            or not length.isdigit()
            or int(length) > self.limit
            or content_type != "application/json"
            or environ.get("HTTP_TRANSFER_ENCODING")
        ):
            return None
        return flag, int(length)

    def _answer(
        self, flag: str, length: int, environ: dict[str, Any]
    ) -> tuple[int, bytes, dict[str, str]]:
        try:
            self.access.authorize("predict", environ.get("HTTP_AUTHORIZATION"))
            body = parse_json(environ["wsgi.input"].read(length))
            given = environ.get("HTTP_X_REQUEST_ID", "")
            return 200, predict_reply(self.selector, flag, body, request_id_from(given)), {}
        except RolloutError as exc:
            return exc.status, error_json(exc.code, exc.message), error_headers(exc)
        except Exception:
            log.exception("unhandled error")
            return 500, error_json(*INTERNAL_ERROR), {}
