"""Drift of model inputs and scores between a reference (the training data) and live traffic.

Pure functions over samples: the population stability index with the customary bands (below
0.1 stable, 0.1 to 0.25 moderate, above 0.25 significant; Siddiqi 2006, "Credit Risk
Scorecards"), the two-sample Kolmogorov-Smirnov test for numeric features and the chi-square
test of homogeneity for categorical ones. Each result names its method.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence, Sized
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.25
DEFAULT_BINS = 10
# Empty bins would make PSI infinite; this floor on a bin's share is the usual remedy.
_MIN_SHARE = 1e-4


@dataclass(frozen=True)
class DriftResult:
    """Drift of one feature (or the score): PSI and its band, plus a two-sample test."""

    feature: str
    kind: str  # "numeric" or "categorical"
    psi: float
    band: str  # "stable", "moderate" or "significant"
    test_method: str
    statistic: float
    p_value: float
    reference_size: int
    live_size: int
    bins: list[str]
    reference_shares: list[float]
    live_shares: list[float]


def psi_band(psi: float) -> str:
    """`stable` below 0.1, `moderate` below 0.25, else `significant`."""
    if psi < PSI_MODERATE:
        return "stable"
    return "moderate" if psi < PSI_SIGNIFICANT else "significant"


def population_stability_index(
    reference: Sequence[float] | np.ndarray, live: Sequence[float] | np.ndarray
) -> float:
    """`sum (live - ref) * ln(live / ref)` over bin shares (each share floored at 1e-4)."""
    ref = np.maximum(np.asarray(reference, float), _MIN_SHARE)
    act = np.maximum(np.asarray(live, float), _MIN_SHARE)
    return float(np.sum((act - ref) * np.log(act / ref)))


def numeric_drift(
    feature: str, reference: Sequence[float], live: Sequence[float], bins: int = DEFAULT_BINS
) -> DriftResult:
    """PSI over the reference's quantile bins, and the two-sample Kolmogorov-Smirnov test."""
    ref, act = _finite(reference), _finite(live)
    _need_both(feature, ref, act)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    ref_shares = _shares(np.searchsorted(edges, ref, side="right"), len(edges) + 1)
    live_shares = _shares(np.searchsorted(edges, act, side="right"), len(edges) + 1)
    ks = scipy_stats.ks_2samp(ref, act)
    labels = _bin_labels(edges)
    psi = population_stability_index(ref_shares, live_shares)
    return DriftResult(
        feature,
        "numeric",
        psi,
        psi_band(psi),
        "two-sample Kolmogorov-Smirnov",
        float(ks.statistic),
        float(ks.pvalue),
        len(ref),
        len(act),
        labels,
        list(ref_shares),
        list(live_shares),
    )


def categorical_drift(
    feature: str, reference: Sequence[object], live: Sequence[object]
) -> DriftResult:
    """PSI over the categories, and the chi-square test of homogeneity of the two samples."""
    _need_both(feature, reference, live)
    categories = sorted({str(v) for v in reference} | {str(v) for v in live})
    ref_counts = np.array([sum(str(v) == c for v in reference) for c in categories], float)
    live_counts = np.array([sum(str(v) == c for v in live) for c in categories], float)
    if len(categories) > 1:
        chi2 = scipy_stats.chi2_contingency(np.vstack([ref_counts, live_counts]))
        statistic, p_value = float(chi2.statistic), float(chi2.pvalue)
    else:
        statistic, p_value = 0.0, 1.0
    ref_shares, live_shares = ref_counts / ref_counts.sum(), live_counts / live_counts.sum()
    psi = population_stability_index(ref_shares, live_shares)
    return DriftResult(
        feature,
        "categorical",
        psi,
        psi_band(psi),
        "chi-square test of homogeneity",
        statistic,
        p_value,
        len(reference),
        len(live),
        categories,
        list(ref_shares),
        list(live_shares),
    )


def _finite(values: Sequence[float]) -> np.ndarray:
    array = np.asarray([v for v in values if v is not None], float)
    return array[np.isfinite(array)]


def _need_both(feature: str, reference: Sized, live: Sized) -> None:
    if len(reference) == 0 or len(live) == 0:
        raise ValueError(f"feature {feature!r}: drift needs reference and live values")


def _shares(bin_index: np.ndarray, bins: int) -> np.ndarray:
    counts = np.bincount(bin_index, minlength=bins).astype(float)
    return counts / counts.sum()


def _bin_labels(edges: np.ndarray) -> list[str]:
    bounds = [-math.inf, *edges.tolist(), math.inf]
    return [f"[{lo:.3g}, {hi:.3g})" for lo, hi in itertools.pairwise(bounds)]
