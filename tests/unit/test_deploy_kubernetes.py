"""`rollout deploy kubernetes`: manifests from flags/ and the registry, checked offline against
the Kubernetes OpenAPI schemas (kubernetes-validate), and refused for ungated bentos."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from service.cli import main
from service.config import Settings
from service.deploy.kubernetes import (
    ClusterOptions,
    ManifestInvalid,
    kustomizations,
    render,
    validate,
    write,
)
from service.deploy.targets import BentoTarget, Targets, deployment_targets
from service.errors import FlagDefinitionError
from service.registry.bentos import stored_bento
from service.registry.gate_checks import GateResult
from service.registry.gates import GateReport, store_report


def gated(settings: Settings, tag: str, passed: bool = True) -> None:
    bento = stored_bento(tag, settings)
    result = GateResult("auc" if not passed else "size", passed, "checked")
    report = GateReport(tag, passed, bento.labels["model_hash"], "d", {}, "now", [result])
    store_report(bento, report)


@pytest.fixture
def registry(settings: Settings, store_files: Callable[..., Path]) -> Settings:
    """churn:v1 and churn:v2 built and gated (the repo's flags/ route to both)."""
    for tag in ("churn:v1", "churn:v2"):
        store_files(tag)
        gated(settings, tag)
    return settings


def rollout(settings: Settings, *args: str) -> Result:
    return CliRunner().invoke(main, list(args), obj={"settings": settings})


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def by_kind(out: Path, kind: str) -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted((out / "base").glob("*.yaml")):
        for doc in docs(path):
            if doc.get("kind") == kind:
                found[doc["metadata"]["name"]] = doc
    return found


def test_renders_validated_manifests_for_every_routable_version(
    registry: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "k8s"
    result = rollout(
        registry, "deploy", "kubernetes", "--out", str(out), "--replicas", "4", "--retention", "30d"
    )
    assert result.exit_code == 0, result.output
    assert "2 bento version(s), 1 guard(s); validated against Kubernetes 1.35.0" in result.output
    deployments = by_kind(out, "Deployment")
    assert set(deployments) == {"selector", "bento-churn-v1", "bento-churn-v2", "guard-churn-model"}
    assert set(by_kind(out, "Service")) == {"selector", "bento-churn-v1", "bento-churn-v2"}
    selector = deployments["selector"]["spec"]
    assert selector["replicas"] == 4
    container = selector["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"]["cpu"] == "500m"
    assert container["args"][0] == "serve"
    assert deployments["guard-churn-model"]["spec"]["replicas"] == 1
    assert deployments["guard-churn-model"]["spec"]["template"]["spec"]["containers"][0]["args"][
        :3
    ] == ["guard", "run", "churn-model"]
    bento = deployments["bento-churn-v2"]["spec"]["template"]["spec"]["containers"][0]
    assert bento["image"] == "churn:v2"
    hpa = by_kind(out, "HorizontalPodAutoscaler")["selector"]["spec"]
    assert hpa["minReplicas"] == 4 and hpa["metrics"][0]["resource"]["name"] == "cpu"
    assert by_kind(out, "PodDisruptionBudget")["selector"]["spec"]["maxUnavailable"] == 1
    init = selector["template"]["spec"]["initContainers"][0]
    assert init["args"] == ["events", "migrate"]  # the schema is current before serving
    prune = by_kind(out, "CronJob")["events-prune"]["spec"]["jobTemplate"]["spec"]["template"]
    assert prune["spec"]["containers"][0]["args"] == ["events", "prune", "--older-than", "30d"]
    config = by_kind(out, "ConfigMap")["rollout-config"]["data"]
    assert config["ROLLOUT_BENTO_URLS"] == (
        "churn:v1=http://bento-churn-v1:3000,churn:v2=http://bento-churn-v2:3000"
    )


def test_secrets_are_referenced_never_rendered(registry: Settings, tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    assert rollout(registry, "deploy", "kubernetes", "--out", str(out)).exit_code == 0
    assert by_kind(out, "Secret") == {}
    env = by_kind(out, "Deployment")["selector"]["spec"]["template"]["spec"]["containers"][0]["env"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in env}
    assert refs["UNLEASH_API_TOKEN"] == {"name": "rollout-secrets", "key": "unleash-backend-token"}
    assert refs["ROLLOUT_DATABASE_URL"]["key"] == "database-url"
    assert all("value" not in e for e in env)


def test_overlays_build_on_the_base(registry: Settings, tmp_path: Path) -> None:
    out = tmp_path / "k8s"
    assert rollout(registry, "deploy", "kubernetes", "--out", str(out)).exit_code == 0
    base = docs(out / "base" / "kustomization.yaml")[0]
    assert sorted(base["resources"]) == sorted(
        p.name for p in (out / "base").glob("*.yaml") if p.name != "kustomization.yaml"
    )
    for overlay, namespace in (("dev", "model-rollout-dev"), ("prod", "model-rollout")):
        doc = docs(out / "overlays" / overlay / "kustomization.yaml")[0]
        assert doc["resources"] == ["../../base"] and doc["namespace"] == namespace


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("failed", "bento churn:v2 failed its quality gate 'auc' and may not be deployed"),
        ("not-built", "bento churn:v2 is not in the registry"),
        ("not-gated", "bento churn:v2 was never gated: rollout models gate churn:v2"),
    ],
)
def test_a_flag_naming_a_bento_that_may_not_serve_is_refused(
    settings: Settings, store_files: Callable[..., Path], tmp_path: Path, setup: str, message: str
) -> None:
    store_files("churn:v1")
    gated(settings, "churn:v1")
    if setup != "not-built":
        store_files("churn:v2")
    if setup == "failed":
        gated(settings, "churn:v2", passed=False)
    out = tmp_path / "k8s"
    result = rollout(settings, "deploy", "kubernetes", "--out", str(out))
    assert result.exit_code == 1
    flag_file = str(settings.flags_dir / "churn-model.yaml")
    for field in ("variants.treatment", "variants.canary"):
        assert f"{flag_file}: flag 'churn-model': {field}: {message}" in result.output
    assert result.output.startswith("error: ")
    assert "variants.control" not in result.output  # churn:v1 is fine
    assert not out.exists()


def test_a_bento_no_version_declares_is_refused_with_file_flag_field(
    registry: Settings, flags_dir: Callable[[str, str], Path], tmp_path: Path
) -> None:
    folder = flags_dir(
        "other.yaml",
        """
        flag: other
        default: churn:v1
        variants: {canary: churn:v9}
        environments:
          development:
            enabled: true
            strategies: [{name: all, rollout: 100, variants: {canary: 100}}]
        """,
    )
    settings = Settings.load({**registry.__dict__, "flags_dir": folder})
    with pytest.raises(FlagDefinitionError) as caught:
        deployment_targets(settings)
    assert "other.yaml: flag 'other': variants.canary" in caught.value.message
    assert "churn:v9" in caught.value.message


def test_a_manifest_failing_the_schema_fails_and_writes_nothing(tmp_path: Path) -> None:
    targets = Targets((BentoTarget("churn:v1"),), ("churn-model",))
    files = render(targets, ClusterOptions())
    validate(files)  # as rendered: valid
    container = files["selector.yaml"][0]["spec"]["template"]["spec"]["containers"][0]
    container["ports"][0]["containerPort"] = "eight-thousand"
    files["selector.yaml"][1]["spec"]["portz"] = []  # the Service; strict: an unknown field
    with pytest.raises(ManifestInvalid) as caught:
        validate(files)
    message = caught.value.message
    assert "selector.yaml: Deployment selector: spec/template/spec/containers/0/ports/0" in message
    assert "selector.yaml: Service selector:" in message and "portz" in message

    def broken(rendered: dict[str, list[dict[str, Any]]]) -> None:
        rendered["selector.yaml"][0]["spec"]["replicas"] = "three"
        validate(rendered)

    with pytest.raises(ManifestInvalid, match="spec/replicas"):
        write(targets, ClusterOptions(), tmp_path / "out", broken)
    assert not (tmp_path / "out").exists()


def test_each_bento_is_its_own_deployment_with_a_dns_name() -> None:
    target = BentoTarget("churn:v2")
    assert (target.name, target.url) == ("bento-churn-v2", "http://bento-churn-v2:3000")
    files = render(Targets((target,), ()), ClusterOptions(bento_registry="registry.example/ml/"))
    deployment = files["bento-churn-v2.yaml"][0]
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example/ml/churn:v2"
    assert set(kustomizations(files, ClusterOptions())) == {
        "base/kustomization.yaml",
        "overlays/dev/kustomization.yaml",
        "overlays/prod/kustomization.yaml",
    }
