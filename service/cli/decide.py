"""`rollout decide apply|approve` and `rollout guard run|status|resume`: decisions feed flags.

Server mode when an Unleash URL is given (`--url`, UNLEASH_ADMIN_URL or UNLEASH_URL), with
the admin token (`decide`) or the guard's own token (`guard`: ROLLOUT_GUARD_TOKEN or
ROLLOUT_GUARD_TOKEN_FILE, so Unleash's event log names the guard); otherwise embedded mode,
where flags/ itself is changed.
"""

from __future__ import annotations

import getpass
import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import click

from service.cli.base import flag_home, main, progress, settings_of


def _url_option(func: Any) -> Any:
    return click.option(
        "--url", default=None, help="Unleash base URL (default: UNLEASH_ADMIN_URL, UNLEASH_URL)."
    )(func)


def _actor(actor: str | None) -> str:
    return actor or os.environ.get("ROLLOUT_ACTOR") or getpass.getuser()


def _notifier() -> Any:
    from service.rollout.notify import notifier_from_environment

    return notifier_from_environment()


@main.group()
def decide() -> None:
    """Apply a report's decision.json to its flag, or approve a pending promotion."""


@decide.command("apply")
@click.argument("decision_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Print the exact change; write nothing.")
@click.option("--actor", default=None, help="Who (default: ROLLOUT_ACTOR or the login name).")
@_url_option
@click.pass_context
def decide_apply(
    ctx: click.Context, decision_file: Path, dry_run: bool, actor: str | None, url: str | None
) -> None:
    """Ramp, hold, roll back or ship the flag DECISION_FILE is about, as it recommends."""
    from service.rollout.decisions import (
        DecisionFile,
        Who,
        apply_move,
        check_gates,
        last_change,
        plan_decision,
    )

    decision = DecisionFile.load(decision_file)
    with flag_home(ctx, decision.flag, url) as (definition, location, store):
        chosen = plan_decision(
            decision, definition, location.read(), last_change(store, location, decision.flag)
        )
        if chosen is None:
            why = "; ".join(decision.reasons) or "no change asked for"
            click.echo(f"{decision.recommendation}: {decision.flag} stays as it is ({why})")
            return
        check_gates(chosen, settings_of(ctx))
        click.echo(("would " if dry_run else "") + chosen.describe() + f"  [{location.server}]")
        for change in chosen.changes:
            click.echo(f"  {change}")
        if dry_run:
            return
        evidence = {"report": str(decision_file), "summary": decision.summary}
        url = _report_link(settings_of(ctx), decision_file)
        with _notifier() as notifier:
            file_diff = apply_move(
                chosen,
                location,
                store,
                Who(_actor(actor), "decide", evidence),
                "; ".join(decision.reasons) or decision.recommendation,
                notifier,
                evidence_url=url,
                settings=settings_of(ctx),
            )
    if chosen.action == "ship":
        click.echo(f"stable version of {chosen.bento.partition(':')[0]}: {chosen.bento}")
    _print_diff(file_diff)


def _report_link(settings: Any, decision_file: Path) -> str | None:
    """The URL of the decision's report (its HTML beside it), for the flag's link in Unleash."""
    from service.errors import RolloutError
    from service.rollout.identity import report_url

    html = decision_file.parent / "report.html"
    try:
        target = html if html.exists() else decision_file
        return report_url(target, settings.reports_url, settings.reports_dir)
    except RolloutError:
        return None  # a report outside reports/ is not served at ROLLOUT_REPORTS_URL


def _print_diff(file_diff: str) -> None:
    if file_diff:
        click.echo("flags/ updated to match (commit it):")
        click.echo(file_diff, nl=False)


@decide.command("approve")
@click.argument("flag")
@click.option("--dry-run", is_flag=True, help="Print the promotion; write nothing.")
@click.option("--actor", default=None, help="Who approves (default: ROLLOUT_ACTOR or login).")
@_url_option
@click.pass_context
def decide_approve(
    ctx: click.Context, flag: str, dry_run: bool, actor: str | None, url: str | None
) -> None:
    """Apply the promotion the guard proposed for FLAG (approval mode)."""
    from service.rollout.decisions import approve

    with flag_home(ctx, flag, url) as (definition, location, store), _notifier() as notifier:
        chosen, file_diff = approve(
            definition, location, store, _actor(actor), notifier, dry_run, settings_of(ctx)
        )
    click.echo(("would approve " if dry_run else "approved ") + chosen.describe())
    _print_diff(file_diff)


@main.group()
def guard() -> None:
    """The rollout controller: live guardrails, automatic rollback, step-by-step promotion."""


@guard.command("run")
@click.argument("flag")
@click.option("--interval", default=30.0, show_default=True, type=click.FloatRange(0.1))
@click.option("--once", is_flag=True, help="One tick, then exit (for cron or a test).")
@_url_option
@click.pass_context
def guard_run(ctx: click.Context, flag: str, interval: float, once: bool, url: str | None) -> None:
    """Guard FLAG until stopped (SIGINT or SIGTERM): roll back on a breach, promote when due."""
    from service.analysis.reports import run_ab_report
    from service.flags.unleash_admin import token_from_environment
    from service.rollout.guard import Guard
    from service.rollout.lease import FlagLease

    settings = settings_of(ctx)

    def report(**options: Any) -> Any:
        return run_ab_report(settings, progress=progress, **options)

    home = flag_home(ctx, flag, url, "ROLLOUT_GUARD_TOKEN")
    with home as (definition, location, store), _notifier() as notifier:
        lease = FlagLease(store.engine, flag, seconds=interval)  # one guard acts per flag
        guard_ = Guard(
            definition,
            location,
            store,
            report,
            notifier=notifier,
            status_dir=settings.data_dir / "guard",
            settings=settings,
            lease=lease,
        )
        if once:
            _show(guard_.tick())
            lease.release()
            return
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        progress(f"guarding {flag} every {interval:g} s on {location.server}")
        if location.server != "embedded" and not token_from_environment("ROLLOUT_GUARD_TOKEN"):
            progress(
                "warning: no ROLLOUT_GUARD_TOKEN(_FILE): acting with the admin token, so Unleash's "
                "event log will not name the guard (create one: rollout guard token --out FILE)"
            )
        try:
            guard_.run(interval, stop, _show)
        finally:
            lease.release()  # a standby takes over at its next look, not after the lease time


def _show(status: Any) -> None:
    step = "" if status.step is None else f" at {status.step:g}%"
    progress(f"{status.flag}: {status.state}{step}: {status.message}")


@guard.command("token")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="File to write the token to (mode 0600); give it as ROLLOUT_GUARD_TOKEN_FILE.",
)
@click.option("--username", default="rollout-guard", show_default=True)
@_url_option
def guard_token(out: Path, username: str, url: str | None) -> None:
    """Create the guard's Unleash user and personal access token (needs the admin token).

    Every change the guard makes then shows in Unleash's event log as made by USERNAME.
    A second run replaces the token (the old one stops working).
    """
    from service.flags.unleash_admin import admin_from_environment
    from service.rollout.identity import create_guard_token

    with admin_from_environment(url) as admin:
        secret = create_guard_token(admin, username)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(secret + "\n")
    click.echo(
        f"wrote the token of Unleash user {username} to {out}; run the guard with "
        f"ROLLOUT_GUARD_TOKEN_FILE={out}"
    )


@guard.command("status")
@click.argument("flag")
@click.pass_context
def guard_status(ctx: click.Context, flag: str) -> None:
    """What this guard of FLAG last saw and did (its status file), and who holds the lease."""
    import time

    from service.config import confined
    from service.rollout.lease import FlagLease
    from service.store.events import create_engine

    settings = settings_of(ctx)
    try:
        path = confined(settings.data_dir / "guard", flag, ".json")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="FLAG") from exc
    if not path.exists():
        raise click.ClickException(f"no guard has run for {flag} (no {path})")
    status = json.loads(path.read_text(encoding="utf-8"))
    lease = FlagLease(create_engine(settings.event_store_url), flag, seconds=0).state()
    status["lease"] = {"holder": lease.holder, "expires_at": lease.expires_at}
    status["lease"]["describe"] = lease.describe(time.time())
    click.echo(json.dumps(status, indent=2))


@guard.command("resume")
@click.argument("flag")
@click.option("--actor", default=None)
@_url_option
@click.pass_context
def guard_resume(ctx: click.Context, flag: str, actor: str | None, url: str | None) -> None:
    """Let the guard act on FLAG again after a person's change paused it."""
    from service.rollout.guard import resume

    with flag_home(ctx, flag, url) as (_definition, location, store):
        resume(store, location.server, flag, _actor(actor), location.read())
    click.echo(f"resumed: the guard of {flag} takes the flag as it is now as its baseline")
