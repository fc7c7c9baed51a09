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
