"""The Flask application factory: the one factory serves `flask --app`, both servers and tests."""

from __future__ import annotations

import atexit
import logging
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from service.config import Settings
from service.errors import RolloutError
from service.serving.api import health, meta, outcomes, predictions
from service.serving.api.errors import INTERNAL_ERROR, error_headers, error_json
from service.serving.api.fast_predict import PredictFront
from service.serving.keys import Access, KeyRing
from service.serving.outcome_check import OutcomeCheck
from service.serving.selector import Selector

log = logging.getLogger(__name__)

# A body over the limit is still read up to this many times the limit, so its sender gets the
# 413 (see _drain_body); larger ones are cut off.
DRAIN_LIMIT_FACTOR = 8


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the selector app. `config` overrides settings (see service.config.Settings)."""
    settings = Settings.load(config)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    selector = Selector.from_settings(settings)
    app.extensions["selector"] = selector
    app.extensions["access"] = Access(
        KeyRing(settings.keys_file), settings.require_keys, settings.protect_metrics
    )
    app.extensions["outcome_check"] = OutcomeCheck(
        selector.events.engine, selector.events.recent, settings.outcome_window_hours * 3600
    )
    # Flush buffered events however the process ends gracefully (the server also calls close()).
    atexit.register(selector.close)
    for blueprint in (predictions.bp, outcomes.bp, health.bp, meta.bp):
        app.register_blueprint(blueprint)
    _register_error_handlers(app)
    # The hot route, answered in front of Flask's per-request machinery (anything unusual
    # still goes through Flask): see service.serving.api.fast_predict.
    app.wsgi_app = PredictFront(app, app.wsgi_app)  # type: ignore[method-assign]
    return app


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(RolloutError)
    def rollout_error(exc: RolloutError) -> Any:
        return _error(exc.status, exc.code, exc.message, error_headers(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        code = (exc.name or "error").lower().replace(" ", "_")
        message = exc.description or exc.name
        if exc.code == 413:
            message = f"the body is larger than {app.config['MAX_CONTENT_LENGTH']} bytes"
            _drain_body(DRAIN_LIMIT_FACTOR * app.config["MAX_CONTENT_LENGTH"])
        # Keeps the Allow header of a 405 (and any other header the exception carries).
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        return _error(exc.code or 500, code, message, headers)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Any:
        log.exception("unhandled error")
        return _error(500, *INTERNAL_ERROR)


def _drain_body(limit: int) -> None:
    """Read (and discard) a refused body, up to `limit` bytes, before answering.

    A client still sending its body does not read the answer: without this, a caller over
    the limit sees a reset connection instead of the JSON 413. Beyond `limit` the connection
    is dropped, so a huge upload cannot keep a worker thread busy.
    """
    length = request.content_length or 0
    if length > limit:
        return
    stream = request.environ.get("wsgi.input")
    while stream is not None and length > 0:
        chunk = stream.read(min(length, 1 << 16))
        if not chunk:
            return
        length -= len(chunk)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Any:
    body = error_json(code, message)
    return Response(body, status, headers or {}, mimetype="application/json")
