"""Reproducible bentos: the build pins the training versions, the `lock` gate checks the result."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from service.config import Settings
from service.registry.bentos import stored_bento
from service.registry.gates import check_lock
from service.registry.lock import LockError, lock_problems, pinned_bentofile

REPO = Path(__file__).resolve().parents[2]
SKLEARN = importlib.metadata.version("scikit-learn")


def bentofile(tmp_path: Path, packages: list[str], lock: bool = True) -> Path:
    path = tmp_path / "bentofile.yaml"
    doc = {"service": "service:Churn", "python": {"packages": packages, "lock_packages": lock}}
    path.write_text(yaml.safe_dump(doc))
    return path


def test_the_repo_bentofile_pins_every_package_to_the_training_environment() -> None:
    doc, pins = pinned_bentofile(REPO / "bentos" / "churn" / "bentofile.yaml")
    assert pins["scikit-learn"] == SKLEARN
    assert pins["pandas"] == importlib.metadata.version("pandas")
    assert f"scikit-learn=={SKLEARN}" in doc["python"]["packages"]
    assert all("==" in p for p in doc["python"]["packages"])
    assert doc["python"]["lock_packages"] is True
    assert doc["service"] == "service:Churn"  # the rest of the file is kept


def test_an_exact_pin_equal_to_the_environment_is_kept(tmp_path: Path) -> None:
    _, pins = pinned_bentofile(bentofile(tmp_path, [f"scikit-learn=={SKLEARN}"]))
    assert pins == {"scikit-learn": SKLEARN}


@pytest.mark.parametrize(
    ("packages", "lock", "message"),
    [
        (["scikit-learn==0.0.1"], True, "pins scikit-learn==0.0.1 but the training environment"),
        (["no-such-package-xyz"], True, "no-such-package-xyz is not installed"),
        (["scikit-learn>=1.5"], True, "must be a package name or name==version"),
        (["scikit-learn"], False, "python.lock_packages: must be true"),
    ],
    ids=["other-version", "not-installed", "range", "not-locked"],
)
def test_a_bentofile_that_cannot_be_pinned_is_refused_with_file_and_field(
    tmp_path: Path, packages: list[str], lock: bool, message: str
) -> None:
    path = bentofile(tmp_path, packages, lock)
    with pytest.raises(LockError) as caught:
        pinned_bentofile(path)
    assert message in caught.value.message
    assert str(path) in caught.value.message


def lock_env(bento_dir: Path, given: str, resolved: str, sklearn: str | None = SKLEARN) -> None:
    env = bento_dir / "env" / "python"
    env.mkdir(parents=True)
    (env / "requirements.in").write_text(given)
    (env / "requirements.txt").write_text(resolved)
    model = bento_dir.parents[2] / "models" / "churn-model" / bento_dir.name / "model.yaml"
    doc = yaml.safe_load(model.read_text())
    if sklearn:
        doc["context"] = {"framework_versions": {"scikit-learn": sklearn}}
    model.write_text(yaml.safe_dump(doc))


LOCKED = f"--index-url https://pypi.org/simple\n\njoblib==1.5.0\nscikit-learn=={SKLEARN}\n"


@pytest.mark.parametrize(
    ("given", "resolved", "trained", "problem"),
    [
        (f"scikit-learn=={SKLEARN}\n", LOCKED, SKLEARN, None),
        (f"scikit-learn=={SKLEARN}\n", f"scikit-learn=={SKLEARN}\n", SKLEARN, "no env/python"),
        ("scikit-learn\n", "joblib==1.5.0\nscikit-learn\n", SKLEARN, "no env/python"),
        (f"scikit-learn=={SKLEARN}\n", LOCKED, "1.0.2", f"trained with 1.0.2, locked to {SKLEARN}"),
        ("scikit-learn\n", "joblib==1.5.0\n", SKLEARN, "locked to nothing"),
        (f"scikit-learn=={SKLEARN}\n", LOCKED, None, "records no framework version"),
    ],
    ids=["locked", "not-locked", "unpinned-line", "other-version", "missing", "no-record"],
)
def test_the_lock_gate(
    settings: Settings,
    store_files: Callable[..., Path],
    given: str,
    resolved: str,
    trained: str | None,
    problem: str | None,
) -> None:
    lock_env(store_files("churn:v1"), given, resolved, trained)
    bento = stored_bento("churn:v1", settings)
    result = check_lock(bento)
    assert result.name == "lock"
    assert result.passed is (problem is None)
    if problem:
        assert problem in result.detail


def test_a_bento_built_without_an_environment_is_not_locked(
    settings: Settings, store_files: Callable[..., Path]
) -> None:
    store_files("churn:v1")
    assert "requirements.txt" in lock_problems(stored_bento("churn:v1", settings))[0]
