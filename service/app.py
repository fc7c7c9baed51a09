"""The Flask application factory: the same factory serves `flask --app`, gunicorn and tests."""

from __future__ import annotations

import atexit
import logging
from typing import Any

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from service.api import health, models, outcomes
from service.config import Settings
from service.errors import RolloutError
from service.selector import Selector

log = logging.getLogger(__name__)


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the selector app. `config` overrides settings (see service.config.Settings)."""
    settings = Settings.load(config)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    selector = Selector.from_settings(settings)
    app.extensions["selector"] = selector
    # Flush buffered events however the process ends gracefully (gunicorn also calls close()).
    atexit.register(selector.close)
    for blueprint in (models.bp, outcomes.bp, health.bp):
        app.register_blueprint(blueprint)
    _register_error_handlers(app)
    return app


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(RolloutError)
    def rollout_error(exc: RolloutError) -> Any:
        return _error(exc.status, exc.code, exc.message)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        code = (exc.name or "error").lower().replace(" ", "_")
        message = exc.description or exc.name
        if exc.code == 413:
            message = f"the body is larger than {app.config['MAX_CONTENT_LENGTH']} bytes"
        return _error(exc.code or 500, code, message)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Any:
        log.exception("unhandled error")
        return _error(500, "internal_error", "the selector failed; see its log")


def _error(status: int, code: str, message: str) -> Any:
    return jsonify({"error": {"code": code, "message": message}}), status
