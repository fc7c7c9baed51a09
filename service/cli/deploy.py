"""`rollout deploy kubernetes`: manifests rendered from flags/ and the registry."""

from __future__ import annotations

from pathlib import Path

import click

from service.cli.base import main, settings_of


@main.group()
def deploy() -> None:
    """Deployment descriptions rendered from flags/ and the registry."""


@deploy.command("kubernetes")
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder to write base/ and overlays/{dev,prod}/ into (kustomize-ready).",
)
@click.option("--image", default="model-rollout:0.1.0", show_default=True, help="selector image")
@click.option(
    "--bento-registry",
    default="",
    help="Prefix of the bento images (`bentoml containerize churn:v2` tags churn:v2).",
)
@click.option("--replicas", default=3, show_default=True, type=click.IntRange(1))
@click.option("--max-replicas", default=10, show_default=True, type=click.IntRange(1))
@click.option("--environment", default="production", show_default=True)
@click.option(
    "--unleash-url",
    default="http://unleash:4242/api",
    show_default=True,
    help="What the selectors poll: Unleash, or Unleash Edge in front of it.",
)
@click.option("--unleash-admin-url", default="http://unleash:4242", show_default=True)
@click.option("--secret", default="rollout-secrets", show_default=True, help="Secret name")
@click.option(
    "--retention", default="90d", show_default=True, help="Events older than this are pruned daily."
)
@click.option("--kubernetes-version", default="1.35.0", show_default=True)
@click.pass_context
def deploy_kubernetes(
    ctx: click.Context,
    out: Path,
    image: str,
    bento_registry: str,
    replicas: int,
    max_replicas: int,
    environment: str,
    unleash_url: str,
    unleash_admin_url: str,
    secret: str,
    retention: str,
    kubernetes_version: str,
) -> None:
    """Render the selector, one Deployment per routable bento version, and the guards.

    Refuses a flag naming a bento that is not in the registry or failed its gates, and
    writes nothing when a manifest fails the Kubernetes schema.
    """
    from service.deploy.kubernetes import ClusterOptions, validate, write
    from service.deploy.targets import deployment_targets
    from service.store.retention import parse_age

    parse_age(retention, "--retention")  # a bad age fails here, not in the cluster at 03:17

    targets = deployment_targets(settings_of(ctx))
    options = ClusterOptions(
        image=image,
        bento_registry=bento_registry,
        replicas=replicas,
        max_replicas=max_replicas,
        environment=environment,
        unleash_url=unleash_url,
        unleash_admin_url=unleash_admin_url,
        secret=secret,
        retention=retention,
    )
    written = write(targets, options, out, lambda files: validate(files, kubernetes_version))
    for path in written:
        click.echo(str(path))
    click.echo(
        f"{len(targets.bentos)} bento version(s), {len(targets.guarded_flags)} guard(s); "
        f"validated against Kubernetes {kubernetes_version}. "
        f"Apply: kubectl apply -k {out}/overlays/prod"
    )
