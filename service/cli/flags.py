"""`rollout flags ...`: flags as code, checked locally and synced with a live Unleash.

`plan`, `apply` and `export` talk to the Unleash Admin API with the admin token from
UNLEASH_ADMIN_TOKEN (or the file UNLEASH_ADMIN_TOKEN_FILE); it is never printed.
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from service.cli.base import main, settings_of

if TYPE_CHECKING:
    from service.flags.audit import AuditStore
    from service.flags.model import FlagSet

# --- flags -------------------------------------------------------------------------------


@main.group()
def flags() -> None:
    """Flags as code (flags/*.yaml)."""


def _dir_option(func: Any) -> Any:
    return click.option(
        "--dir",
        "flags_dir",
        type=click.Path(path_type=Path),
        default=None,
        help="Folder of flag files (default: flags/).",
    )(func)


def _server_options(func: Any) -> Any:
    func = click.option(
        "--url",
        default=None,
        help="Unleash base URL (default: UNLEASH_ADMIN_URL, then UNLEASH_URL).",
    )(func)
    return click.option("--project", default="default", show_default=True)(func)


def _load(ctx: click.Context, flags_dir: Path | None) -> FlagSet:
    """Every flag file, validated (bentos included); exit 1 listing every problem."""
    from service.errors import FlagDefinitionError
    from service.flags.definitions import load_flags
    from service.registry.versions import declared_bentos

    settings = settings_of(ctx)
    directory = flags_dir or settings.flags_dir
    try:
        flag_set = load_flags(directory, declared_bentos(settings.bentos_dir))
    except FlagDefinitionError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(f"{len(exc.problems)} problem(s) in {directory}", err=True)
        sys.exit(1)
    _check_gates(ctx, flag_set)
    return flag_set


def _check_gates(ctx: click.Context, flag_set: FlagSet) -> None:
    """Refuse a flag that routes traffic to a bento whose quality gates failed.

    A bento built here but never gated is only a warning, and one this machine has not built
    says nothing about its gates at all: the registry may live elsewhere (e.g. a CI job that
    checks flags/ alone).
    """
    from service.registry.gates import NOT_BUILT, NOT_GATED, failed_gates

    failed = False
    for flag in flag_set.flags.values():
        for tag, gate in sorted(failed_gates(flag.bentos(), settings_of(ctx)).items()):
            if gate == NOT_BUILT:
                continue
            if gate == NOT_GATED:
                click.echo(
                    f"warning: {flag.file}: flag '{flag.name}': {tag} is {gate[1:-1]} "
                    "here, so its quality gates cannot be checked",
                    err=True,
                )
            else:
                failed = True
                click.echo(
                    f"{flag.file}: flag '{flag.name}': bento {tag} failed its quality "
                    f"gate '{gate}' and may not serve traffic",
                    err=True,
                )
    if failed:
        sys.exit(1)


def _audit_store(ctx: click.Context) -> AuditStore:
    from service.flags.audit import AuditStore
    from service.store.events import create_engine

    return AuditStore(create_engine(settings_of(ctx).event_store_url))


@flags.command("validate")
@_dir_option
@click.pass_context
def flags_validate(ctx: click.Context, flags_dir: Path | None) -> None:
    """Check every flag file; print each problem with file, flag and field."""
    flag_set = _load(ctx, flags_dir)
    for flag in flag_set.flags.values():
        envs = ", ".join(
            f"{e.name}={'on' if e.enabled else 'off'}" for e in flag.environments.values()
        )
        click.echo(f"ok  {flag.name}  default={flag.default_bento}  {envs}  ({flag.file})")


@flags.command("plan")
@_dir_option
@_server_options
@click.option("--detailed-exitcode", is_flag=True, help="Exit 2 when there are changes (0: none).")
@click.pass_context
def flags_plan(
    ctx: click.Context,
    flags_dir: Path | None,
    url: str | None,
    project: str,
    detailed_exitcode: bool,
) -> None:
    """Show what `apply` would change on the server, and any drift; changes nothing."""
    from service.flags.sync import plan_against
    from service.flags.unleash_admin import admin_from_environment

    flag_set = _load(ctx, flags_dir)
    with admin_from_environment(url) as admin:
        plan, _ = plan_against(admin, flag_set, _audit_store(ctx), project)
    click.echo(plan.render())
    if detailed_exitcode and plan.changes:
        sys.exit(2)


@flags.command("apply")
@_dir_option
@_server_options
@click.option(
    "--overwrite-drift",
    "--force",
    "force",
    is_flag=True,
    help="Apply even over changes made on the server since the last apply.",
)
@click.option("--reason", default="", help="Why (recorded in the audit trail).")
@click.option("--actor", default=None, help="Who (default: ROLLOUT_ACTOR or the login name).")
@click.pass_context
def flags_apply(
    ctx: click.Context,
    flags_dir: Path | None,
    url: str | None,
    project: str,
    force: bool,
    reason: str,
    actor: str | None,
) -> None:
    """Make the server match flags/; refuses to overwrite drift without --overwrite-drift."""
    from service.flags.sync import Who, apply
    from service.flags.unleash_admin import admin_from_environment

    flag_set = _load(ctx, flags_dir)
    who = Who(actor or os.environ.get("ROLLOUT_ACTOR") or getpass.getuser(), reason)
    with admin_from_environment(url) as admin:
        plan = apply(admin, flag_set, _audit_store(ctx), who, force=force, project=project)
    click.echo(
        plan.render().replace(
            "no changes: the server matches", "no change: the server already matched"
        )
    )
    if plan.changes:
        click.echo(f"applied {len(plan.changes)} change(s) to {admin.url}")


@flags.command("export")
@_server_options
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder to write the flag files to (default: flags/).",
)
@click.option("--flag", "names", multiple=True, help="Only this flag (repeatable).")
@click.pass_context
def flags_export(
    ctx: click.Context, url: str | None, project: str, out: Path | None, names: tuple[str, ...]
) -> None:
    """Write the server's model flags (and context fields, segments) as flag files."""
    from service.flags.export import export_context, export_flag, model_flags
    from service.flags.server_state import read_all_flags
    from service.flags.unleash_admin import admin_from_environment
    from service.registry.stable import stable_versions

    directory = out or settings_of(ctx).flags_dir
    with admin_from_environment(url) as admin:
        server = read_all_flags(admin, project)
    docs = {n: d for n, d in model_flags(server).items() if not names or n in names}
    missing = set(names) - set(docs)
    if missing:
        raise click.ClickException(
            f"no model flag named {', '.join(sorted(missing))} on {server.url}"
        )
    directory.mkdir(parents=True, exist_ok=True)
    files = _flag_files(directory)
    for name, doc in docs.items():
        path, existing = files.get(name, (directory / f"{name}.yaml", {}))
        # Fields Unleash does not hold (e.g. `shadows`) stay as the file had them.
        local = {key: value for key, value in existing.items() if key not in doc}
        stable = stable_versions(settings_of(ctx).bentos_dir)
        path.write_text(export_flag({**doc, **local}, stable), encoding="utf-8")
        click.echo(f"wrote {path}")
    (directory / "context.yaml").write_text(export_context(server), encoding="utf-8")
    click.echo(f"wrote {directory / 'context.yaml'}")


def _flag_files(directory: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Which file holds which flag already (and what it says), so export rewrites that file."""
    import yaml

    files = {}
    for path in directory.glob("*.y*ml"):
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, OSError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("flag"), str):
            files[doc["flag"]] = (path, doc)
    return files


@flags.command("lint")
@_dir_option
@_server_options
@click.option(
    "--environment",
    default=None,
    help="Unleash environment to check (default: ROLLOUT_ENVIRONMENT, development).",
)
@click.option("--embedded", is_flag=True, help="Check flags/ compiled, even with a server set.")
@click.pass_context
def flags_lint(
    ctx: click.Context,
    flags_dir: Path | None,
    url: str | None,
    project: str,
    environment: str | None,
    embedded: bool,
) -> None:
    """Every routing mistake in the flags, with what to change in the Unleash UI; exit 1 if any.

    Reads the live server when one is set (--url, UNLEASH_ADMIN_URL or UNLEASH_URL) with the
    admin token (UNLEASH_ADMIN_TOKEN[_FILE]) or else the backend token (UNLEASH_API_TOKEN[_FILE]);
    otherwise flags/ as embedded mode compiles it. Tags are checked against the catalog the
    selector routes to (ROLLOUT_BENTO_URLS and the catalog file), or the declared versions when
    there is no catalog; stable versions come from bentos/*/versions.yaml.
    """
    from service.flags.routes import flag_routes, lint
    from service.registry.stable import stable_versions

    settings = settings_of(ctx)
    env = environment or settings.environment
    features, source = _lint_features(ctx, flags_dir, url, project, env, embedded)
    known, where = _servable_bentos(settings)
    stable = stable_versions(settings.bentos_dir)
    problems = [p for f in features for p in lint(flag_routes(f), env, known, stable)]
    for problem in problems:
        click.echo(problem.line())
    flagged = {p.flag for p in problems}
    click.echo(
        f"{len(problems)} problem(s) in {len(flagged)} of {len(features)} flag(s) "
        f"({source}, environment {env}; bentos from {where})"
    )
    if problems:
        sys.exit(1)


def _lint_features(
    ctx: click.Context,
    flags_dir: Path | None,
    url: str | None,
    project: str,
    environment: str,
    embedded: bool,
) -> tuple[list[dict[str, Any]], str]:
    """The flags to lint, in client-features shape, and where they came from."""
    from service.flags.client_api import client_features as read_client_api
    from service.flags.client_features import client_features
    from service.flags.definitions import load_flags
    from service.flags.routes import admin_feature
    from service.flags.server_state import read_all_flags
    from service.flags.unleash_admin import admin_from_environment, token_from_environment

    settings = settings_of(ctx)
    server = url or os.environ.get("UNLEASH_ADMIN_URL") or settings.unleash_url
    if embedded or not server:
        directory = flags_dir or settings.flags_dir
        flag_set = load_flags(directory)
        return client_features(flag_set, environment)["features"], f"embedded, {directory}"
    if token_from_environment("UNLEASH_ADMIN_TOKEN"):
        with admin_from_environment(server) as admin:
            state = read_all_flags(admin, project)
        found = [admin_feature(f, environment) for f in state.features.values() if f is not None]
        return found, f"{state.url}, admin API"
    if not settings.unleash_token:
        raise click.ClickException(
            "no Unleash token: set UNLEASH_ADMIN_TOKEN(_FILE) or UNLEASH_API_TOKEN(_FILE), "
            "or pass --embedded to check flags/"
        )
    body = read_client_api(server, settings.unleash_token)
    return body["features"], f"{server.rstrip('/')}, client API"


def _servable_bentos(settings: Any) -> tuple[set[str], str]:
    """The tags the selector can route to: its catalog, else the declared versions."""
    from service.registry.versions import declared_bentos
    from service.serving.catalog import BentoCatalog

    catalog = BentoCatalog.parse(settings.bento_urls or "").endpoints
    catalog = {**BentoCatalog.load(settings.catalog_file).endpoints, **catalog}
    if catalog:
        return set(catalog), "the catalog"
    return set(declared_bentos(settings.bentos_dir)), "bentos/*/versions.yaml"
