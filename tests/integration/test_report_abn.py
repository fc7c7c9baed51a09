"""A/B/n and the group-sequential engine through the real `rollout report ab` (papermill, the
`model-rollout` kernel) on a temporary SQLite store and a copy of flags/ in embedded mode, then
`rollout decide apply` moving the arm the A/B/n decision names exactly one step."""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from service.cli import main
from service.config import Settings
from service.flags.arm_moves import arm_steps
from service.flags.definitions import load_flags
from service.flags.documents import flag_doc
from service.store.events import create_engine, exposures, outcomes

pytestmark = pytest.mark.integration
REPO = Path(__file__).parents[2]
RATES = {"control": 0.28, "treatment": 0.38, "b": 0.28}


def populate(url: str, users: int = 3_000, seed: int = 13) -> None:
    """The last two hours of a three-arm test: treatment converts 38%, b and control 28%."""
    rng = random.Random(seed)
    now = time.time()
    rows, results = [], []
    for n in range(users):
        arm = ("control", "treatment", "b")[n % 3]
        ts = now - rng.uniform(60, 7_200)
        rows.append(
            {
                "ts": ts, "request_id": f"abn-{n}", "flag": "churn-model",
                "environment": "development", "user_id": f"user-{n}", "variant": arm,
                "bento": "churn:v1" if arm == "control" else "churn:v2",
                "reason": "strategy_variant", "status": 200,
                "latency_ms": rng.gammavariate(4.0, 5.0), "shadow": False, "fallback": False,
            }
        )  # fmt: skip
        if rng.random() < RATES[arm]:
            results.append({"ts": ts + 30, "request_id": f"abn-{n}", "metric": "retained",
                            "value": 1.0})  # fmt: skip
    # The EU enterprise canary: its own strategy, so not randomized against the A/B arms.
    rows += [
        {**rows[0], "request_id": f"canary-{n}", "user_id": f"eu-{n}", "variant": "canary"}
        for n in range(30)
    ]
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(exposures.insert(), rows)
        conn.execute(outcomes.insert(), results)
    engine.dispose()


@pytest.fixture
def rollout(tmp_path, monkeypatch):
    for name in ("UNLEASH_URL", "UNLEASH_ADMIN_URL", "ROLLOUT_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)
    flags = tmp_path / "flags"
    shutil.copytree(REPO / "flags", flags)
    path = flags / "churn-model.yaml"
    document = yaml.safe_load(path.read_text())
    document["variants"]["b"] = "churn:v2"  # a third arm in the A/B strategy
    document["environments"]["development"]["strategies"][1].update(
        rollout=60, variants={"control": 34, "treatment": 33, "b": 33}
    )
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    url = f"sqlite:///{tmp_path / 'events.db'}"
    populate(url)
    settings = replace(
        Settings.load({"data_dir": tmp_path / "data", "reports_dir": tmp_path / "reports"}),
        flags_dir=flags,
        database_url=url,
    )

    def run(*args: str):
        return CliRunner().invoke(main, list(args), obj={"settings": settings})

    run.flags = flags  # type: ignore[attr-defined]
    return run


def _decision(output: str) -> tuple[Path, dict]:
    line = next(line for line in output.splitlines() if line.startswith("decision:"))
    path = Path(line.split("(", 1)[1].rstrip(")"))
    return path, json.loads(path.read_text())


def test_abn_report_then_decide_apply_ramps_the_winning_arm_one_step(rollout):
    report = rollout(
        "report", "ab", "--flag", "churn-model", "--treatment", "treatment,b", "--window", "24h",
        "--timeout", "300",
    )  # fmt: skip
    assert report.exit_code == 0, report.output
    path, decision = _decision(report.output)
    assert decision["recommendation"] == "ramp" and decision["arm"] == "treatment"
    assert decision["arm_steps"] == {"treatment": 19.8, "b": 19.8}  # read from the flag
    assert (decision["current_step"], decision["next_step"]) == (19.8, 25)
    checks = {c["name"]: c for c in decision["checks"]}
    srm = checks["sample_ratio_mismatch"]
    assert srm["details"]["degrees_of_freedom"] == 2 and srm["passed"]
    assert set(srm["details"]["expected"]) == {"control", "treatment", "b"}
    for arm in ("treatment", "b"):
        assert checks[f"difference:{arm}"]["estimand"].startswith(f"{arm} vs control: ")
        assert checks[f"difference:{arm}"]["details"]["correction"].startswith("Holm")
    assert "arms_chi_square" in checks
    page = (path.parent / "report.html").read_text()
    assert 'data-arm="treatment"' in page and 'data-arm="b"' in page

    applied = rollout("decide", "apply", str(path))
    assert applied.exit_code == 0, applied.output
    assert "ramp churn-model: 19.8% -> 25%" in applied.output
    flag = load_flags(rollout.flags).flags["churn-model"]
    steps = arm_steps(flag_doc(flag), flag.ramp, ["treatment", "b"])
    assert steps["treatment"] == pytest.approx(25, abs=0.05)
    assert steps["b"] == pytest.approx(19.8, abs=0.05)  # the other arm gains nothing

    again = rollout("decide", "apply", str(path))
    assert again.exit_code == 1 and "is stale" in again.output


def test_group_sequential_report_names_its_look_bound_and_alpha_spent(rollout):
    report = rollout(
        "report", "ab", "--flag", "churn-model", "--engine", "group-sequential", "--looks", "4",
        "--look", "1", "--window", "24h", "--timeout", "300",
    )  # fmt: skip
    assert report.exit_code == 0, report.output
    _path, decision = _decision(report.output)
    check = next(c for c in decision["checks"] if c["name"] == "group_sequential")
    assert check["details"]["look"] == 1 and check["details"]["looks"] == 4
    assert check["details"]["alpha_spent"] == pytest.approx(0.05 / 16)
    assert decision["primary"]["engine"] == "group-sequential"
    assert decision["primary"]["bound"] == pytest.approx(check["details"]["bound"])


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--treatment", "treatment,b", "--expected-split", "50:50"], "--expected-split"),
        (["--treatment", "treatment,b", "--engine", "bayesian"], "not defined for more than"),
        (["--treatment", "treatment,c"], "treatment arm 'c' was never served"),
        (["--engine", "group-sequential"], "needs the current look (--look)"),
        (["--treatment", "treatment,canary"], "--expected-split: an A/B/n report needs the split"),
    ],
    ids=["split", "engine", "arm", "looks", "arm-of-another-strategy"],
)
def test_options_that_cannot_work_are_one_error_line(rollout, args, words):
    result = rollout("report", "ab", "--flag", "churn-model", "--window", "24h", *args)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and words in errors[0], result.output
