"""flags/*.yaml: the repo's own flags load, and every kind of mistake is named precisely."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import FlagDefinitionError
from service.flags.definitions import load_flags

REPO_FLAGS = Path(__file__).resolve().parents[2] / "flags"
BENTOS = {"churn:v1", "churn:v2"}

GOOD = """
flag: churn-model
default: churn:v1
variants: {control: churn:v1, treatment: churn:v2}
environments:
  development:
    enabled: true
    strategies:
      - name: ab
        rollout: 50
        constraints: [{field: region, operator: IN, values: [eu]}]
        variants: {control: 50, treatment: 50}
"""


def problems(flags_dir, text: str, name: str = "f.yaml") -> list[str]:
    folder = flags_dir(name, text)
    with pytest.raises(FlagDefinitionError) as caught:
        load_flags(folder, BENTOS)
    return [str(p) for p in caught.value.problems]


def test_the_repository_flags_are_valid() -> None:
    flag_set = load_flags(REPO_FLAGS, BENTOS)
    flag = flag_set.flags["churn-model"]
    assert flag.default_bento == "churn:v1"
    assert flag.bentos() == BENTOS
    assert set(flag.environments) == {"development", "production"}


def test_a_flag_without_default_serves_its_familys_stable_version(flags_dir) -> None:
    """No `default:` is valid: the registry's stable version of the family serves (issue 12)."""
    flag = load_flags(flags_dir("f.yaml", GOOD.replace("default: churn:v1\n", "")), BENTOS)
    definition = flag.flags["churn-model"]
    assert definition.default_bento is None
    assert definition.family == "churn"


SHADOW_ONLY = """
flag: churn-model
default: churn:v1
shadows: [churn:v2]
environments:
  development:
    enabled: true
    strategies:
      - name: everyone
        rollout: 100
"""


def test_a_flag_with_a_default_needs_no_variants(flags_dir) -> None:
    """One bento serves everyone, another shadows it: no variant to route to."""
    flag = load_flags(flags_dir("f.yaml", SHADOW_ONLY), BENTOS).flags["churn-model"]
    assert (flag.variants, flag.shadows) == ({}, ("churn:v2",))


def test_a_flag_with_neither_default_nor_variants_is_named(flags_dir) -> None:
    text = SHADOW_ONLY.replace("default: churn:v1\n", "")
    (problem,) = problems(flags_dir, text)
    assert problem.endswith(
        "f.yaml: flag 'churn-model': variants: must map each variant name to its bento tag "
        "(a flag without a default needs at least one)"
    )


def test_a_valid_flag_parses_into_typed_definitions(flags_dir) -> None:
    flag = load_flags(flags_dir("f.yaml", GOOD), BENTOS).flags["churn-model"]
    strategy = flag.environments["development"].strategies[0]
    assert (strategy.name, strategy.rollout, strategy.stickiness) == ("ab", 50, "userId")
    assert strategy.constraints[0].values == ("eu",)
    assert strategy.variants == {"control": 50.0, "treatment": 50.0}


@pytest.mark.parametrize(
    ("old", "new", "field", "words"),
    [
        pytest.param(
            "default: churn:v1",
            "default: churn:v9",
            "default",
            "unknown bento 'churn:v9'",
            id="unknown-default-bento",
        ),
        pytest.param(
            "treatment: churn:v2}",
            "treatment: churn:v7}",
            "variants.treatment",
            "unknown bento",
            id="unknown-variant-bento",
        ),
        pytest.param(
            "default: churn:v1", "default: 7", "default", "not a bento tag", id="bad-default"
        ),
        pytest.param(
            "operator: IN",
            "operator: IS",
            "constraints[0].operator",
            "unknown operator 'IS'",
            id="unknown-operator",
        ),
        pytest.param(
            "field: region",
            "field: planet",
            "constraints[0].field",
            "unknown context field 'planet'",
            id="unknown-context-field",
        ),
        pytest.param(
            "values: [eu]",
            "values: [mars]",
            "constraints[0].values",
            "mars not legal for 'region'",
            id="illegal-context-value",
        ),
        pytest.param(
            "treatment: 50}",
            "treatment: 40}",
            "strategies.ab.variants",
            "add up to 90",
            id="weights-not-100",
        ),
        pytest.param(
            "{control: 50, treatment: 50}",
            "{control: 50, shadow: 50}",
            "variants.shadow",
            "unknown variant",
            id="unknown-variant-in-strategy",
        ),
        pytest.param(
            "rollout: 50",
            "rollout: 150",
            "strategies.ab.rollout",
            "0-100",
            id="rollout-out-of-range",
        ),
        pytest.param(
            "development:",
            "staging:",
            "environments.staging",
            "unknown environment",
            id="unknown-environment",
        ),
        pytest.param(
            "default: churn:v1", "default: churn:latest", "default", "latest", id="latest-tag"
        ),
        pytest.param(
            "enabled: true",
            "enabled: yes-please",
            "enabled",
            "true or false",
            id="enabled-not-bool",
        ),
        pytest.param(
            "rollout: 50",
            "rollout: 50\n        rolout: 5",
            "rolout",
            "unknown field",
            id="typo-field",
        ),
    ],
)
def test_each_mistake_names_file_flag_and_field(flags_dir, old, new, field, words) -> None:
    assert old in GOOD
    found = problems(flags_dir, GOOD.replace(old, new, 1))
    assert any(
        "f.yaml" in p and "'churn-model'" in p and field in p and words in p for p in found
    ), found


def test_duplicate_strategy_names(flags_dir) -> None:
    text = (
        GOOD
        + """      - name: ab
        rollout: 10
"""
    )
    assert any("duplicate strategy name 'ab'" in p for p in problems(flags_dir, text))


def test_duplicate_yaml_keys_are_not_silently_dropped(flags_dir) -> None:
    text = GOOD.replace(
        "variants: {control: churn:v1, treatment: churn:v2}",
        "variants: {control: churn:v1, control: churn:v2}",
    )
    found = problems(flags_dir, text)
    assert any("f.yaml" in p and "duplicate key 'control'" in p for p in found), found


def test_duplicate_flag_names_across_files(flags_dir) -> None:
    flags_dir("a.yaml", GOOD)
    found = problems(flags_dir, GOOD, name="b.yaml")
    assert any(
        "b.yaml" in p and "duplicate flag name, also in" in p and "a.yaml" in p for p in found
    ), found


def test_a_yaml_syntax_error_names_the_file_and_line(flags_dir) -> None:
    found = problems(flags_dir, GOOD + "  broken: [unclosed\n")
    assert any("f.yaml" in p and "yaml" in p and "line" in p for p in found), found


def test_all_problems_are_reported_at_once(flags_dir) -> None:
    text = GOOD.replace("operator: IN", "operator: IS").replace("treatment: 50}", "treatment: 1}")
    assert len(problems(flags_dir, text)) == 2


def test_an_empty_folder_is_an_error(tmp_path) -> None:
    with pytest.raises(FlagDefinitionError, match="no flag files"):
        load_flags(tmp_path, BENTOS)


def test_rollout_percent_is_the_variants_share_of_its_strategy() -> None:
    flag = load_flags(REPO_FLAGS, BENTOS).flags["churn-model"]
    assert flag.rollout_percent("development", "treatment") == 40.0  # 80% rollout, 50/50
    assert flag.rollout_percent("production", "canary") == 5.0
    assert flag.rollout_percent("production", "treatment") is None
