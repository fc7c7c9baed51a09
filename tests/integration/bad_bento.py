"""A deliberately bad model version, `churn:v3`, on a real `bentoml serve` (session-scoped).

For the progressive-rollout controller's tests: a canary that must be caught. Its model ranks
churn risk on monthly spend alone, and its offer threshold is above any score that model gives,
so it makes (almost) no retention offers: expected retention falls to the no-offer level, below
v1 and well below v2. Its `serving.inject_error_rate` fails 15% of predict calls with a 500.

It is never declared in bentos/churn/versions.yaml (the demo builds every declared version, and
gates would reject it): the fixture copies bentos/churn to a temporary folder, appends v3 to
the copy's versions.yaml, builds only v3 into a store of its own without gates, and serves it.

Registered as a plugin from tests/conftest.py:  pytest_plugins = [..., "integration.bad_bento"]
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from integration.bento_fixtures import SERVE_TIMEOUT

from service.config import Settings
from service.errors import RolloutError
from service.processes import ProcessFailed
from service.registry.bento_process import BentoProcess
from service.registry.build import build_all

REPO = Path(__file__).resolve().parents[2]
BAD_VERSION = "v3"
INJECTED_ERROR_RATE = 0.15
# Appended to the copy's `versions:` (the file's last key), at its indentation.
BAD_ENTRY = f"""
  - version: {BAD_VERSION}
    change: "Deliberately bad, for tests only: spend-only model, no offers, 15% injected 500s."
    model:
      kind: logistic_regression
      params: {{C: 1.0, max_iter: 1000}}
    features: [monthly_spend]
    serving:
      offer_threshold: 0.9   # spend alone never scores a user above ~0.23
      inject_error_rate: {INJECTED_ERROR_RATE}
"""


@dataclass(frozen=True)
class BadBento:
    """The served bad bento: its tag, base URL and settings (store and bentos folder)."""

    tag: str
    url: str
    settings: Settings


@pytest.fixture(scope="session")
def bad_bento(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BadBento]:
    """`churn:v3` built (train, save, `bentoml build`, no gates) and served; ready on return."""
    bentos_dir = tmp_path_factory.mktemp("bad-bentos")
    family_dir = bentos_dir / "churn"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "bentos" / "churn", family_dir, ignore=ignore)
    versions = family_dir / "versions.yaml"
    versions.write_text(versions.read_text(encoding="utf-8").rstrip("\n") + "\n" + BAD_ENTRY)
    data_dir = tmp_path_factory.mktemp("bad-bento-data")
    settings = Settings.load({"data_dir": data_dir, "bentos_dir": bentos_dir})
    try:
        [built] = build_all(settings, versions=[BAD_VERSION], gate=False)
    except RolloutError as exc:
        pytest.fail(f"building churn:{BAD_VERSION} failed: {exc}", pytrace=False)
    with BentoProcess(built.tag, settings=settings) as server:
        try:
            server.wait_ready(SERVE_TIMEOUT)
        except ProcessFailed as exc:
            pytest.fail(str(exc), pytrace=False)
        yield BadBento(built.tag, server.url, settings)
