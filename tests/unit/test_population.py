"""The synthetic population: deterministic, plausible, and with the planted v2-vs-v1 effect.

The planted effect is what every A/B report on the churn flag is checked against, so it is
asserted here with the declared versions trained exactly as `rollout models build` trains them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from service.config import Settings
from service.registry import build, population, versions
from service.registry.population import User

N = 20_000


@pytest.fixture(scope="module")
def users() -> list[User]:
    return population.population()


@pytest.fixture(scope="module")
def frame(users: list[User]) -> pd.DataFrame:
    return population.users_frame(users)


@pytest.fixture(scope="module")
def trained() -> dict[str, Any]:
    """The declared churn versions, trained in-process by the family's train.py."""
    specs = versions.declared_bentos(Settings.load().bentos_dir)
    train = build.training_module(specs["churn:v1"].family_dir)
    return {tag: train.train(spec) for tag, spec in specs.items() if spec.family == "churn"}


def scorer(trained_version: Any) -> population.ScoreFn:
    return lambda x: trained_version.pipeline.predict_proba(x)[:, 1]


# ---------------------------------------------------------------- determinism


def test_population_is_deterministic_by_seed() -> None:
    assert population.population(300, seed=5) == population.population(300, seed=5)
    assert population.population(300, seed=5) != population.population(300, seed=6)


def test_a_user_does_not_depend_on_the_population_size() -> None:
    assert population.population(2_500)[:1_200] == population.population(1_200)


def test_user_ids_are_stable_and_unique(users: list[User]) -> None:
    assert users[0].user_id == "u000000"
    assert users[123].user_id == "u000123"
    assert len({u.user_id for u in users}) == len(users) == population.POPULATION_SIZE


def test_training_data_and_fingerprint_are_deterministic() -> None:
    first, again = population.training_data(2_000, 3), population.training_data(2_000, 3)
    pd.testing.assert_frame_equal(first, again)
    assert population.fingerprint(first) == population.fingerprint(again)
    other_seed = population.training_data(2_000, 4)
    assert population.fingerprint(first) != population.fingerprint(other_seed)


def test_fingerprint_sees_any_change() -> None:
    data = population.training_data(500, 3)
    changed = data.copy()
    changed.loc[17, "monthly_spend"] += 0.01
    assert population.fingerprint(changed) != population.fingerprint(data)
    reordered = data[list(reversed(data.columns))]
    assert population.fingerprint(reordered) != population.fingerprint(data)


def test_training_users_are_not_the_population() -> None:
    """Models are evaluated in experiments on users they never trained on."""
    data = population.training_data(1_000, 11)
    pop = population.features_frame(population.population(1_000))
    assert not data[list(population.FEATURES)].equals(pop)


# ---------------------------------------------------------------- plausibility


@pytest.mark.parametrize(
    ("column", "values", "shares"),
    [
        ("segment", population.SEGMENTS, population.SEGMENT_SHARES),
        ("region", population.REGIONS, population.REGION_SHARES),
    ],
    ids=["segment", "region"],
)
def test_shares_match_the_declared_ones(
    frame: pd.DataFrame, column: str, values: tuple[str, ...], shares: tuple[float, ...]
) -> None:
    observed = frame[column].value_counts(normalize=True)
    for value, share in zip(values, shares, strict=True):
        assert observed[value] == pytest.approx(share, abs=0.015), value
    assert observed["enterprise" if column == "segment" else "apac"] < 0.2


def test_features_are_within_plausible_ranges(frame: pd.DataFrame) -> None:
    assert frame["tenure_months"].between(0, 120).all()
    assert (frame["monthly_spend"] > 0).all()
    assert frame["support_tickets"].between(0, 30).all()
    assert frame["days_since_last_login"].between(0, 180).all()
    assert (frame["sessions_per_week"] >= 0).all()
    spend = frame.groupby("segment")["monthly_spend"].median()
    assert spend["consumer"] < spend["smb"] < spend["enterprise"]


def test_user_features_are_the_model_inputs(users: list[User]) -> None:
    assert list(users[0].features()) == list(population.FEATURES)


# ---------------------------------------------------------------- ground truth


def _user(**changes: Any) -> User:
    base = User("u0", "eu", "consumer", 24, 40.0, 1, 3, 5.0)
    return User(**{**base.__dict__, **changes})


def test_churn_probability_is_a_probability(frame: pd.DataFrame) -> None:
    p = population.churn_probabilities(frame)
    assert ((p > 0) & (p < 1)).all()
    assert population.churn_probability(_user()) == pytest.approx(
        population.churn_probabilities(population.users_frame([_user()]))[0]
    )


def test_base_churn_and_the_share_at_risk(frame: pd.DataFrame) -> None:
    p = population.churn_probabilities(frame)
    assert 0.15 < p.mean() < 0.28
    # Enough users above the offer threshold for a model to matter.
    assert 0.05 < np.mean(p >= population.OFFER_THRESHOLD) < 0.2


def test_inactivity_is_a_hinge_a_linear_model_misses() -> None:
    churn = [population.churn_probability(_user(days_since_last_login=d)) for d in (0, 10, 21)]
    assert churn[0] == churn[1] == churn[2]
    assert population.churn_probability(_user(days_since_last_login=45)) > 2 * churn[0]


def test_frustrated_and_idle_users_churn_more_than_either_alone() -> None:
    busy, idle = 8.0, 1.0
    gap_idle = population.churn_probability(
        _user(support_tickets=4, sessions_per_week=idle)
    ) - population.churn_probability(_user(support_tickets=2, sessions_per_week=idle))
    gap_busy = population.churn_probability(
        _user(support_tickets=4, sessions_per_week=busy)
    ) - population.churn_probability(_user(support_tickets=2, sessions_per_week=busy))
    assert gap_idle > 2 * gap_busy


def test_region_and_segment_effects() -> None:
    p = population.churn_probability
    assert p(_user(segment="enterprise")) < p(_user(segment="smb")) < p(_user(segment="consumer"))
    assert p(_user(region="eu")) < p(_user(region="us")) < p(_user(region="apac"))
    assert p(_user(tenure_months=60)) < p(_user(tenure_months=6))


def test_the_offer_halves_churn() -> None:
    user = _user(days_since_last_login=40)
    p = population.churn_probability(user)
    assert population.churn_given_offer(p, True) == pytest.approx(p / 2)
    assert population.churn_given_offer(p, False) == pytest.approx(p)


def test_draw_retained_follows_the_ground_truth() -> None:
    user = _user(days_since_last_login=40)
    p = population.churn_probability(user)
    rng = np.random.default_rng(1)
    for offered, expected in ((False, 1 - p), (True, 1 - p / 2)):
        draws = [population.draw_retained(user, offered, rng) for _ in range(6_000)]
        assert set(draws) <= {0, 1}
        assert np.mean(draws) == pytest.approx(expected, abs=0.02), offered


def test_draw_retained_is_reproducible_with_the_same_rng_seed() -> None:
    user = _user(days_since_last_login=30)
    first = [population.draw_retained(user, False, np.random.default_rng(9)) for _ in range(50)]
    again = [population.draw_retained(user, False, np.random.default_rng(9)) for _ in range(50)]
    assert first == again


# ---------------------------------------------------------------- expected retention


def test_expected_retention_of_the_trivial_policies(users: list[User], frame: pd.DataFrame) -> None:
    p = population.churn_probabilities(frame)
    never = population.expected_retention(lambda x: np.zeros(len(x)), users)
    always = population.expected_retention(lambda x: np.ones(len(x)), users)
    assert never == pytest.approx(1 - p.mean())
    assert always == pytest.approx(1 - p.mean() / 2)


def test_the_oracle_policy_beats_none(users: list[User]) -> None:
    oracle = population.expected_retention(population.churn_probabilities, users)
    never = population.expected_retention(lambda x: np.zeros(len(x)), users)
    assert oracle - never > 0.03


def test_expected_retention_rejects_a_wrong_number_of_scores(users: list[User]) -> None:
    with pytest.raises(ValueError, match="shape"):
        population.expected_retention(lambda x: np.zeros(3), users[:10])


# ---------------------------------------------------------------- the planted effect


def test_v2_policy_retains_3_to_5_points_more_than_v1(
    trained: dict[str, Any], users: list[User]
) -> None:
    v1 = population.expected_retention(scorer(trained["churn:v1"]), users)
    v2 = population.expected_retention(scorer(trained["churn:v2"]), users)
    assert 0.75 < v1 < v2 < 0.85
    assert 0.03 <= v2 - v1 <= 0.05
    # Clearly detectable with ~7,500 users per arm: z of the difference well above 4.
    se = np.sqrt(v1 * (1 - v1) / 7_500 + v2 * (1 - v2) / 7_500)
    assert (v2 - v1) / se > 4
    assert trained["churn:v2"].expected_retention == pytest.approx(v2)


def test_v2_is_better_offline_too(trained: dict[str, Any]) -> None:
    v1, v2 = (trained[t].metrics["overall"] for t in ("churn:v1", "churn:v2"))
    assert v2["auc"] > v1["auc"] + 0.05
    assert v2["log_loss"] < v1["log_loss"]
    assert v2["brier"] < v1["brier"]


def test_offline_metrics_cover_every_segment_and_region(trained: dict[str, Any]) -> None:
    metrics = trained["churn:v2"].metrics
    assert set(metrics["by_segment"]) == set(population.SEGMENTS)
    assert set(metrics["by_region"]) == set(population.REGIONS)
    assert sum(m["rows"] for m in metrics["by_segment"].values()) == metrics["overall"]["rows"]


def test_training_twice_gives_the_same_model(trained: dict[str, Any]) -> None:
    spec = trained["churn:v2"].spec
    again = build.training_module(spec.family_dir).train(spec)
    assert again.model_hash == trained["churn:v2"].model_hash
    assert again.data_fingerprint == trained["churn:v2"].data_fingerprint


# ---------------------------------------------------------------- drifted training data


def test_no_drift_is_exactly_the_training_data() -> None:
    pd.testing.assert_frame_equal(
        population.drifted_training_data(3_000, 11, 0.0), population.training_data(3_000, 11)
    )


def test_drifted_users_log_in_less_and_churn_more() -> None:
    base = population.training_data(5_000, 12)
    drifted = population.drifted_training_data(5_000, 12, 0.5)
    assert list(drifted.columns) == list(base.columns)
    assert drifted["days_since_last_login"].mean() > 1.3 * base["days_since_last_login"].mean()
    assert (drifted["region"] == "apac").mean() > (base["region"] == "apac").mean() + 0.05
    assert drifted[population.LABEL].mean() > base[population.LABEL].mean()
    pd.testing.assert_frame_equal(drifted, population.drifted_training_data(5_000, 12, 0.5))


@pytest.mark.parametrize("drift", [-0.1, 1.5])
def test_drift_out_of_range_is_refused(drift: float) -> None:
    with pytest.raises(ValueError, match="drift must be between 0 and 1"):
        population.drifted_training_data(100, 1, drift)
