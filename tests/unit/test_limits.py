"""check_tree: the quick walk refuses exactly what the walk that names the place refuses."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.errors import BadRequest
from service.serving import limits
from service.serving.limits import MAX_INTEGER, check_tree, problem

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=4),
    st.floats(),  # NaN and both infinities included
    st.integers(min_value=-(2**65), max_value=2**65),
    st.sampled_from([MAX_INTEGER - 1, MAX_INTEGER, -MAX_INTEGER, -MAX_INTEGER + 1]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=500, deadline=None)
@given(value=json_values, limit=st.integers(min_value=1, max_value=4))
def test_the_quick_walk_agrees_with_the_naming_walk(value: Any, limit: int) -> None:
    expected = problem(value, limit)
    quick_ok = limits._within_limits(value, limit)
    assert quick_ok == (expected is None), (value, expected)
    if quick_ok:
        check_tree(value, limit)
    else:
        with pytest.raises(BadRequest) as refused:
            check_tree(value, limit)
        assert refused.value.message == expected


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({"inputs": [{"tenure": math.nan}]}, "'inputs[0].tenure' must be a finite number"),
        ({"a": {"b": [1, -math.inf]}}, "'a.b[1]' must be a finite number"),
        ({"big": MAX_INTEGER}, "'big' is out of range"),
        ({"small": -MAX_INTEGER}, "'small' is out of range"),
        ([[[[]]]], "nests deeper than 3 levels (at '[0][0][0]')"),
    ],
)
def test_a_refusal_names_the_place(value: Any, words: str) -> None:
    with pytest.raises(BadRequest) as refused:
        check_tree(value, 3)
    assert words in refused.value.message


def test_an_ordinary_predict_body_passes() -> None:
    body = {
        "context": {"userId": "u1", "properties": {"region": "eu"}},
        "inputs": [{"tenure_months": 15, "monthly_spend": 28.28, "plan": "pro", "x": None}],
    }
    check_tree(body)
    assert limits._within_limits(body, limits.MAX_DEPTH)
    assert check_tree(MAX_INTEGER - 1) is None and check_tree(True) is None
