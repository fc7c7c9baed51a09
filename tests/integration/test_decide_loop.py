"""The README's cron line, then `rollout decide apply`: the flag climbs exactly one step.

Issue 13: `rollout report ab --flag churn-model --window 24h` (no `--current-step`) used to record
the step as unknown and the next step as 5%, and `decide apply` then "ramped" the flag from 40%
down to 5%. Real command, real notebook (papermill, the `model-rollout` kernel), a temporary
SQLite event store and a copy of flags/ in embedded mode.
"""

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
from service.flags.definitions import load_flags
from service.flags.documents import flag_doc
from service.flags.ramp import current_step
from service.store.events import create_engine, exposures, outcomes

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[2]


def populate(url: str, users: int = 2_000, seed: int = 4) -> None:
    """The last two hours of the ab-test strategy: 50/50, treatment converting 36% vs 28%."""
    rng = random.Random(seed)
    now = time.time()
    rows, results = [], []
    for n in range(users):
        arm = "control" if n % 2 else "treatment"
        ts = now - rng.uniform(60, 7_200)
        request = f"loop-{n}"
        rows.append(
            {
                "ts": ts,
                "request_id": request,
                "flag": "churn-model",
                "environment": "development",
                "user_id": f"user-{n}",
                "variant": arm,
                "bento": "churn:v2" if arm == "treatment" else "churn:v1",
                "reason": "strategy_variant",
                "status": 200,
                "latency_ms": rng.gammavariate(4.0, 5.0),
                "shadow": False,
                "fallback": False,
            }
        )
        if rng.random() < (0.36 if arm == "treatment" else 0.28):
            results.append(
                {
                    "ts": ts + 30,
                    "request_id": request,
                    "user_id": None,
                    "flag": None,
                    "metric": "retained",
                    "value": 1.0,
                }
            )
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(exposures.insert(), rows)
        conn.execute(outcomes.insert(), results)
    engine.dispose()


def test_the_cron_line_then_decide_apply_climbs_exactly_one_step(tmp_path, monkeypatch):
    for name in ("UNLEASH_URL", "UNLEASH_ADMIN_URL", "ROLLOUT_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)
    flags = tmp_path / "flags"
    shutil.copytree(REPO / "flags", flags)
    url = f"sqlite:///{tmp_path / 'events.db'}"
    populate(url)
    settings = replace(
        Settings.load({"data_dir": tmp_path / "data", "reports_dir": tmp_path / "reports"}),
        flags_dir=flags,
        database_url=url,
    )

    def rollout(*args: str):
        return CliRunner().invoke(main, list(args), obj={"settings": settings})

    flag = load_flags(flags).flags["churn-model"]
    assert current_step(flag_doc(flag), flag.ramp) == 40  # the flags/ file as committed

    # the README's cron line, exactly: no --current-step
    report = rollout("report", "ab", "--flag", "churn-model", "--window", "24h", "--timeout", "300")
    assert report.exit_code == 0, report.output
    path = Path(report.output.split("decision: ramp  (", 1)[1].split(")", 1)[0])
    decision = json.loads(path.read_text())
    assert (decision["current_step"], decision["next_step"]) == (40, 50), decision["reasons"]

    applied = rollout("decide", "apply", str(path))
    assert applied.exit_code == 0, applied.output
    assert "ramp churn-model: 40% -> 50%" in applied.output
    after = load_flags(flags).flags["churn-model"]
    assert current_step(flag_doc(after), after.ramp) == 50  # exactly one step up
    strategy = yaml.safe_load((flags / "churn-model.yaml").read_text())["environments"][
        "development"
    ]["strategies"][1]
    assert strategy["rollout"] == 100 and strategy["variants"] == {"control": 50, "treatment": 50}

    # The same decision again is refused (it predates the flag's change, made at 40%).
    again = rollout("decide", "apply", str(path))
    assert again.exit_code == 1 and "is stale" in again.output

    # The next cron run reads the new step; applying it climbs one more step, 50% -> 100%.
    report = rollout("report", "ab", "--flag", "churn-model", "--window", "24h", "--timeout", "300")
    assert report.exit_code == 0, report.output
    path = Path(report.output.split("decision: ramp  (", 1)[1].split(")", 1)[0])
    decision = json.loads(path.read_text())
    assert (decision["current_step"], decision["next_step"]) == (50, 100), decision["reasons"]
    applied = rollout("decide", "apply", str(path))
    assert applied.exit_code == 0 and "ramp churn-model: 50% -> 100%" in applied.output
    final = load_flags(flags).flags["churn-model"]
    assert current_step(flag_doc(final), final.ramp) == 100
