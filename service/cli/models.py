"""`rollout models ...`: model versions as bentos: build, list, show, gate, train."""

from __future__ import annotations

from typing import Any

import click

from service.cli.base import main, progress, settings_of

# --- models ------------------------------------------------------------------------------


@main.group()
def models() -> None:
    """Model versions packaged as bentos (bentos/)."""


@models.command("build")
@click.option("--version", "versions", multiple=True, help="only this version (v2 or churn:v2)")
@click.option("--snapshot", help="train on this stored data snapshot (sha256 or 8+ char prefix)")
@click.option("--force", is_flag=True, help="rebuild even when the recipe is unchanged")
@click.option("--no-gates", is_flag=True, help="package without running the quality gates")
@click.pass_context
def models_build(
    ctx: click.Context, versions: tuple[str, ...], snapshot: str | None, force: bool, no_gates: bool
) -> None:
    """Train, save, package and gate declared versions, each as its own bento (idempotent).

    A version that fails a gate is removed from the store and the command exits 1.
    """
    from service.registry.build import build_all

    settings = settings_of(ctx)
    built = build_all(
        settings, progress, force, versions=versions, snapshot=snapshot, gate=not no_gates
    )
    for item in built:
        click.echo(f"{item.tag}  model {item.model_hash[:12]}  data {item.data_fingerprint[:12]}")


@models.command("list")
@click.pass_context
def models_list(ctx: click.Context) -> None:
    """Every bento in the store: created, data, offline AUC, gate status, where it serves.

    STABLE marks each family's stable version (`rollout models promote`): the bento its flags
    serve to everyone no strategy variant matches. These tags are what a variant's payload in
    the Unleash UI may name.
    """
    from service.registry.bentos import stored_bentos
    from service.registry.gates import gate_status
    from service.registry.stable import stable_versions

    settings = settings_of(ctx)
    where = _serving(settings)
    stable = set(stable_versions(settings.bentos_dir).values())
    header = ("TAG", "STABLE", "CREATED", "SNAPSHOT", "DATA", "AUC", "BRIER", "GATES", "SERVES")
    rows = [header]
    for bento in stored_bentos(settings):
        overall = bento.model_metadata.get("metrics", {}).get("overall", {})
        rows.append(
            (
                bento.tag,
                "stable" if bento.tag in stable else "-",
                bento.created[:19].replace("T", " "),
                bento.labels.get("snapshot", "-")[:12],
                bento.labels.get("data_fingerprint", "-")[:12],
                _metric(overall.get("auc")),
                _metric(overall.get("brier")),
                gate_status(bento),
                "; ".join(where(bento.tag)) or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    for row in rows:
        click.echo(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1]
        )


def _serving(settings: Any) -> Any:
    """tag -> where it serves: the live flags on the Unleash server in server mode (what users
    get), flags/ in embedded mode."""
    from service.flags.server_state import read_all_flags
    from service.flags.unleash_admin import admin_from_environment
    from service.registry.bentos import serving_flags, serving_in
    from service.registry.stable import stable_versions

    stable = stable_versions(settings.bentos_dir)
    if not settings.unleash_url:
        return lambda tag: serving_flags(tag, settings.flags_dir, settings.bentos_dir)
    with admin_from_environment(settings.unleash_url) as admin:
        state = read_all_flags(admin)
    docs = [doc for name in state.features if (doc := state.doc(name)) is not None]
    progress(f"SERVES: the live flags on {state.url}")
    return lambda tag: serving_in(tag, docs, stable)


def _metric(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


@models.command("show")
@click.argument("tag")
@click.option("--html", "as_html", is_flag=True, help="print the HTML card instead of Markdown")
@click.pass_context
def models_show(ctx: click.Context, tag: str, as_html: bool) -> None:
    """Print the model card of TAG (e.g. churn:v2), with its gate status."""
    from service.registry.bentos import stored_bento
    from service.registry.cards import read_card
    from service.registry.gates import gate_status

    settings = settings_of(ctx)
    card = read_card(tag, settings)
    bento = stored_bento(tag, settings)
    if as_html:
        click.echo((bento.rollout_dir / "card.html").read_text(encoding="utf-8"))
        return
    from service.registry.stable import stable_version

    click.echo(card)
    click.echo(f"## Quality gates\n\n{gate_status(bento)}  ({bento.rollout_dir / 'gates.json'})")
    stable = stable_version(settings.bentos_dir, bento.family)
    role = "this version" if stable == tag else (stable or "none declared")
    click.echo(f"\n## Stable version of {bento.family}\n\n{role}  (rollout models promote)")


@models.command("promote")
@click.argument("tag")
@click.pass_context
def models_promote(ctx: click.Context, tag: str) -> None:
    """Make TAG (e.g. churn:v2) its family's stable version.

    Every flag of the family then serves TAG to users no strategy variant matches, and to
    everyone when the flag is off (a flag's explicit `default` still wins). Recorded as
    `stable:` in bentos/<family>/versions.yaml; running selectors pick it up within their
    refresh interval.
    """
    from service.registry.gates import NOT_BUILT, NOT_GATED, failed_gates
    from service.registry.stable import promote

    settings = settings_of(ctx)
    gate = failed_gates([tag], settings).get(tag)
    if gate and gate not in (NOT_BUILT, NOT_GATED):
        raise click.ClickException(f"{tag} failed its quality gate '{gate}' and may not be stable")
    previous = promote(settings.bentos_dir, tag)
    if previous == tag:
        click.echo(f"{tag} is already the stable version")
    else:
        click.echo(f"stable version: {previous or '(none)'} -> {tag}")


@models.command("gate")
@click.argument("tags", nargs=-1, required=True)
@click.pass_context
def models_gate(ctx: click.Context, tags: tuple[str, ...]) -> None:
    """Run the quality gates of TAG(s) on a real `bentoml serve`; store the report with each.

    Exits 1 naming every failed gate; the bento stays in the store, marked as failed.
    """
    from service.registry.gates import gate, raise_if_failed

    reports = gate(tags, settings_of(ctx), progress)
    for report in reports:
        click.echo(f"{report.tag}: {'passed' if report.passed else 'FAILED'}")
        for result in report.results:
            click.echo(f"  {'ok  ' if result.passed else 'FAIL'} {result.name}: {result.detail}")
    raise_if_failed(reports)


@models.command("train")
@click.argument("family")
@click.option("--version", required=True, help="the new version, e.g. v3")
@click.option(
    "--drift",
    type=click.FloatRange(0, 1),
    default=0.2,
    show_default=True,
    help="how far the newer users have drifted (population.drifted_training_data)",
)
@click.option("--seed", type=int, help="data draw seed (default: the base version's + 1)")
@click.option("--period", default="", help="the data period, e.g. 2026-Q4 (for the card)")
@click.option("--base", help="copy this version's recipe (default: the latest declared)")
@click.option("--change", help="the change note (default: retrained on newer data)")
@click.pass_context
def models_train(
    ctx: click.Context,
    family: str,
    version: str,
    drift: float,
    seed: int | None,
    period: str,
    base: str | None,
    change: str | None,
) -> None:
    """Retrain FAMILY on a newer data snapshot as a new version: package it, gate it.

    The version is appended to bentos/FAMILY/versions.yaml (with its snapshot pinned), built,
    and gated against the flag's current default; on any failure nothing is left behind.
    """
    from service.registry.build import Retraining, retrain

    plan = Retraining(family, version, drift, seed, period, base, change)
    result = retrain(plan, settings_of(ctx), progress)
    click.echo(result.summary())
