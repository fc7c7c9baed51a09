"""service.analysis.drift: PSI with bands, KS for numeric, chi-square for categorical."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.analysis.drift import (
    categorical_drift,
    numeric_drift,
    population_stability_index,
    psi_band,
)


def test_psi_matches_the_formula_by_hand():
    # Siddiqi (2006): PSI = sum (A - E) ln(A / E). Two bins, 50/50 -> 60/40:
    # 0.1 ln(1.2) + (-0.1) ln(0.8) = 0.0182321557 + 0.0223143551 = 0.0405465108.
    assert population_stability_index([0.5, 0.5], [0.6, 0.4]) == pytest.approx(0.0405465108)


def test_psi_floors_empty_bins_instead_of_going_infinite():
    psi = population_stability_index([0.5, 0.5, 0.0], [0.5, 0.4, 0.1])
    assert math.isfinite(psi) and psi > 0.25


@pytest.mark.parametrize(
    ("psi", "band"),
    [
        (0.0, "stable"),
        (0.0999, "stable"),
        (0.1, "moderate"),
        (0.2499, "moderate"),
        (0.25, "significant"),
        (3.0, "significant"),
    ],
)
def test_psi_bands(psi, band):
    assert psi_band(psi) == band


@pytest.mark.parametrize(
    ("shift", "band", "ks_significant"),
    [(0.0, "stable", False), (0.45, "moderate", True), (1.0, "significant", True)],
)
def test_numeric_drift_bands_a_shifted_normal(shift, band, ks_significant):
    rng = np.random.default_rng(1)
    result = numeric_drift("x", rng.normal(0, 1, 20_000), rng.normal(shift, 1, 20_000))
    assert result.band == band
    assert (result.p_value < 0.01) == ks_significant
    assert result.test_method == "two-sample Kolmogorov-Smirnov"
    assert sum(result.reference_shares) == pytest.approx(1)
    assert len(result.bins) == 10


def test_ks_statistic_matches_scipy_docs_shape():
    # Identical samples: D = 0, p = 1 (Kolmogorov-Smirnov, any textbook).
    result = numeric_drift("x", [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0])
    assert result.statistic == 0.0 and result.p_value == pytest.approx(1.0)


def test_categorical_drift_uses_chi_square():
    # Agresti (2007) style 2x3 table: reference 50/30/20 per 100, live 20/30/50 per 100.
    reference = ["eu"] * 50 + ["us"] * 30 + ["apac"] * 20
    live = ["eu"] * 20 + ["us"] * 30 + ["apac"] * 50
    result = categorical_drift("region", reference, live)
    # Expected counts 35/30/35 per row: X^2 = 2 * (15^2/35 + 0 + 15^2/35) = 25.714.
    assert result.statistic == pytest.approx(25.7142857)
    assert result.test_method == "chi-square test of homogeneity"
    assert result.bins == ["apac", "eu", "us"]
    assert result.band == "significant"


def test_drift_needs_values_on_both_sides():
    with pytest.raises(ValueError, match="'x'"):
        numeric_drift("x", [], [1.0])
