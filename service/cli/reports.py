"""`rollout report ...`: analysis notebooks that end in a decision."""

from __future__ import annotations

from typing import Any

import click

from service.cli.base import main, progress, settings_of

# --- reports -----------------------------------------------------------------------------


@main.group()
def report() -> None:
    """Analysis notebooks (papermill) that end in a decision."""


@report.command("ab")
@click.option("--flag", required=True)
@click.option("--control", default="control", show_default=True)
@click.option("--treatment", default="treatment", show_default=True)
@click.option("--metric", default="retained", show_default=True)
@click.option("--window-start", default=None, help="ISO time; default: all events.")
@click.option("--window-end", default=None, help="ISO time; default: now.")
@click.option("--alpha", default=0.05, show_default=True, type=click.FloatRange(0.0001, 0.5))
@click.option("--expected-split", default=None, help="e.g. 50:50 (default: equal).")
@click.option("--event-store-url", default=None, help="SQLAlchemy URL (default: local SQLite).")
@click.pass_context
def report_ab(ctx: click.Context, **options: Any) -> None:
    """Run the A/B notebook; write reports/<flag>/<run-id>/ and print the decision."""
    from service.reports import run_ab_report

    result = run_ab_report(settings_of(ctx), progress=progress, **options)
    print_report(result)


def print_report(result: Any) -> None:
    decision = result.decision
    click.echo(f"report:   {result.html_path}")
    click.echo(f"decision: {decision['recommendation']}  ({result.output_dir / 'decision.json'})")
    for reason in decision.get("reasons", []):
        click.echo(f"  - {reason}")
