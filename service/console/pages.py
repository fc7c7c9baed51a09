"""The read-only pages: Rollouts, a flag's Timeline, Models, Live, and the reports they link.

Thin, as the selector's blueprints: each view reads through one domain module and renders a
template. Jinja2 escapes every value (flag names, descriptions, variant names, reasons, Unleash
event text), so nothing from a flag, Unleash or a caller becomes markup.
"""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    render_template,
    request,
    send_from_directory,
    session,
)

from service.console import registry_view, rollouts, timeline
from service.console.auth import csrf_token, operator_of
from service.errors import RolloutError
from service.store import PRIMARY_METRIC

bp = Blueprint("pages", __name__)

# A report is HTML made by nbconvert: served as an opaque origin, so nothing in it can act
# with the console's session.
REPORT_HEADERS = {"Content-Security-Policy": "sandbox; default-src 'self' 'unsafe-inline' data:"}


def console() -> Any:
    return current_app.extensions["console"]


def page(template: str, **values: Any) -> str:
    """Render with what every page shows: the mode, who is signed in, the CSRF token."""
    c = console()
    return render_template(
        template,
        mode=c.source.mode,
        operator=operator_of(request, session, c.gate),
        read_only=c.gate.read_only,
        csrf=csrf_token(session),
        **values,
    )


@bp.get("/healthz")
def healthz() -> Any:
    return {"status": "ok"}


@bp.get("/")
def rollouts_page() -> str:
    c = console()
    try:
        read = c.source.read()
    except RolloutError as exc:
        return page("rollouts.html", active="rollouts", flags=[], problems=[], error=exc.message)
    views = rollouts.rollouts(
        read.docs,
        read.definitions,
        read.segments,
        read.problems,
        c.source.store,
        read.mode,
        c.settings,
    )
    return page(
        "rollouts.html",
        active="rollouts",
        flags=views,
        problems=read.problems.get("", []),
        error="",
    )


@bp.get("/flags/<flag>")
def timeline_page(flag: str) -> str:
    c = console()
    error = ""
    try:
        c.source.copy_unleash_events(flag)
    except RolloutError as exc:  # the recorded part still shows
        error = f"Unleash's event log could not be read: {exc.message}"
    read = c.source.read()
    if flag not in read.docs and flag not in read.definitions:
        abort(404)
    definition = read.definitions.get(flag)
    doc = read.docs.get(flag) or {}
    variants = sorted((doc.get("variants") or {}) or (definition.variants if definition else {}))
    metric = definition.ramp.metric if definition and definition.ramp else PRIMARY_METRIC
    entries = timeline.timeline(c.source.store, flag, variants, metric, c.settings.reports_dir)
    return page(
        "timeline.html", active="rollouts", flag=flag, entries=entries, metric=metric, error=error
    )


@bp.get("/models")
def models_page() -> str:
    c = console()
    error = ""
    try:
        docs = c.source.read().docs
    except RolloutError as exc:
        docs, error = {}, exc.message
    return page(
        "models.html", active="models", models=registry_view.models(c.settings, docs), error=error
    )


@bp.get("/live")
def live_page() -> str:
    c = console()
    refresh = max(2, int(c.options.live_sample_seconds or 10))
    return page("live.html", active="live", live=c.scraper.view(), refresh=refresh)


@bp.get("/reports/<path:path>")
def report_file(path: str) -> Any:
    response = send_from_directory(console().settings.reports_dir, path)
    response.headers.update(REPORT_HEADERS)
    return response
