"""The console's Flask application factory (`rollout console`, tests, `flask --app`).

`create_app(config)` takes the same overrides as the selector's factory (service.config
fields) plus the console's own (service.console.settings). The long-lived pieces (the flag
source, the selector scraper and its sampler thread, the operator keys) are built here, once
per process, and kept in `app.extensions["console"]`.
"""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass, fields
from typing import Any

from flask import Flask, render_template
from werkzeug.exceptions import HTTPException

from service.config import Settings
from service.console import operate, pages
from service.console.auth import Gate, OperatorKeys
from service.console.flag_source import FlagSource
from service.console.live import SelectorScraper
from service.console.settings import ConsoleSettings
from service.errors import RolloutError

log = logging.getLogger(__name__)

# Pages are HTML from this app only: no inline script, no framing, no referrer leaking URLs.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'none'; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass
class Console:
    """What every request of one console process shares."""

    settings: Settings
    options: ConsoleSettings
    source: FlagSource
    scraper: SelectorScraper
    gate: Gate
    stop: threading.Event


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the console. `config` overrides settings of either kind, by field name."""
    config = dict(config or {})
    own = {f.name for f in fields(ConsoleSettings)}
    options = ConsoleSettings.load({k: v for k, v in config.items() if k in own})
    settings = Settings.load({k: v for k, v in config.items() if k not in own})
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=options.secret_key or secrets.token_hex(32),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_NAME="rollout_console",
    )
    console = Console(
        settings,
        options,
        FlagSource(settings),
        SelectorScraper(options.selector_url, options.live_window_seconds),
        Gate(OperatorKeys(options.keys_file(settings)), options.read_only),
        threading.Event(),
    )
    app.extensions["console"] = console
    if options.live_sample_seconds > 0:
        threading.Thread(
            target=console.scraper.run,
            args=(options.live_sample_seconds, console.stop),
            name="console-live-sampler",
            daemon=True,
        ).start()
    app.register_blueprint(pages.bp)
    app.register_blueprint(operate.bp)
    _register_handlers(app)
    return app


def _register_handlers(app: Flask) -> None:
    @app.after_request
    def secure(response: Any) -> Any:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.errorhandler(RolloutError)
    def rollout_error(exc: RolloutError) -> Any:
        status = exc.status if 400 <= exc.status < 600 else 500
        return render_template("error.html", title="refused", message=exc.message), status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        title = (exc.name or "error").lower()
        message = exc.description or title
        return render_template("error.html", title=title, message=message), exc.code or 500
