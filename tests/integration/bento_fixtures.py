"""Real bentos for the integration tests: every declared version built, and served.

`built_bentos` builds all of bentos/*/versions.yaml (train, save, `bentoml build`) into a
BentoML store in a temporary folder, once per session (~10-15 s on 2 cores); `bento_servers`
runs a real `bentoml serve` per bento on free ports and stops them at the end of the session.
BentoML is a project dependency, so nothing here can be "not installed": a failed build or
start fails the test with BentoML's own output.

Registered as a plugin from tests/conftest.py:  pytest_plugins = ["integration.bento_fixtures"]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.config import Settings
from service.errors import RolloutError
from service.processes import ProcessFailed
from service.registry.bento_process import BentoProcess
from service.registry.build import BuiltBento, build_all

SERVE_TIMEOUT = 90.0


@dataclass(frozen=True)
class BuiltBentos:
    """The bentos built for the session: their settings (store location) and build results."""

    settings: Settings
    built: dict[str, BuiltBento]
    seconds: float


@pytest.fixture(scope="session")
def built_bentos(tmp_path_factory: pytest.TempPathFactory) -> BuiltBentos:
    """Every declared bento (`churn:v1`, `churn:v2`, ...) built into a temporary BentoML store."""
    settings = Settings.load({"data_dir": tmp_path_factory.mktemp("bento-data")})
    started = time.perf_counter()
    try:
        built = {b.tag: b for b in build_all(settings)}
    except RolloutError as exc:
        pytest.fail(f"building the bentos failed: {exc}", pytrace=False)
    return BuiltBentos(settings, built, time.perf_counter() - started)


@pytest.fixture(scope="session")
def bento_servers(built_bentos: BuiltBentos) -> Iterator[dict[str, BentoProcess]]:
    """`bentoml serve <tag>` for every built bento, by tag; ready when the fixture returns."""
    with ExitStack() as stack:
        servers: dict[str, BentoProcess] = {}
        for tag in built_bentos.built:
            servers[tag] = stack.enter_context(BentoProcess(tag, settings=built_bentos.settings))
        # Started together, then waited for: the servers boot in parallel.
        try:
            for server in servers.values():
                server.wait_ready(SERVE_TIMEOUT)
        except ProcessFailed as exc:
            pytest.fail(str(exc), pytrace=False)
        yield servers


@pytest.fixture(scope="session")
def bento_urls(bento_servers: dict[str, BentoProcess]) -> str:
    """The served bentos in the `ROLLOUT_BENTO_URLS` format: `churn:v1=http://...,churn:v2=...`."""
    return ",".join(f"{tag}={server.url}" for tag, server in bento_servers.items())


# ---------------------------------------------------------------- a store written by hand

# The schema BentoML records for the churn service (bento.yaml `schema`), cut to what the
# schema gate compares: a list of records in, a list of predictions out.
CHURN_SCHEMA: dict[str, Any] = {
    "name": "churn",
    "type": "service",
    "routes": [
        {
            "name": "predict",
            "route": "/predict",
            "input": {
                "type": "object",
                "required": ["inputs"],
                "properties": {
                    "inputs": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["tenure_months", "region"],
                            "properties": {
                                "tenure_months": {"type": "integer", "minimum": 0},
                                "region": {"type": "string", "enum": ["eu", "us", "apac"]},
                            },
                        },
                    }
                },
            },
            "output": {
                "type": "object",
                "properties": {
                    "predictions": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "churn_probability": {"type": "number"},
                                "offer": {"type": "boolean"},
                            },
                        },
                    },
                    "bento": {"type": "string"},
                },
            },
        }
    ],
}


def churn_metrics(auc: float, brier: float = 0.15) -> dict[str, Any]:
    """Offline metrics in the shape train.py records, the same in every slice."""
    values = {"auc": auc, "brier": brier, "accuracy": 0.8, "log_loss": 0.45, "rows": 100}
    return {
        "overall": values,
        "by_segment": {s: values for s in ("consumer", "smb", "enterprise")},
        "by_region": {r: values for r in ("eu", "us", "apac")},
    }


@pytest.fixture
def store_files(settings: Settings) -> Callable[..., Path]:
    """Write a bento and its model into `settings`' store as BentoML lays them out.

    For unit tests of the code that reads the store (registry, cards, gates, rollback): the
    same files BentoML writes, with only the fields that code reads; no BentoML involved.
    """

    def write(
        tag: str,
        metrics: dict[str, Any] | None = None,
        schema: dict[str, Any] | None = None,
        created: str = "2026-11-25T10:00:00+00:00",
        **metadata: Any,
    ) -> Path:
        family, version = tag.split(":")
        home = settings.bentoml_home
        labels = {
            "family": family,
            "version": version,
            "model_hash": f"hash-{version}",
            "snapshot": f"snap-{version}",
            "data_fingerprint": f"fp-{version}",
        }
        model_dir = home / "models" / f"{family}-model" / version
        model_dir.mkdir(parents=True)
        model_meta = {
            "metrics": metrics or churn_metrics(0.7),
            "change": f"{version} change",
            "kind": "logistic_regression",
            "params": {"C": 1.0},
            **metadata,
        }
        (model_dir / "model.yaml").write_text(
            yaml.safe_dump({"labels": labels, "metadata": model_meta})
        )
        bento_dir = home / "bentos" / family / version
        bento_dir.mkdir(parents=True)
        bento = {
            "creation_time": created,
            "labels": labels,
            "services": [{"models": [{"tag": f"{family}-model:{version}"}]}],
            "schema": schema or CHURN_SCHEMA,
        }
        (bento_dir / "bento.yaml").write_text(yaml.safe_dump(bento))
        return bento_dir

    return write
