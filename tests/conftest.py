"""Shared fixtures: settings on a temporary data folder, flag files written on the fly."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from service.config import Settings

# Real bentos (built once per session, served with bentoml serve) for the integration tests,
# and a deliberately bad one (churn:v3, never declared) for the rollout controller's.
pytest_plugins = ["integration.bento_fixtures", "integration.bad_bento"]

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings that write nothing outside tmp_path and ignore the caller's environment.

    bentos/ is a copy: a ship or `rollout models promote` moves the stable version in it.
    """
    shutil.copytree(
        REPO / "bentos", tmp_path / "settings-bentos", ignore=shutil.ignore_patterns("__pycache__")
    )
    return Settings.load(
        {
            "bentos_dir": tmp_path / "settings-bentos",
            "data_dir": tmp_path / "data",
            "reports_dir": tmp_path / "reports",
            "unleash_url": None,
            "unleash_token": None,
            "database_url": None,
            "bento_urls": None,
        }
    )


@pytest.fixture
def flags_dir(tmp_path: Path):
    """A function writing flag files into a fresh folder (with the repo's context.yaml)."""
    folder = tmp_path / "flags"
    folder.mkdir()
    (folder / "context.yaml").write_text((REPO / "flags" / "context.yaml").read_text())

    def write(name: str, text: str) -> Path:
        (folder / name).write_text(textwrap.dedent(text))
        return folder

    return write
