"""How well a model does, as pure functions: AUC and its error, calibration, drift, shadows."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from service.analysis.drift import DriftResult, categorical_drift, numeric_drift
from service.registry.population import (
    CATEGORICAL_FEATURES,
    NUMERIC_FEATURES,
)

CALIBRATION_BINS = 10
# Bootstrap resamples for the calibration error's standard error; seeded so that a report run
# twice on the same rows says the same thing.
CALIBRATION_RESAMPLES = 200


@dataclass(frozen=True)
class Performance:
    """Classification quality on labelled requests (label 1 = churned)."""

    rows: int
    churn_rate: float
    accuracy: float
    auc: float | None
    auc_standard_error: float | None  # Hanley & McNeil (1982)
    brier: float
    calibration_error: float  # expected calibration error over CALIBRATION_BINS equal bins
    calibration: list[tuple[float, float, int]]  # (mean score, observed churn rate, rows)
    # The ECE of a few hundred rows is inflated and noisy (each bin's observed rate wanders by
    # sqrt(p(1-p)/n_b)), so a comparison needs its standard error (bootstrap).
    calibration_error_se: float = 0.0
    # The error and its standard error are over the rows scored below this (None: all rows),
    # `calibration_rows` of them; the curve shows every row.
    calibrated_below: float | None = None
    calibration_rows: int = 0


@dataclass(frozen=True)
class ShadowAgreement:
    """Live vs shadow predictions on the same requests."""

    shadow_bento: str
    requests: int
    failed: int
    agreement: float | None  # same side of 0.5
    mean_abs_difference: float | None


# --- pure metrics -----------------------------------------------------------------------------


def performance(
    scores: np.ndarray, labels: np.ndarray, calibrate_below: float | None = None
) -> Performance | None:
    """Accuracy at 0.5, AUC with its Hanley-McNeil standard error, Brier score, calibration.

    `calibrate_below`: the calibration error is taken over the rows scored below it only.
    A score at or above the product's action threshold (the churn offer) got the action, and
    the action changes the very outcome the score predicts (the offer halves churn): those
    rows measure the score and the action together, not the score. The better a version
    finds the users at risk, the more of its high scores get the offer and the further their
    outcomes fall below its scores, so a sharper model would look less calibrated.
    """
    scores, labels = np.asarray(scores, float), np.asarray(labels, int)
    if scores.size == 0:
        return None
    auc = roc_auc(scores, labels)
    positives = int(labels.sum())
    curve = calibration_curve(scores, labels)
    untouched = scores < calibrate_below if calibrate_below is not None else slice(None)
    calibrated, outcomes = scores[untouched], labels[untouched]
    ece = expected_calibration_error(calibrated, outcomes) if calibrated.size else 0.0
    return Performance(
        rows=int(scores.size),
        churn_rate=float(labels.mean()),
        accuracy=float(np.mean((scores >= 0.5) == (labels == 1))),
        auc=auc,
        auc_standard_error=(
            auc_standard_error(auc, positives, scores.size - positives) if auc else None
        ),
        brier=float(np.mean((scores - labels) ** 2)),
        calibration_error=float(ece),
        calibration=curve,
        calibration_error_se=calibration_error_se(calibrated, outcomes),
        calibrated_below=calibrate_below,
        calibration_rows=int(calibrated.size),
    )


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U / (n1 n0), ties counted half); None if one class."""
    positives = labels == 1
    n1, n0 = int(positives.sum()), int((~positives).sum())
    if n1 == 0 or n0 == 0:
        return None
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    u = ranks[positives].sum() - n1 * (n1 + 1) / 2
    return float(u / (n1 * n0))


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil (1982), Radiology 143:29-36, equation (2)."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = (
        auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2)
    ) / (positives * negatives)
    return math.sqrt(max(variance, 0.0))


def _bins(scores: np.ndarray, bins: int = CALIBRATION_BINS) -> np.ndarray:
    return np.minimum((scores * bins).astype(int), bins - 1)


def expected_calibration_error(scores: np.ndarray, labels: np.ndarray) -> float:
    """Sum over equal-width bins of (rows in bin / rows) * |mean score - observed rate|."""
    return _ece(_bins(scores), scores, labels.astype(float), scores.size)


def _ece(index: np.ndarray, scores: np.ndarray, labels: np.ndarray, n: int) -> float:
    score_sums = np.bincount(index, weights=scores, minlength=CALIBRATION_BINS)
    label_sums = np.bincount(index, weights=labels, minlength=CALIBRATION_BINS)
    return float(np.abs(score_sums - label_sums).sum() / n)


def calibration_error_se(
    scores: np.ndarray, labels: np.ndarray, resamples: int = CALIBRATION_RESAMPLES, seed: int = 0
) -> float:
    """Bootstrap standard error of the expected calibration error (rows resampled)."""
    n = scores.size
    if n < 2:
        return 0.0
    rng = np.random.default_rng(seed)
    index, labels = _bins(scores), labels.astype(float)
    draws = []
    for _ in range(resamples):
        pick = rng.integers(0, n, n)
        draws.append(_ece(index[pick], scores[pick], labels[pick], n))
    return float(np.std(draws, ddof=1))


def calibration_curve(
    scores: np.ndarray, labels: np.ndarray, bins: int = CALIBRATION_BINS
) -> list[tuple[float, float, int]]:
    """(mean score, observed rate, rows) per non-empty equal-width score bin."""
    index = _bins(scores, bins)
    return [
        (
            float(scores[index == b].mean()),
            float(labels[index == b].mean()),
            int((index == b).sum()),
        )
        for b in range(bins)
        if (index == b).any()
    ]


def shadow_agreement(shadow_bento: str, frame: pd.DataFrame) -> ShadowAgreement:
    """`frame`: one row per request with `live` and `shadow` scores and the shadow `status`."""
    ok = frame[(frame["status"] < 500) & frame["shadow"].notna() & frame["live"].notna()]
    same = (ok["live"] >= 0.5) == (ok["shadow"] >= 0.5)
    return ShadowAgreement(
        shadow_bento,
        len(frame),
        int((frame["status"] >= 500).sum()),
        float(same.mean()) if len(ok) else None,
        float((ok["live"] - ok["shadow"]).abs().mean()) if len(ok) else None,
    )


def feature_drift(reference: pd.DataFrame, live: pd.DataFrame) -> list[DriftResult]:
    """PSI plus KS (numeric) or chi-square (categorical) for each model input and the score."""
    results = []
    for name in (*NUMERIC_FEATURES, "score"):
        if name in reference and name in live and live[name].notna().any():
            results.append(numeric_drift(name, reference[name].tolist(), live[name].tolist()))
    for name in CATEGORICAL_FEATURES:
        if name in reference and name in live and live[name].notna().any():
            results.append(
                categorical_drift(name, reference[name].tolist(), live[name].dropna().tolist())
            )
    return results
