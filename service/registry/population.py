"""A synthetic user population with a known churn ground truth.

The product story: a churn model scores each user; users scored at or above the offer threshold
get a retention offer, and the offer halves that user's churn probability. The outcome is
`retained` (1 = did not churn). Because the ground truth is known, the true retention of any
model-driven offer policy is known before an experiment runs (`expected_retention`), which is
what lets the A/B reports be checked against the truth.

Users are generated in fixed-size blocks, each from its own seeded generator, so the first
`n` users are the same whatever the population size: `population(1_000)[:10] ==
population(10)`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

POPULATION_SEED = 20_240_601
POPULATION_SIZE = 20_000
OFFER_THRESHOLD = 0.5
# The offer halves a user's churn probability.
OFFER_EFFECT = 0.5

REGIONS: tuple[str, ...] = ("eu", "us", "apac")
REGION_SHARES: tuple[float, ...] = (0.40, 0.42, 0.18)
SEGMENTS: tuple[str, ...] = ("consumer", "smb", "enterprise")
SEGMENT_SHARES: tuple[float, ...] = (0.65, 0.25, 0.10)

NUMERIC_FEATURES: tuple[str, ...] = (
    "tenure_months",
    "monthly_spend",
    "support_tickets",
    "days_since_last_login",
    "sessions_per_week",
)
CATEGORICAL_FEATURES: tuple[str, ...] = ("region", "segment")
FEATURES: tuple[str, ...] = NUMERIC_FEATURES + CATEGORICAL_FEATURES
LABEL = "churned"

_BLOCK = 1_000
_SPEND_SCALE = {"consumer": 30.0, "smb": 220.0, "enterprise": 2_500.0}
_REGION_EFFECT = {"eu": 0.0, "us": 0.15, "apac": 0.45}
_SEGMENT_EFFECT = {"consumer": 0.25, "smb": 0.0, "enterprise": -0.9}

ScoreFn = Callable[[pd.DataFrame], Sequence[float] | np.ndarray]


@dataclass(frozen=True)
class User:
    """One user: identity, the routing properties (region, segment) and the model features."""

    user_id: str
    region: str
    segment: str
    tenure_months: int
    monthly_spend: float
    support_tickets: int
    days_since_last_login: int
    sessions_per_week: float

    def features(self) -> dict[str, Any]:
        """The model's input record for this user (what a caller sends to `/predict`)."""
        return {name: getattr(self, name) for name in FEATURES}


def population(n: int = POPULATION_SIZE, seed: int = POPULATION_SEED) -> list[User]:
    """The first `n` users of the population drawn with `seed`; ids are `u000000`, `u000001`..."""
    frame = population_frame(n, seed)
    return [User(**row) for row in frame.to_dict("records")]


def population_frame(n: int, seed: int) -> pd.DataFrame:
    """The same users as `population(n, seed)`, as a DataFrame (one row per user)."""
    # Whole blocks are always drawn, then cut: a block's draws depend on how many are drawn.
    blocks = [_draw_block(seed, b) for b in range(max(1, -(-n // _BLOCK)))]
    return pd.concat(blocks, ignore_index=True).iloc[:n].reset_index(drop=True)


def users_frame(users: Sequence[User]) -> pd.DataFrame:
    """A DataFrame of `users`, one row each, columns in `User` field order."""
    columns = [f.name for f in fields(User)]
    return pd.DataFrame([asdict(u) for u in users], columns=columns)


def features_frame(users: Sequence[User]) -> pd.DataFrame:
    """The model input columns (`FEATURES`) for `users`."""
    return users_frame(users)[list(FEATURES)]


def _draw_block(seed: int, block: int, size: int = _BLOCK) -> pd.DataFrame:
    rng = np.random.default_rng([seed, block])
    segment = rng.choice(SEGMENTS, size=size, p=SEGMENT_SHARES)
    region = rng.choice(REGIONS, size=size, p=REGION_SHARES)
    spend_scale = np.array([_SPEND_SCALE[s] for s in segment])
    # Engaged users log in often and run many sessions: the two activity signals are correlated.
    engagement = rng.gamma(2.0, 1.0, size=size)
    start = block * _BLOCK
    return pd.DataFrame(
        {
            "user_id": [f"u{i:06d}" for i in range(start, start + size)],
            "region": region,
            "segment": segment,
            "tenure_months": np.minimum(rng.gamma(1.6, 14.0, size=size), 120).astype(int),
            "monthly_spend": np.round(spend_scale * rng.lognormal(0.0, 0.5, size=size), 2),
            "support_tickets": rng.poisson(1.3, size=size),
            "days_since_last_login": np.minimum(
                rng.exponential(14.0 / engagement, size=size), 180
            ).astype(int),
            "sessions_per_week": np.round(rng.gamma(engagement * 1.5, 1.5, size=size), 1),
        }
    )


def _churn_logit(x: Mapping[str, Any], region_effect: Any, segment_effect: Any) -> Any:
    """The true churn log-odds from the numeric features `x`, for scalars or arrays alike.

    The inactivity hinge and the frustrated-and-idle interaction are what a linear model on a
    few features misses; region and segment add their own effects to the log-odds.
    """
    tickets, days = x["support_tickets"], x["days_since_last_login"]
    frustrated_and_idle = (tickets >= 3) & (x["sessions_per_week"] < 3)
    return (
        -2.1
        - 0.02 * x["tenure_months"]
        - 0.15 * np.log(x["monthly_spend"] / 100 + 1e-3)
        + 0.18 * tickets
        # Inactivity only starts to matter after three weeks, then matters a lot.
        + 0.11 * np.maximum(days - 21, 0)
        + 1.6 * frustrated_and_idle
        + region_effect
        + segment_effect
    )


def churn_probabilities(frame: pd.DataFrame) -> np.ndarray:
    """True churn probability without an offer, for each row of a users or features frame."""
    logit = _churn_logit(
        {name: frame[name].to_numpy(float) for name in NUMERIC_FEATURES},
        frame["region"].map(_REGION_EFFECT).to_numpy(float),
        frame["segment"].map(_SEGMENT_EFFECT).to_numpy(float),
    )
    return np.asarray(1.0 / (1.0 + np.exp(-logit)))


def churn_probability(user: User) -> float:
    """True churn probability of `user` without an offer."""
    logit = _churn_logit(
        {name: float(getattr(user, name)) for name in NUMERIC_FEATURES},
        _REGION_EFFECT[user.region],
        _SEGMENT_EFFECT[user.segment],
    )
    return float(1.0 / (1.0 + np.exp(-logit)))


def churn_given_offer(p_churn: np.ndarray | float, offered: np.ndarray | bool) -> np.ndarray:
    """Churn probability once the offer policy has acted: the offer halves it."""
    return np.where(offered, p_churn * OFFER_EFFECT, p_churn)


def draw_retained(user: User, offered: bool, rng: np.random.Generator) -> int:
    """Draw the outcome for `user`: 1 if retained (did not churn), 0 if churned."""
    p = float(churn_given_offer(churn_probability(user), offered))
    return int(rng.random() >= p)


def offers(scores: Sequence[float] | np.ndarray, threshold: float = OFFER_THRESHOLD) -> np.ndarray:
    """Which users the policy makes an offer to, given the model's churn scores."""
    return np.asarray(scores, dtype=float) >= threshold


def expected_retention(
    score_fn: ScoreFn, users: Sequence[User], threshold: float = OFFER_THRESHOLD
) -> float:
    """True retention rate of the policy 'offer when score >= threshold' over `users`.

    `score_fn` gets the users' `features_frame` (the model inputs, one row per user, in order)
    and returns one churn score per row, e.g. `lambda X: model.predict_proba(X)[:, 1]`.
    """
    frame = users_frame(users)
    scores = np.asarray(score_fn(frame[list(FEATURES)]), dtype=float)
    if scores.shape != (len(frame),):
        raise ValueError(f"score_fn returned shape {scores.shape}, expected ({len(frame)},)")
    return retention_rate(frame, offers(scores, threshold))


def retention_rate(frame: pd.DataFrame, offered: np.ndarray) -> float:
    """True retention rate of `frame`'s users when exactly `offered` of them get the offer."""
    return float(np.mean(1.0 - churn_given_offer(churn_probabilities(frame), offered)))


def training_data(n: int, seed: int) -> pd.DataFrame:
    """`n` historical users (no offers were made) with features and the drawn `churned` label.

    The users come from the same distribution as the population but from their own seed, so a
    model never trains on the users it is evaluated against in an experiment.
    """
    frame = population_frame(n, seed)[list(FEATURES)]
    rng = np.random.default_rng([seed, n, 1])
    labels = rng.random(n) < churn_probabilities(frame)
    return frame.assign(**{LABEL: labels.astype(int)})


def fingerprint(df: pd.DataFrame) -> str:
    """sha256 of a canonical serialization of `df` (column order, dtypes and values)."""
    canonical = df.reset_index(drop=True)
    digest = hashlib.sha256()
    digest.update(repr([(c, str(t)) for c, t in canonical.dtypes.items()]).encode())
    # CSV with fixed float formatting is stable across pandas versions, unlike pickle.
    digest.update(canonical.to_csv(index=False, float_format="%.10g").encode())
    return digest.hexdigest()


def drifted_training_data(n: int, seed: int, drift: float) -> pd.DataFrame:
    """Like `training_data(n, seed)`, but from a later period whose users have drifted.

    `drift` in [0, 1]: users log in less often and run fewer sessions, and the APAC share grows
    (a market push). The ground truth is unchanged, so labels follow `churn_probabilities`:
    this is covariate shift, what a model retrained on newer data should absorb.
    `drift=0` returns exactly `training_data(n, seed)`.
    """
    if not 0.0 <= drift <= 1.0:
        raise ValueError(f"drift must be between 0 and 1, got {drift}")
    if drift == 0.0:
        return training_data(n, seed)
    frame = population_frame(n, seed)[list(FEATURES)]
    rng = np.random.default_rng([seed, n, 2])
    moved = rng.random(n) < drift * 0.3
    frame = frame.assign(
        days_since_last_login=np.minimum(
            np.round(frame["days_since_last_login"] * (1 + drift)), 180
        ).astype(int),
        sessions_per_week=np.round(frame["sessions_per_week"] * (1 - drift / 2), 1),
        region=np.where(moved, "apac", frame["region"]),
    )
    labels = rng.random(n) < churn_probabilities(frame)
    return frame.assign(**{LABEL: labels.astype(int)})
