"""Ramp schedules in flags/ and the moves they allow: ramp, rollback, ship, on flag documents."""

from __future__ import annotations

import pytest

from service.errors import FlagDefinitionError
from service.flags.definitions import load_flags
from service.flags.documents import flag_doc
from service.flags.model import Guardrails
from service.flags.ramp import RampError, current_step, move, next_step
from service.rollout.decisions import report_defaults

BENTOS = {"churn:v1", "churn:v2", "churn:v3"}

CANARY = """
flag: churn-canary
default: churn:v2
variants: {canary: churn:v3}
environments:
  production:
    enabled: true
    strategies:
      - name: canary
        rollout: 5
        variants: {canary: 100}
ramp:
  environment: production
  strategy: canary
  control: default
  treatment: canary
  steps: [5, 25, 50, 100]
  bake_seconds: 60
  min_users: 100
  guardrails: {error_rate: 0.01, prediction_psi: null}
"""

AB = """
flag: churn-ab
default: churn:v1
variants: {control: churn:v1, treatment: churn:v2}
environments:
  development:
    enabled: true
    strategies:
      - name: ab-test
        rollout: 80
        variants: {control: 50, treatment: 50}
ramp: {environment: development, strategy: ab-test, control: control, treatment: treatment}
"""


def load(flags_dir, text: str, name: str):
    flag = load_flags(flags_dir(f"{name}.yaml", text), BENTOS).flags[name]
    assert flag.ramp is not None
    return flag, flag_doc(flag)


def test_the_ramp_section_parses_with_defaults(flags_dir) -> None:
    flag, _ = load(flags_dir, CANARY, "churn-canary")
    ramp = flag.ramp
    assert (ramp.environment, ramp.strategy, ramp.control, ramp.treatment) == (
        "production",
        "canary",
        "default",
        "canary",
    )
    assert ramp.steps == (5, 25, 50, 100) and ramp.bake_seconds == 60 and ramp.min_users == 100
    assert ramp.guardrails == Guardrails(error_rate=0.01, prediction_psi=None)
    assert ramp.approval is False


@pytest.mark.parametrize(
    ("old", "new", "field", "words"),
    [
        ("strategy: canary\n", "strategy: nope\n", "ramp.strategy", "no strategy 'nope'"),
        ("environment: production\n", "environment: staging\n", "ramp.environment", "staging"),
        ("treatment: canary\n", "treatment: other\n", "ramp.treatment", "not a variant"),
        ("control: default\n", "control: ghost\n", "ramp.control", "unknown variant 'ghost'"),
        ("steps: [5, 25, 50, 100]", "steps: [25, 5, 100]", "ramp.steps", "increasing"),
        ("steps: [5, 25, 50, 100]", "steps: [5, 25, 50]", "ramp.steps", "ending at 100"),
        ("bake_seconds: 60", "bake_seconds: soon", "ramp.bake_seconds", "number"),
        ("error_rate: 0.01", "error_rat: 0.01", "ramp.guardrails.error_rat", "unknown field"),
        ("error_rate: 0.01", "error_rate: -1", "ramp.guardrails.error_rate", "[0, 1]"),
        ("min_users: 100\n", "min_users: 100\n  approve: yes\n", "ramp.approve", "unknown"),
        # issue 13: non-finite and out-of-range numbers are named problems, never a traceback
        ("bake_seconds: 60", "bake_seconds: .nan", "ramp.bake_seconds", "number"),
        ("bake_seconds: 60", "bake_seconds: .inf", "ramp.bake_seconds", "number"),
        ("min_users: 100", "min_users: .nan", "ramp.min_users", "number"),
        ("min_users: 100", "min_users: 10.5", "ramp.min_users", "whole number"),
        ("steps: [5, 25, 50, 100]", "steps: [5, .nan, 100]", "ramp.steps", "increasing"),
        ("error_rate: 0.01", "error_rate: .nan", "ramp.guardrails.error_rate", "[0, 1]"),
        ("error_rate: 0.01", "error_rate: 2", "ramp.guardrails.error_rate", "[0, 1]"),
        ("error_rate: 0.01", "alpha: .nan", "ramp.guardrails.alpha", "significance level"),
        ("error_rate: 0.01", "alpha: 0", "ramp.guardrails.alpha", "significance level"),
        ("error_rate: 0.01", "min_requests: -.inf", "ramp.guardrails.min_requests", "whole"),
        ("rollout: 5\n", "rollout: .nan\n", ".rollout", "whole percentage"),
        ("{canary: 100}", "{canary: .nan}", ".variants.canary", "percentage 0-100"),
        ("{canary: 100}", "{canary: .inf}", ".variants.canary", "percentage 0-100"),
        ("{canary: 100}", "{canary: 150}", ".variants.canary", "percentage 0-100"),
        ("min_users: 100", "min_users: 99999999999999999999999", "ramp.min_users", "0 to"),
        ("bake_seconds: 60", "bake_seconds: 1.0e+12", "ramp.bake_seconds", "0 to"),
        (
            "error_rate: 0.01",
            "min_requests: 1000000000000000000000000000000",
            "ramp.guardrails.min_requests",
            "whole",
        ),
    ],
    ids=[
        "unknown-strategy",
        "unknown-environment",
        "treatment-not-in-strategy",
        "unknown-control",
        "steps-not-increasing",
        "steps-not-ending-at-100",
        "bake-not-a-number",
        "unknown-guardrail",
        "negative-guardrail",
        "unknown-key",
        "bake-nan",
        "bake-inf",
        "min-users-nan",
        "min-users-fraction",
        "step-nan",
        "guardrail-nan",
        "guardrail-above-1",
        "alpha-nan",
        "alpha-0",
        "min-requests-inf",
        "rollout-nan",
        "weight-nan",
        "weight-inf",
        "weight-over-100",
        "min-users-huge",
        "bake-over-a-year",
        "min-requests-huge",
    ],
)
def test_each_ramp_mistake_names_file_flag_and_field(flags_dir, old, new, field, words) -> None:
    assert old in CANARY
    folder = flags_dir("churn-canary.yaml", CANARY.replace(old, new))
    with pytest.raises(FlagDefinitionError) as caught:
        load_flags(folder, BENTOS)
    lines = [str(p) for p in caught.value.problems]
    assert any(
        "churn-canary.yaml" in line and "'churn-canary'" in line and field in line and words in line
        for line in lines
    ), lines


def test_a_canary_steps_through_its_schedule(flags_dir) -> None:
    flag, doc = load(flags_dir, CANARY, "churn-canary")
    assert current_step(doc, flag.ramp) == 5
    steps = []
    while (target := next_step(current_step(doc, flag.ramp), flag.ramp)) is not None:
        moved = move(doc, flag.ramp, "ramp")
        assert (moved.from_step, moved.to_step) == (current_step(doc, flag.ramp), target)
        doc = moved.doc
        steps.append(current_step(doc, flag.ramp))
    assert steps == [25, 50, 100]
    with pytest.raises(RampError, match="last step"):
        move(doc, flag.ramp, "ramp")


def test_an_ab_strategy_ramps_by_rollout_then_by_weight(flags_dir) -> None:
    flag, doc = load(flags_dir, AB, "churn-ab")
    assert current_step(doc, flag.ramp) == 40  # 80% of users, half of them on the treatment
    at_50 = move(doc, flag.ramp, "ramp")
    strategy = at_50.doc["environments"]["development"]["strategies"][0]
    assert (strategy["rollout"], strategy["variants"]) == (100, {"control": 50, "treatment": 50})
    at_100 = move(at_50.doc, flag.ramp, "ramp")
    strategy = at_100.doc["environments"]["development"]["strategies"][0]
    assert (strategy["rollout"], strategy["variants"]) == (100, {"treatment": 100})
    assert current_step(at_100.doc, flag.ramp) == 100
    assert at_100.changes == (
        "development strategy ab-test: variants "
        "{'control': 50, 'treatment': 50} -> {'treatment': 100}",
    )


def test_a_partial_weight_shift_keeps_the_sum_at_100(flags_dir) -> None:
    flag, doc = load(flags_dir, AB, "churn-ab")
    moved = move(doc, flag.ramp, "ramp", to_step=75)
    variants = moved.doc["environments"]["development"]["strategies"][0]["variants"]
    assert variants == {"treatment": 75, "control": 25}
    assert current_step(moved.doc, flag.ramp) == 75


def test_rollback_sends_the_canary_to_zero_and_ship_makes_it_the_default(flags_dir) -> None:
    flag, doc = load(flags_dir, CANARY, "churn-canary")
    back = move(doc, flag.ramp, "rollback")
    assert current_step(back.doc, flag.ramp) == 0 and back.doc["default"] == "churn:v2"
    assert back.changes == ("production strategy canary: rollout 5 -> 0",)
    shipped = move(doc, flag.ramp, "ship")
    assert shipped.doc["default"] == "churn:v3"
    assert current_step(shipped.doc, flag.ramp) == 0  # everyone is on the new default
    assert shipped.to_step == 100
    assert doc["default"] == "churn:v2"  # the input document is not changed
    with pytest.raises(RampError, match="nothing to rollback"):
        move(back.doc, flag.ramp, "rollback")


def test_a_flag_that_is_off_is_at_step_zero(flags_dir) -> None:
    flag, doc = load(flags_dir, CANARY.replace("enabled: true", "enabled: false"), "churn-canary")
    assert current_step(doc, flag.ramp) == 0


def test_a_strategy_renamed_on_the_server_is_a_clear_error(flags_dir) -> None:
    flag, doc = load(flags_dir, CANARY, "churn-canary")
    doc["environments"]["production"]["strategies"][0]["name"] = "renamed-in-the-ui"
    with pytest.raises(RampError, match="no strategy 'canary'"):
        current_step(doc, flag.ramp)


def test_the_ramp_section_may_choose_the_report_engine_and_name_owner_and_hypothesis(
    flags_dir,
) -> None:
    text = CANARY.replace(
        "  min_users: 100\n",
        "  min_users: 100\n  engine: bayesian\n  owner: ana@example.com\n"
        "  hypothesis: retention offers lift retention\n",
    )
    flag, doc = load(flags_dir, text, "churn-canary")
    assert flag.ramp.engine == "bayesian" and flag.ramp.owner == "ana@example.com"
    assert flag.ramp.hypothesis == "retention offers lift retention"
    assert report_defaults(flag, doc)["engine"] == "bayesian"
    plain, plain_doc = load(flags_dir, CANARY, "churn-canary")
    assert "engine" not in report_defaults(plain, plain_doc)  # the report's own default


def test_an_unknown_engine_in_the_ramp_section_is_a_named_problem(flags_dir) -> None:
    text = CANARY.replace("  min_users: 100\n", "  min_users: 100\n  engine: magic\n")
    with pytest.raises(FlagDefinitionError) as error:
        load_flags(flags_dir("churn-canary.yaml", text), BENTOS)
    assert any(
        p.field == "ramp.engine" and "frequentist, sequential, bayesian" in p.message
        for p in error.value.problems
    )
