"""The per-bento circuit breaker as a table of event sequences and the state they leave."""

from __future__ import annotations

import pytest

from service.serving.circuit_breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreakers


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(steps: str) -> tuple[CircuitBreakers, list[bool]]:
    """Apply steps: f = failure, s = success, a = allow() asked, w = wait past the reset."""
    clock = Clock()
    breakers = CircuitBreakers(failure_threshold=3, reset_seconds=10, clock=clock)
    allowed = []
    for step in steps:
        if step == "f":
            breakers.failure("b")
        elif step == "s":
            breakers.success("b")
        elif step == "a":
            allowed.append(breakers.allow("b"))
        elif step == "w":
            clock.now += 10
    return breakers, allowed


@pytest.mark.parametrize(
    ("steps", "state", "allowed"),
    [
        pytest.param("", CLOSED, [], id="new-bento-is-closed"),
        pytest.param("ffa", CLOSED, [True], id="below-threshold-stays-closed"),
        pytest.param("ffsfa", CLOSED, [True], id="a-success-resets-the-count"),
        pytest.param("fffa", OPEN, [False], id="threshold-opens"),
        pytest.param("fffw", HALF_OPEN, [], id="after-the-pause-it-is-half-open"),
        pytest.param("fffwaa", HALF_OPEN, [True, False], id="half-open-lets-one-probe-through"),
        pytest.param("fffwasa", CLOSED, [True, True], id="a-good-probe-closes"),
        pytest.param("fffwafa", OPEN, [True, False], id="a-bad-probe-reopens"),
        pytest.param("fffwafwa", HALF_OPEN, [True, True], id="reopened-probes-again-later"),
    ],
)
def test_breaker_states(steps: str, state: str, allowed: list[bool]) -> None:
    breakers, seen = run(steps)
    assert breakers.state("b") == state
    assert seen == allowed


def test_bentos_have_separate_breakers() -> None:
    breakers = CircuitBreakers(failure_threshold=1)
    breakers.failure("churn:v2")
    assert breakers.states(["churn:v1", "churn:v2"]) == {"churn:v1": CLOSED, "churn:v2": OPEN}
