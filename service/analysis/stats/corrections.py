"""Multiple-testing corrections: a family of p-values in, adjusted p-values out.

Used across a report's goal metrics and across the treatment arms of an A/B/n test.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def _holm(p_values: Sequence[float]) -> list[float]:
    m, adjusted, running = len(p_values), [0.0] * len(p_values), 0.0
    for rank, index in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def _benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    m, adjusted, running = len(p_values), [0.0] * len(p_values), 1.0
    order = sorted(range(m), key=lambda i: p_values[i], reverse=True)
    for rank, index in zip(range(m, 0, -1), order, strict=True):
        running = min(running, p_values[index] * m / rank)
        adjusted[index] = min(running, 1.0)
    return adjusted


# A registry: the method's name in decision.json -> its adjustment.
P_VALUE_ADJUSTMENTS: dict[str, Callable[[Sequence[float]], list[float]]] = {
    "holm": _holm,
    "benjamini-hochberg": _benjamini_hochberg,
    "none": list,
}
ADJUSTMENT_NAMES = {
    "holm": "Holm step-down (family-wise error)",
    "benjamini-hochberg": "Benjamini-Hochberg (false discovery rate)",
    "none": "no correction",
}


def adjust_p_values(p_values: Sequence[float], method: str = "holm") -> list[float]:
    """Adjusted p-values for a family of tests (`holm`, `benjamini-hochberg` or `none`)."""
    try:
        adjust = P_VALUE_ADJUSTMENTS[method]
    except KeyError:
        raise ValueError(
            f"unknown correction {method!r}; choose one of {sorted(P_VALUE_ADJUSTMENTS)}"
        ) from None
    return adjust(list(p_values))


def interval_alphas(p_values: Sequence[float], alpha: float, method: str = "holm") -> list[float]:
    """The level `1 - a_i` of each test's interval that agrees with its corrected p-value: the
    interval of test i excludes the null exactly when its adjusted p-value is below `alpha`
    (for a test whose p-value and interval are dual).

    - `none`: `alpha` for every test;
    - `holm`: the step-down's own level, `alpha / (m - r)` for the test of rank r (0 = smallest
      p) while every smaller p was rejected, and from the first test kept on, that test's level
      for the rest (their p-values are at least its p, so their intervals keep the null);
    - `benjamini-hochberg`: the false-coverage-rate level of Benjamini and Yekutieli (2005),
      `R alpha / m` with R the number of rejections (`alpha / m` when there are none).
    """
    m = len(p_values)
    if method == "none" or m <= 1:
        return [alpha] * m
    adjusted = adjust_p_values(p_values, method)
    if method == "benjamini-hochberg":
        rejected = sum(p < alpha for p in adjusted)
        return [alpha * max(rejected, 1) / m] * m
    levels, kept = [0.0] * m, None
    for rank, index in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        levels[index] = kept if kept is not None else alpha / (m - rank)
        if kept is None and adjusted[index] >= alpha:
            kept = levels[index]  # the step-down stops here
    return levels
