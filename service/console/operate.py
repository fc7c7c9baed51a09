"""Signing in with an operator key, and the actions behind a confirmation and a CSRF token.

GET /actions/<action>/<flag> shows what the action would change (nothing is written); the
POST of its form does it. Both need an operator (service.console.auth.operator_of): anyone
else gets 403, a POST without the session's CSRF token 400. The result is audited by the
domain function with the operator's key name, and shown on the Rollouts page.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, abort, flash, redirect, request, session, url_for

from service.console.actions import ACTIONS
from service.console.auth import csrf_ok, log_in, operator_of
from service.console.pages import console, page
from service.errors import RolloutError

log = logging.getLogger(__name__)
bp = Blueprint("operate", __name__)


@bp.get("/login")
def login_form() -> str:
    return page("login.html", refused=False)


@bp.post("/login")
def login() -> Any:
    if not csrf_ok(session, request.form.get("csrf")):
        abort(400, "the form expired; load the page again")
    name = log_in(session, console().gate, request.form.get("key", ""))
    if name is None:
        log.warning("console: a sign-in with an unknown key was refused")
        return page("login.html", refused=True), 403
    flash(f"signed in as {name}")
    return redirect(url_for("pages.rollouts_page"))


@bp.post("/logout")
def logout() -> Any:
    if not csrf_ok(session, request.form.get("csrf")):
        abort(400, "the form expired; load the page again")
    session.clear()
    return redirect(url_for("pages.rollouts_page"))


def _operator() -> str:
    """The operator, or a 403 page saying how to become one."""
    c = console()
    name = operator_of(request, session, c.gate)
    if name is None:
        why = (
            "this console is read-only (ROLLOUT_CONSOLE_READ_ONLY)"
            if c.gate.read_only
            else "sign in with an operator key (scope operate) to act"
        )
        abort(403, why)
    return name


@bp.get("/actions/<action>/<flag>")
def confirm(action: str, flag: str) -> Any:
    if action not in ACTIONS:
        abort(404)
    _operator()
    c = console()
    preview, _run = ACTIONS[action]
    try:
        outcome = preview(c.source, flag, c.settings)
    except RolloutError as exc:
        return page("error.html", title=f"{action} refused", message=exc.message), 409
    return page("confirm.html", action=action, flag=flag, outcome=outcome)


@bp.post("/actions/<action>/<flag>")
def act(action: str, flag: str) -> Any:
    if action not in ACTIONS:
        abort(404)
    operator = _operator()
    if not csrf_ok(session, request.form.get("csrf")):
        abort(400, "the form expired; load the page again")
    c = console()
    _preview, run = ACTIONS[action]
    try:
        outcome = run(c.source, flag, c.settings, operator)
    except RolloutError as exc:
        log.warning("console: %s of %s by %s refused: %s", action, flag, operator, exc.message)
        return page("error.html", title=f"{action} refused", message=exc.message), 409
    log.info("console: %s", outcome.title)
    flash(outcome.title)
    return redirect(url_for("pages.rollouts_page") + f"#flag-{flag}")
