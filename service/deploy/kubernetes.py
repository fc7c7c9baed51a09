"""`rollout deploy kubernetes`: plain manifests, kustomize-ready, from flags/ and the registry.

The base holds the selector (Deployment, Service, PodDisruptionBudget, HorizontalPodAutoscaler
on CPU), one Deployment and Service per bento version a flag can route to (a new version is a
new Deployment; a rollback moves a flag, never rebuilds an image), one guard per ramped flag
(one replica: the lease in the database makes sure only one acts even when two run), and the
configuration. Secrets are referenced by name, never rendered: the values live in the cluster.
Overlays for dev and prod change replicas, namespace and image tags.

Every object is checked against the Kubernetes OpenAPI schemas (kubernetes-validate, offline,
strict: an unknown field fails) before a file is written; a failure writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from service.deploy.targets import BENTO_PORT, BentoTarget, Targets
from service.errors import RolloutError

try:  # the [deploy] / [test] extra: 100 MB of schemas the selector image does not need
    import kubernetes_validate
except ImportError:  # pragma: no cover - exercised only without the extra
    kubernetes_validate = None

KUBERNETES_VERSION = "1.35.0"
SELECTOR_PORT = 8000
DATA_DIR = "/var/lib/rollout"
PART_OF = "model-rollout"
Manifest = dict[str, Any]


class ManifestInvalid(RolloutError):
    """A rendered object fails the Kubernetes schema; nothing was written."""

    code = "manifest_invalid"


@dataclass(frozen=True)
class ClusterOptions:
    """What the cluster needs beyond flags/ and the registry: images, sizes, where Unleash is."""

    image: str = "model-rollout:0.1.0"  # the selector/guard image (the repo's Dockerfile)
    bento_registry: str = ""  # prefix of the images `bentoml containerize family:version` made
    replicas: int = 3
    max_replicas: int = 10
    environment: str = "production"
    unleash_url: str = "http://unleash:4242/api"  # or Unleash Edge: http://unleash-edge:3063/api
    unleash_admin_url: str = "http://unleash:4242"  # the guard writes to Unleash itself
    refresh_interval: int = 5
    guard_interval: float = 30.0
    secret: str = "rollout-secrets"  # created by hand or by a secrets operator; never rendered
    retention: str = "90d"  # `rollout events prune --older-than`, daily

    def bento_image(self, bento: BentoTarget) -> str:
        prefix = self.bento_registry.rstrip("/")
        return f"{prefix}/{bento.tag}" if prefix else bento.tag


# ---------------------------------------------------------------- small builders


def _labels(component: str, name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
    }


def _meta(name: str, component: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"name": name, "labels": {**_labels(component, name), **(labels or {})}}


def _secret_env(name: str, secret: str, key: str, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


def _resources(cpu: str, memory: str, memory_limit: str) -> dict[str, Any]:
    # No CPU limit: throttling a latency-bound server hurts more than it protects; the HPA
    # scales on CPU requests instead.
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory_limit}}


def _probe(path: str, port: int, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


_RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}


def _pod_security(uid: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _deployment(
    name: str, component: str, replicas: int, pod: dict[str, Any], strategy: dict[str, Any]
) -> Manifest:
    selector = {"app.kubernetes.io/name": name, "app.kubernetes.io/component": component}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, component),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 5,
            "strategy": strategy,
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": _labels(component, name)}, "spec": pod},
        },
    }


def _service(name: str, component: str, port: int) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, component),
        "spec": {
            "type": "ClusterIP",
            "selector": {"app.kubernetes.io/name": name, "app.kubernetes.io/component": component},
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


# ---------------------------------------------------------------- the objects


def config_map(targets: Targets, options: ClusterOptions) -> Manifest:
    """Everything the selector and the guard read that is not a secret."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta("rollout-config", "config"),
        "data": {
            "ROLLOUT_ENVIRONMENT": options.environment,
            "ROLLOUT_REFRESH_INTERVAL": str(options.refresh_interval),
            "ROLLOUT_BENTO_URLS": targets.catalog,
            "UNLEASH_URL": options.unleash_url,
            "UNLEASH_ADMIN_URL": options.unleash_admin_url,
        },
    }


def _rollout_container(
    name: str, args: list[str], options: ClusterOptions, secrets: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "name": name,
        "image": options.image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "envFrom": [{"configMapRef": {"name": "rollout-config"}}],
        "env": [_secret_env("ROLLOUT_DATABASE_URL", options.secret, "database-url"), *secrets],
        "securityContext": {**_RESTRICTED, "readOnlyRootFilesystem": True},
        "volumeMounts": [
            {"name": "data", "mountPath": DATA_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


_SCRATCH = [{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {"medium": "Memory"}}]


def selector_objects(options: ClusterOptions) -> list[Manifest]:
    """The selector: N replicas behind a Service, kept available, scaled on CPU."""
    container = _rollout_container(
        "selector",
        ["serve", "--host", "0.0.0.0", "--port", str(SELECTOR_PORT), "--workers", "2"],
        options,
        [_secret_env("UNLEASH_API_TOKEN", options.secret, "unleash-backend-token")],
    )
    container |= {
        "ports": [{"name": "http", "containerPort": SELECTOR_PORT, "protocol": "TCP"}],
        "readinessProbe": _probe("/readyz", SELECTOR_PORT, period=5, failures=2),
        "livenessProbe": _probe("/healthz", SELECTOR_PORT, period=10, failures=3),
        "resources": _resources("500m", "512Mi", "1Gi"),
    }
    # Every pod brings the schema up to date before serving: idempotent, and one migrator at a
    # time (an advisory lock), so a rollout of many replicas migrates once.
    migrate = _rollout_container("migrate", ["events", "migrate"], options, [])
    migrate["resources"] = _resources("100m", "256Mi", "512Mi")
    pod = {
        "securityContext": _pod_security(10001),
        "initContainers": [migrate],
        # `rollout serve` drains in-flight requests on SIGTERM within 30 s; the endpoint is removed
        # from the Service first (readiness), so new requests go elsewhere.
        "terminationGracePeriodSeconds": 40,
        "containers": [container],
        "volumes": _SCRATCH,
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "selector"}},
            }
        ],
    }
    rolling = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    return [
        _deployment("selector", "selector", options.replicas, pod, rolling),
        _service("selector", "selector", SELECTOR_PORT),
        _disruption_budget("selector", "selector"),
        _autoscaler(options),
    ]


def _disruption_budget(name: str, component: str) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(name, component),
        "spec": {
            "maxUnavailable": 1,
            "selector": {
                "matchLabels": {
                    "app.kubernetes.io/name": name,
                    "app.kubernetes.io/component": component,
                }
            },
        },
    }


def _autoscaler(options: ClusterOptions) -> Manifest:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta("selector", "selector"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "selector"},
            "minReplicas": options.replicas,
            "maxReplicas": max(options.max_replicas, options.replicas),
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 70},
                    },
                }
            ],
        },
    }


def bento_objects(bento: BentoTarget, options: ClusterOptions) -> list[Manifest]:
    """One bento version: the containerized bento as its own Deployment and Service."""
    container = {
        "name": "bento",
        "image": options.bento_image(bento),
        "imagePullPolicy": "IfNotPresent",
        "args": [],  # the image's own entrypoint serves the bento it was built from
        "ports": [{"name": "http", "containerPort": BENTO_PORT, "protocol": "TCP"}],
        "env": [{"name": "BENTOML_DO_NOT_TRACK", "value": "true"}],
        "readinessProbe": _probe("/readyz", BENTO_PORT, period=5, failures=2),
        "livenessProbe": _probe("/livez", BENTO_PORT, period=10, failures=3),
        "resources": _resources("500m", "512Mi", "1Gi"),
        "securityContext": _RESTRICTED,
    }
    # bentoml containerize runs the bento as user `bentoml`, uid/gid 1034.
    pod = {
        "securityContext": _pod_security(1034),
        "terminationGracePeriodSeconds": 30,
        "containers": [container],
    }
    rolling = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    deployment = _deployment(bento.name, "bento", 2, pod, rolling)
    deployment["metadata"]["labels"]["rollout/bento"] = bento.tag.replace(":", "-")
    return [deployment, _service(bento.name, "bento", BENTO_PORT)]


def guard_objects(flag: str, options: ClusterOptions) -> list[Manifest]:
    """The guard of one flag: one replica, replaced (not surged) on update.

    Two guards at once are harmless (the lease lets one act, the other stands by), but a
    Recreate update keeps a single one in the common case.
    """
    name = f"guard-{flag}"
    container = _rollout_container(
        "guard",
        ["guard", "run", flag, "--interval", f"{options.guard_interval:g}"],
        options,
        [
            _secret_env("ROLLOUT_GUARD_TOKEN", options.secret, "guard-token", optional=True),
            _secret_env("UNLEASH_ADMIN_TOKEN", options.secret, "unleash-admin-token"),
        ],
    )
    container["resources"] = _resources("250m", "512Mi", "2Gi")  # it runs the A/B reports
    pod = {
        "securityContext": _pod_security(10001),
        "terminationGracePeriodSeconds": 30,
        "containers": [container],
        "volumes": _SCRATCH,
    }
    return [_deployment(name, "guard", 1, pod, {"type": "Recreate"})]


def retention_objects(options: ClusterOptions) -> list[Manifest]:
    """A daily CronJob pruning old events (whole monthly partitions on PostgreSQL)."""
    container = _rollout_container(
        "prune", ["events", "prune", "--older-than", options.retention], options, []
    )
    container["resources"] = _resources("100m", "256Mi", "512Mi")
    pod = {
        "securityContext": _pod_security(10001),
        "restartPolicy": "OnFailure",
        "containers": [container],
        "volumes": _SCRATCH,
    }
    job = {
        "backoffLimit": 3,
        "template": {"metadata": {"labels": _labels("retention", "events-prune")}, "spec": pod},
    }
    return [
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": _meta("events-prune", "retention"),
            "spec": {
                "schedule": "17 3 * * *",
                "concurrencyPolicy": "Forbid",
                "jobTemplate": {"spec": job},
            },
        }
    ]


# ---------------------------------------------------------------- files


def render(targets: Targets, options: ClusterOptions) -> dict[str, list[Manifest]]:
    """base/<file> -> its objects, in apply order."""
    files: dict[str, list[Manifest]] = {
        "config.yaml": [config_map(targets, options)],
        "selector.yaml": selector_objects(options),
        "events-prune.yaml": retention_objects(options),
    }
    for bento in targets.bentos:
        files[f"{bento.name}.yaml"] = bento_objects(bento, options)
    for flag in targets.guarded_flags:
        files[f"guard-{flag}.yaml"] = guard_objects(flag, options)
    return files


def kustomizations(files: Iterable[str], options: ClusterOptions) -> dict[str, Manifest]:
    """base/kustomization.yaml and the dev and prod overlays, by path under the output."""
    base = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "labels": [{"pairs": {"app.kubernetes.io/part-of": PART_OF}}],
        "resources": list(files),
    }
    return {
        "base/kustomization.yaml": base,
        "overlays/dev/kustomization.yaml": _overlay("model-rollout-dev", 1, 2, "development"),
        "overlays/prod/kustomization.yaml": _overlay(
            "model-rollout", options.replicas, options.max_replicas, "production"
        ),
    }


def _overlay(namespace: str, replicas: int, max_replicas: int, environment: str) -> Manifest:
    hpa = [
        {"op": "replace", "path": "/spec/minReplicas", "value": replicas},
        {"op": "replace", "path": "/spec/maxReplicas", "value": max(max_replicas, replicas)},
    ]
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": namespace,
        "resources": ["../../base"],
        "replicas": [{"name": "selector", "count": replicas}],
        "patches": [
            {"target": {"kind": "HorizontalPodAutoscaler", "name": "selector"}, "patch": _ops(hpa)},
            {
                "target": {"kind": "ConfigMap", "name": "rollout-config"},
                "patch": _ops(
                    [{"op": "replace", "path": "/data/ROLLOUT_ENVIRONMENT", "value": environment}]
                ),
            },
        ],
    }


def _ops(ops: list[dict[str, Any]]) -> str:
    return yaml.safe_dump(ops, sort_keys=False)


def validate(files: dict[str, list[Manifest]], version: str = KUBERNETES_VERSION) -> None:
    """Every object against the Kubernetes schemas of `version`; ManifestInvalid lists all."""
    if kubernetes_validate is None:
        raise ManifestInvalid(
            "schema validation needs kubernetes-validate: pip install 'model-rollout[deploy]'"
        )
    problems = []
    for path, objects in files.items():
        for obj in objects:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = "/".join(str(p) for p in exc.path) or "(top)"
                problems.append(f"{path}: {_name(obj)}: {where}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                problems.append(f"{path}: {_name(obj)}: {exc.message}")
    if problems:
        raise ManifestInvalid("manifests fail the Kubernetes schema:\n" + "\n".join(problems))


def _name(obj: Manifest) -> str:
    return f"{obj.get('kind')} {obj.get('metadata', {}).get('name')}"


def write(
    targets: Targets,
    options: ClusterOptions,
    out: Path,
    check: Callable[[dict[str, list[Manifest]]], None] = validate,
) -> list[Path]:
    """Render, validate, then write base/ and overlays/ under `out`; the paths written."""
    files = render(targets, options)
    check(files)  # before anything is written: a failed validation leaves `out` as it was
    written = []
    for name, objects in files.items():
        written.append(_dump(out / "base" / name, objects))
    for name, doc in kustomizations(files, options).items():
        written.append(_dump(out / name, [doc]))
    return written


def _dump(path: Path, docs: list[Manifest]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# Rendered by `rollout deploy kubernetes`; edit flags/ or the options, not this.\n"
    path.write_text(header + yaml.safe_dump_all(docs, sort_keys=False), encoding="utf-8")
    return path
