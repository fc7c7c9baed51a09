"""A/B/n on a flag: each treatment arm's step, the k-arm split, and `decide apply` moving the
arm a decision names (one step up, never down, only from the step it was decided at)."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.flags.arm_moves import arm_steps, arms_split, move_arm
from service.flags.definitions import load_flags
from service.flags.documents import flag_doc
from service.flags.ramp import RampError
from service.rollout.decisions import DecisionFile, DecisionRefused, plan_decision, report_defaults

BENTOS = {"churn:v1", "churn:v2", "churn:v3"}
ABN = """
flag: churn-abn
default: churn:v1
variants: {control: churn:v1, b: churn:v2, c: churn:v3}
environments:
  development:
    enabled: true
    strategies:
      - name: ab-test
        rollout: 60
        variants: {control: 34, b: 33, c: 33}
ramp: {environment: development, strategy: ab-test, control: control, treatment: b,
       steps: [5, 25, 50, 100]}
"""


@pytest.fixture
def flag(flags_dir):
    definition = load_flags(flags_dir("churn-abn.yaml", ABN), BENTOS).flags["churn-abn"]
    return definition, flag_doc(definition)


def _decision(recommendation, arm, current, to, **extra) -> DecisionFile:
    raw = {
        "flag": "churn-abn",
        "kind": "ab",
        "recommendation": recommendation,
        "current_step": current,
        "next_step": to,
        "arm": arm,
        "arms": [{"role": "control", "variant": "control"}]
        + [{"role": "treatment", "variant": a, "name": a} for a in ("b", "c")],
        "generated_at": "2030-01-01T00:00:00Z",
        **extra,
    }
    return DecisionFile.from_dict(raw, Path("decision.json"))


def test_each_arm_has_its_own_step_and_the_split_has_k_entries(flag) -> None:
    definition, doc = flag
    assert arm_steps(doc, definition.ramp, ["b", "c"]) == {"b": 19.8, "c": 19.8}
    assert arms_split(doc, definition.ramp, ["b", "c"]) == "20.4:19.8:19.8"
    defaults = report_defaults(definition, doc, ["b", "c"])
    assert defaults["current_steps"] == "b=19.8,c=19.8"
    assert defaults["expected_split"] == "20.4:19.8:19.8"
    assert "current_step" not in defaults and "treatment" not in defaults


def test_apply_ramps_the_named_arm_one_step_and_no_other_arm_gains(flag) -> None:
    definition, doc = flag
    chosen = plan_decision(_decision("ramp", "c", 19.8, 25), definition, doc, changed_at=0)
    after = arm_steps(chosen.doc, definition.ramp, ["b", "c"])
    assert after["c"] == pytest.approx(25, abs=0.05) and after["b"] == pytest.approx(19.8, abs=0.05)
    assert chosen.action == "ramp" and chosen.bento == "churn:v3"
    assert chosen.describe() == "ramp churn-abn: 19.8% -> 25%"
    control = arm_steps(chosen.doc, definition.ramp, ["control"])["control"]
    assert control >= 20.4 - 0.05  # the new users came from outside the strategy
    weights = chosen.doc["environments"]["development"]["strategies"][0]["variants"]
    assert sum(weights.values()) == pytest.approx(100)


def test_apply_rolls_an_arm_back_to_the_control(flag) -> None:
    definition, doc = flag
    chosen = plan_decision(_decision("rollback", "b", 19.8, 0), definition, doc, changed_at=0)
    after = arm_steps(chosen.doc, definition.ramp, ["b", "c", "control"])
    assert after["b"] == 0 and after["c"] == pytest.approx(19.8, abs=0.05)
    assert after["control"] == pytest.approx(40.2, abs=0.05)


@pytest.mark.parametrize(
    ("decision", "words"),
    [
        (("ramp", "c", 5, 25), "was made at step 5%, but the flag serves the treatment to 19.8%"),
        (("ramp", "c", 19.8, 5), "a ramp never lowers a step"),
        (("ramp", "c", 19.8, 30), "next step 30.0% is not in the flag's ramp schedule"),
        (("ship", "c", 19.8, 100), "ship is not defined for an A/B/n decision (c)"),
        (("ramp", "d", 19.8, 25), "is about arm 'd', which is not a treatment variant"),
        (("ramp", "control", 19.8, 25), "is about arm 'control', which is not a treatment"),
        (("ramp", "c", None, 25), "was made without knowing the flag's step"),
    ],
)
def test_apply_refuses_what_it_cannot_do_for_k_arms(flag, decision, words) -> None:
    definition, doc = flag
    with pytest.raises(DecisionRefused) as refused:
        plan_decision(_decision(*decision), definition, doc, changed_at=0)
    assert words in refused.value.message
    assert "\n" not in refused.value.message


def test_a_hold_names_no_arm_and_changes_nothing(flag) -> None:
    definition, doc = flag
    assert plan_decision(_decision("hold", None, None, None), definition, doc, 0) is None


def test_a_move_the_strategy_cannot_hold_is_refused(flag) -> None:
    definition, doc = flag
    with pytest.raises(RampError, match="c cannot serve 100% while the other arms keep theirs"):
        move_arm(doc, definition.ramp, "c", "ramp", 100)


def test_the_arm_field_must_be_a_string(flag) -> None:
    with pytest.raises(DecisionRefused, match="field 'arm' must be a string or null"):
        _decision("ramp", 3, 19.8, 25)
