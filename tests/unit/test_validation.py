"""service.analysis.validation: metrics with golden values, keep / investigate / rollback rule, and
the event store reads (live rows with labels, serving stats, shadow agreement)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from service.analysis.model_quality import (
    Performance,
    ShadowAgreement,
    auc_standard_error,
    calibration_curve,
    performance,
    roc_auc,
)
from service.analysis.queries import Window
from service.analysis.reports import exit_code, parse_window_option
from service.analysis.validation import decide_validation, recommend
from service.analysis.validation_evidence import (
    OfflineReference,
    ValidationEvidence,
    ValidationPolicy,
    gather,
)
from service.analysis.validation_queries import Serving
from service.registry.population import churn_given_offer, churn_probabilities, population_frame
from service.store.events import create_engine, exposures, outcomes

FLAG = "churn-model"
T0 = 1_793_577_600.0
_ids = itertools.count()


def test_auc_matches_sklearn_docs():
    # scikit-learn roc_auc_score docs: y = [0, 0, 1, 1], scores [0.1, 0.4, 0.35, 0.8] -> 0.75.
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75


def test_auc_counts_ties_half_and_needs_both_classes():
    assert roc_auc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5
    assert roc_auc(np.array([0.5, 0.7]), np.array([1, 1])) is None


def test_auc_standard_error_is_hanley_mcneil():
    # Hanley & McNeil (1982) eq. 2 with A = 0.75, two positives, two negatives:
    # Q1 = 0.6, Q2 = 0.642857; var = (0.1875 + 0.0375 + 0.080357) / 4 = 0.076339.
    assert auc_standard_error(0.75, 2, 2) == pytest.approx(0.076339**0.5, rel=1e-4)


def test_calibration_curve_and_error():
    scores = np.array([0.05, 0.15, 0.15, 0.95])
    labels = np.array([0, 0, 1, 1])
    assert calibration_curve(scores, labels) == [(0.05, 0.0, 1), (0.15, 0.5, 2), (0.95, 1.0, 1)]
    perf = performance(scores, labels)
    # ECE = (1 * 0.05 + 2 * 0.35 + 1 * 0.05) / 4 = 0.2
    assert perf.calibration_error == pytest.approx(0.2)
    assert perf.accuracy == 0.75  # 0.15 with label 1 is the miss


def perf(auc=0.8, rows=5_000, ece=0.01, ece_se=0.004):
    return Performance(rows, 0.2, 0.85, auc, 0.007, 0.12, ece, [], ece_se, None, rows)


def calibrated_sample(rows: int, seed: int, scale: float = 1.0) -> Performance:
    """Labels drawn from probabilities in the demo's range; the scores are those probabilities
    times `scale` (calibrated at 1; the same ranking, so the same AUC, at any scale)."""
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0.05, 0.6, rows)
    labels = (rng.random(rows) < truth).astype(int)
    result = performance(truth * scale, labels)
    assert result is not None
    return result


def test_a_calibrated_model_on_a_few_hundred_rows_is_not_called_miscalibrated():
    # The issue's demo case: ~300 labelled users per arm, both versions equally calibrated.
    # A point estimate of the ECE difference exceeds the 0.02 margin often by chance alone;
    # with the standard error the rule stays quiet at about the alpha rate.
    policy = ValidationPolicy()
    alarms = point_estimate_alarms = 0
    for seed in range(200):
        live, prev = calibrated_sample(300, seed), calibrated_sample(300, 10_000 + seed)
        point_estimate_alarms += (  # the rule before: over 0.05 and worse by over 0.02
            live.calibration_error > 0.05 and live.calibration_error - prev.calibration_error > 0.02
        )
        found = recommend(evidence(live=live, previous_live=prev), policy)
        alarms += found[0] == "investigate"
    assert point_estimate_alarms > 20, point_estimate_alarms  # the trap is real: over 10%
    assert alarms <= 200 * 0.05 + 3 * (200 * 0.05 * 0.95) ** 0.5


def test_a_really_miscalibrated_model_is_still_called_so():
    live, prev = calibrated_sample(5_000, 1, scale=0.7), calibrated_sample(5_000, 2)
    assert live.calibration_error_se < 0.01 < live.calibration_error - prev.calibration_error
    recommendation, reasons = recommend(evidence(live=live, previous_live=prev), ValidationPolicy())
    assert recommendation == "investigate" and "miscalibrated" in " ".join(reasons)


def test_calibration_error_standard_error_shrinks_with_rows():
    small, large = calibrated_sample(300, 3), calibrated_sample(30_000, 3)
    assert 0 < large.calibration_error_se < small.calibration_error_se / 5


def evidence(**changes):
    base = {
        "bento": "churn:v2",
        "previous": "churn:v1",
        "live": perf(),
        "previous_live": perf(0.8),
        "offline": {"overall": {"auc": 0.81}},
        "by_group": {},
        "serving": Serving(10_000, 10, 0, 20.0, 50.0, 90.0),
        "drift": [],
        "shadows": [],
        "missing": [],
    }
    return ValidationEvidence(**{**base, **changes})


@pytest.mark.parametrize(
    ("changes", "recommendation", "words"),
    [
        pytest.param({}, "keep", "performs as expected", id="healthy"),
        pytest.param(
            {"serving": Serving(1_000, 100, 0, 1, 1, 1)}, "rollback", "error rate", id="errors"
        ),
        pytest.param({"live": perf(0.74)}, "rollback", "below the previous", id="auc-drop"),
        pytest.param({"live": perf(0.79)}, "keep", "", id="auc-drop-within-tolerance"),
        pytest.param(
            {"live": perf(0.74), "previous_live": None},
            "investigate",
            "below the model card",
            id="auc-vs-card",
        ),
        pytest.param({"live": perf(ece=0.2)}, "investigate", "miscalibrated", id="calibration"),
        pytest.param(
            {"shadows": [ShadowAgreement("churn:v3", 500, 0, 0.7, 0.2)]},
            "investigate",
            "agrees on 70.0%",
            id="shadow",
        ),
        pytest.param(
            {
                "live": None,
                "serving": Serving(0, 0, 0, None, None, None),
                "missing": ["no successful predictions"],
            },
            "hold",
            "missing",
            id="no-data",
        ),
    ],
)
def test_validation_rule(changes, recommendation, words):
    found, reasons = recommend(evidence(**changes), ValidationPolicy())
    assert found == recommendation, reasons
    assert words in " ".join(reasons)


def test_significant_drift_means_investigate():
    from service.analysis.drift import numeric_drift

    rng = np.random.default_rng(0)
    drift = numeric_drift("tenure_months", rng.normal(0, 1, 5_000), rng.normal(2, 1, 5_000))
    found, reasons = recommend(evidence(drift=[drift]), ValidationPolicy())
    assert found == "investigate" and "tenure_months" in reasons[0]


# --- against an event store -------------------------------------------------------------------


@pytest.fixture
def engine(tmp_path) -> Iterator[sa.Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'events.db'}")
    yield engine
    engine.dispose()


def populate(engine, *, users=2_000, seed=1, drift=0.0):
    """Live churn:v2 predictions near the truth, retained outcomes, shadow rows for half."""
    frame = population_frame(users, seed)
    truth = churn_probabilities(frame)
    rng = np.random.default_rng(seed)
    frame = frame.assign(tenure_months=frame["tenure_months"] * (1 + drift))
    records = frame.to_dict("records")
    rows, labels = [], []
    for n, (record, p) in enumerate(zip(records, truth, strict=True)):
        request = f"r{next(_ids)}"
        score = float(np.clip(p + rng.normal(0, 0.05), 0, 1))
        common = {
            "ts": T0 + n,
            "request_id": request,
            "flag": FLAG,
            "environment": "t",
            "user_id": f"u{n}",
            "region": record["region"],
            "segment": record["segment"],
            "inputs": [record],
            "fallback": False,
        }
        rows.append(
            {
                **common,
                "variant": "treatment",
                "bento": "churn:v2",
                "reason": "strategy_variant",
                "status": 200 if n % 50 else 503,
                "latency_ms": 10.0 + n % 7,
                "prediction": score if n % 50 else None,
                "shadow": False,
            }
        )
        if n % 2 == 0:
            rows.append(
                {
                    **common,
                    "variant": "shadow",
                    "bento": "churn:v3",
                    "reason": "shadow",
                    "status": 200 if n % 10 else 599,
                    "latency_ms": 12.0,
                    "prediction": score if n % 10 else None,
                    "shadow": True,
                }
            )
        labels.append(
            {
                "ts": T0 + n + 1,
                "request_id": request,
                "metric": "retained",
                "value": float(rng.random() >= p),
            }
        )
    with engine.begin() as conn:
        conn.execute(exposures.insert(), rows)
        conn.execute(outcomes.insert(), labels)


def card(rows=5_000):
    from service.registry.population import FEATURES, training_data

    reference = training_data(rows, 11)[list(FEATURES)]
    return OfflineReference(
        "churn:v2",
        {"overall": {"auc": 0.78}},
        reference.assign(score=churn_probabilities(reference)),
        [],
    )


def test_gather_reads_labels_serving_and_shadows(engine):
    populate(engine)
    ev = gather(engine, flag=FLAG, bento="churn:v2", previous=None, window=Window(), card=card())
    assert ev.serving.requests == 2_000 and ev.serving.errors == 40
    assert ev.live.rows == 1_960  # the 503s made no prediction
    assert 0.7 < ev.live.auc < 0.9
    assert set(ev.by_group) == {"segment", "region"}
    (shadow,) = ev.shadows
    assert (shadow.shadow_bento, shadow.requests, shadow.failed) == ("churn:v3", 1_000, 200)
    assert shadow.agreement == 1.0
    assert {d.feature for d in ev.drift} >= {"tenure_months", "score", "region", "segment"}
    decision = decide_validation(ev, flag=FLAG, window=Window())
    assert decision.recommendation == "keep", decision.reasons
    assert decision.kind == "validation"
    names = [c.name for c in decision.checks]
    assert {"auc", "error_rate", "drift_tenure_months", "shadow_churn:v3"} <= set(names)


def test_drifted_inputs_are_found(engine):
    populate(engine, drift=1.5)
    ev = gather(engine, flag=FLAG, bento="churn:v2", previous=None, window=Window(), card=card())
    decision = decide_validation(ev, flag=FLAG, window=Window())
    assert decision.recommendation == "investigate"
    assert "drift in tenure_months" in " ".join(decision.reasons)


def test_unknown_bento_holds_saying_what_is_missing(engine):
    populate(engine, users=50)
    empty = OfflineReference("churn:v9", {}, pd.DataFrame(), ["model card of churn:v9: no bento"])
    ev = gather(engine, flag=FLAG, bento="churn:v9", previous=None, window=Window(), card=empty)
    decision = decide_validation(ev, flag=FLAG, window=Window())
    assert decision.recommendation == "hold"
    assert any("no successful predictions of churn:v9" in m for m in decision.missing)
    assert exit_code(decision.to_dict()) == 3


NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        (None, {"window_start": "a", "window_end": "b"}),
        ("2h", {"window_start": "2026-11-25T10:00:00+00:00", "window_end": None}),
        ("30m", {"window_start": "2026-11-25T11:30:00+00:00", "window_end": None}),
        ("2026-11-01/2026-11-02", {"window_start": "2026-11-01", "window_end": "2026-11-02"}),
        ("2026-11-01/", {"window_start": "2026-11-01", "window_end": None}),
    ],
)
def test_parse_window_option(window, expected):
    options = {"window_start": "a", "window_end": "b"}
    assert parse_window_option(window, options, now=NOW) == expected


# --- issue 13: like with like ------------------------------------------------------------------


def test_the_issues_healthy_v2_is_kept_when_compared_like_with_like():
    """The demo's churn:v2 had live AUC 0.710 against 0.773 on its card, because its own
    offers change who churns; the previous version in the same window is just as far below
    its card, so the comparison that decides (same window, same labels) says keep."""
    ev = evidence(
        live=perf(0.710, ece=0.09),
        previous_live=perf(0.700, ece=0.085),
        offline={"overall": {"auc": 0.773}},
    )
    found, reasons = recommend(ev, ValidationPolicy())
    assert found == "keep", reasons
    checks = {c.name: c for c in decide_validation(ev, flag="f", window=Window()).checks}
    assert checks["auc"].details["offline_comparison"] == "informational"
    # Without the previous version there is nothing like-for-like: the card still speaks.
    alone = evidence(live=perf(0.710), previous_live=None, offline={"overall": {"auc": 0.773}})
    found, reasons = recommend(alone, ValidationPolicy())
    assert found == "investigate" and "compare like with like" in " ".join(reasons)


def test_offers_lower_live_auc_for_every_version_alike():
    """Simulated on the demo's population: scores near the truth, offers above 0.5 halve the
    churn of those offered, labels drawn afterwards. The live AUC falls well below the offline
    (offer-free) AUC for both versions, and the rule keeps the better one."""
    frame = population_frame(20_000, seed=7)
    truth = churn_probabilities(frame)
    rng = np.random.default_rng(7)
    scores = {
        "v2": np.clip(truth + rng.normal(0, 0.05, truth.size), 0, 1),
        "v1": np.clip(truth + rng.normal(0, 0.08, truth.size), 0, 1),
    }
    offline = {k: performance(s, rng.random(truth.size) < truth) for k, s in scores.items()}
    live = {}
    for version, score in scores.items():
        churned = rng.random(truth.size) < churn_given_offer(truth, score >= 0.5)
        live[version] = performance(score, churned)
    assert offline["v2"].auc - live["v2"].auc > 0.05  # the card comparison would cry wolf
    ev = evidence(
        live=live["v2"], previous_live=live["v1"], offline={"overall": {"auc": offline["v2"].auc}}
    )
    found, reasons = recommend(ev, ValidationPolicy())
    assert found == "keep", reasons


def test_calibration_is_judged_below_the_action_threshold_only():
    """Scores at or above the offer threshold got the offer: their churn is halved."""
    scores = np.array([0.1, 0.1, 0.3, 0.3, 0.8, 0.8, 0.8, 0.8, 0.8])
    labels = np.array([0, 0, 1, 0, 1, 0, 0, 0, 0])
    everything = performance(scores, labels)
    below = performance(scores, labels, calibrate_below=0.5)
    assert everything.calibration_error > 0.3  # 0.8 predicted, 0.2 observed: the offer's effect
    # Below 0.5: (2 * 0.1 + 2 * 0.2) / 4 = 0.15 over the four requests no offer touched.
    assert below.calibration_error == pytest.approx(0.15)
    assert (below.calibration_rows, below.calibrated_below) == (4, 0.5)
    assert below.calibration == everything.calibration  # the curve still shows every request
    assert below.auc == everything.auc and below.rows == 9


def _offered_labels(truth: np.ndarray, score: np.ndarray, seed: int) -> np.ndarray:
    """Churn drawn after the offer (at a score of 0.5 or more) halved it, as in the demo."""
    rng = np.random.default_rng(seed)
    return (rng.random(truth.size) < churn_given_offer(truth, score >= 0.5)).astype(int)


def test_a_sharper_calibrated_version_is_not_called_miscalibrated_for_its_offers():
    """The demo at 20,000 users: churn:v2 finds the users at risk better, so more of its high
    scores get the offer and their churn falls below its scores; judged over every request its
    calibration error was 0.049 against v1's 0.015 ("investigate"). Both versions here are
    calibrated on offer-free outcomes (v2 scores the truth; v1 scores the mean truth of a
    coarse, noisy bin, calibrated by construction and too blunt to reach the offer), so
    neither is miscalibrated."""
    frame = population_frame(20_000, seed=5)
    truth = churn_probabilities(frame)
    rng = np.random.default_rng(5)
    coarse = np.floor(np.clip(truth + rng.normal(0, 0.5, truth.size), 0, 0.999) * 5)
    blunt = pd.Series(truth).groupby(coarse).transform("mean").to_numpy()
    scores = {"v2": truth, "v1": blunt}
    labels = {v: _offered_labels(truth, s, seed=i) for i, (v, s) in enumerate(scores.items())}
    overall = {v: performance(s, labels[v]) for v, s in scores.items()}
    # The trap: over every request the sharper version looks worse by more than the margin.
    gap = overall["v2"].calibration_error - overall["v1"].calibration_error
    assert gap > ValidationPolicy().calibration_margin
    live = {v: performance(s, labels[v], calibrate_below=0.5) for v, s in scores.items()}
    assert live["v2"].calibration_error < 0.02
    ev = evidence(live=live["v2"], previous_live=live["v1"])
    found, reasons = recommend(ev, ValidationPolicy())
    assert found == "keep", reasons
    trapped = evidence(live=overall["v2"], previous_live=overall["v1"])
    assert recommend(trapped, ValidationPolicy())[0] == "investigate"


def test_drift_on_a_small_sample_triggers_nothing():
    """PSI on 50 values from the training distribution itself lands in the "significant" band
    about a third of the time (measured 32% in the issue); below the minimum sample it is
    reported but never a finding."""
    from service.analysis.drift import numeric_drift

    rng = np.random.default_rng(3)
    runs = [numeric_drift("x", rng.normal(0, 1, 5_000), rng.normal(0, 1, 50)) for _ in range(200)]
    significant = sum(d.band == "significant" for d in runs) / len(runs)
    assert significant > 0.1  # the chance PSI of a small sample
    policy = ValidationPolicy()
    assert all(recommend(evidence(drift=[d]), policy)[0] == "keep" for d in runs)
    checks = decide_validation(evidence(drift=runs[:1]), flag="f", window=Window()).checks
    row = {c.name: c for c in checks}["drift_x"]
    assert row.passed and row.details["counts"] is False
