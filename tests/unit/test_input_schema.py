"""Input contracts: the checked-in schema matches the bento's pydantic model, and violations
are reported with the path of each field."""

from __future__ import annotations

import json

import pytest

from service.config import Settings
from service.errors import InputRejected
from service.serving.contracts import SCHEMA_FILE, family_of, generate, load_contracts

RECORD = {
    "tenure_months": 3,
    "monthly_spend": 42.5,
    "support_tickets": 1,
    "days_since_last_login": 2,
    "sessions_per_week": 3.0,
    "region": "eu",
    "segment": "smb",
}


@pytest.fixture(scope="module")
def churn():
    return load_contracts(Settings.load().bentos_dir)["churn"]


def test_the_checked_in_schema_is_the_bentos_own() -> None:
    family_dir = Settings.load().bentos_dir / "churn"
    checked_in = json.loads((family_dir / SCHEMA_FILE).read_text())
    assert checked_in == generate(family_dir), "run: python -m service.serving.contracts churn"


def test_valid_inputs_pass(churn) -> None:
    churn.check([RECORD, {**RECORD, "tenure_months": 0}])


@pytest.mark.parametrize(
    ("inputs", "words"),
    [
        pytest.param([{**RECORD, "tenure_months": -5}], "inputs[0].tenure_months", id="bound"),
        pytest.param([{**RECORD, "region": "mars"}], "inputs[0].region", id="enum"),
        pytest.param([{**RECORD, "monthly_spend": "x"}], "inputs[0].monthly_spend", id="type"),
        pytest.param(
            [RECORD, {k: v for k, v in RECORD.items() if k != "segment"}],
            "inputs[1]: 'segment' is a required property",
            id="missing",
        ),
        pytest.param([{**RECORD, "extra": 1}], "'extra' was unexpected", id="extra-field"),
        pytest.param([], "inputs: [] should be non-empty", id="empty"),
        pytest.param({"a": 1}, "is not of type 'array'", id="not-a-list"),
        pytest.param([RECORD] * 1001, "is too long", id="batch-too-large"),
    ],
)
def test_violations_name_the_field(churn, inputs, words) -> None:
    with pytest.raises(InputRejected) as caught:
        churn.check(inputs)
    assert words in caught.value.message
    assert caught.value.status == 422


def test_many_problems_are_capped() -> None:
    contract = load_contracts(Settings.load().bentos_dir)["churn"]
    with pytest.raises(InputRejected, match=r"and 5 more"):
        contract.check([{**RECORD, "tenure_months": -1}] * 15)


@pytest.mark.parametrize(("tag", "family"), [("churn:v1", "churn"), ("fraud:2024", "fraud")])
def test_family_of(tag: str, family: str) -> None:
    assert family_of(tag) == family
