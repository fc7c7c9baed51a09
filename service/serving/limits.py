"""What the HTTP API accepts: lengths the event store can hold, counts, depth, finite numbers.

Every limit is checked before anything is routed or recorded, so the store never refuses a row
the API accepted, and a 400 names the field. The README's "Security" section lists them.
"""

from __future__ import annotations

import math
from typing import Any

from service.errors import BadRequest
from service.store.events import LABEL_LENGTH, NAME_LENGTH, REQUEST_ID_LENGTH

# Nesting of any JSON body (objects and arrays); the model inputs need 3.
MAX_DEPTH = 32
MAX_INTEGER = 2**63
# Unleash context: custom properties per request, their names and values.
MAX_PROPERTIES = 32
MAX_KEY_LENGTH = 64
MAX_VALUE_LENGTH = 256
# Standard fields and the properties stored in columns of their own.
FIELD_LENGTHS = {
    "userId": NAME_LENGTH,
    "sessionId": NAME_LENGTH,
    "remoteAddress": LABEL_LENGTH,
    "region": LABEL_LENGTH,
    "segment": LABEL_LENGTH,
}
# Outcomes: per request, and the lengths of their fields.
MAX_OUTCOMES = 10_000
OUTCOME_LENGTHS = {
    "request_id": REQUEST_ID_LENGTH,
    "user_id": NAME_LENGTH,
    "flag": NAME_LENGTH,
    "metric": NAME_LENGTH,
}


def check_tree(value: Any, limit: int = MAX_DEPTH) -> None:
    """400 when `value` nests deeper than `limit` or holds NaN/Infinity or an integer beyond
    +-2^63 (naming where).

    Iterative, so no body can overflow the stack; a JSON body has no other way to be infinite.
    An ordinary body is walked once without naming anything (where each child's path had been
    formatted, the walk cost a predict 7 us hot); only a refused one is walked again for the
    path to name.
    """
    if not _within_limits(value, limit):
        raise BadRequest(problem(value, limit) or "the body is outside the API's limits")


def _within_limits(value: Any, limit: int) -> bool:
    """Whether a parsed JSON value keeps the limits (exact types: this is what parsers build)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is float:
            if not math.isfinite(item):
                return False
        elif kind is int:
            if not -MAX_INTEGER < item < MAX_INTEGER:
                return False
        elif kind is dict or kind is list:
            if depth > limit:
                return False
            stack.extend(
                [(child, depth + 1) for child in (item.values() if kind is dict else item)]
            )
    return True


def problem(value: Any, limit: int = MAX_DEPTH) -> str | None:
    """The walk that names where: what is wrong with the first problem it meets; None if none."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return f"'{path or 'body'}' must be a finite number, not {item}"
        if isinstance(item, int) and not isinstance(item, bool) and abs(item) >= MAX_INTEGER:
            return f"'{path or 'body'}' is out of range (beyond +-2^63)"
        if isinstance(item, dict):
            children = [(v, f"{path}.{k}" if path else str(k)) for k, v in item.items()]
        elif isinstance(item, list):
            children = [(v, f"{path}[{i}]") for i, v in enumerate(item)]
        else:
            continue
        if depth > limit:
            return f"the body nests deeper than {limit} levels (at '{path}')"
        stack.extend((child, depth + 1, where) for child, where in children)
    return None


def finite_number(value: Any, field: str) -> float:
    """`value` as a finite float; 400 naming `field` for NaN, Infinity or a non-number."""
    if isinstance(value, bool):
        return float(value)
    if not isinstance(value, int | float):
        raise BadRequest(f"'{field}' must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise BadRequest(f"'{field}' must be a finite number, not {value}")
    return number


def check_length(text: str, limit: int, field: str) -> str:
    if len(text) > limit:
        raise BadRequest(f"'{field}' is longer than {limit} characters")
    return text
