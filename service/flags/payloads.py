"""A variant's payload as people write it in the Unleash UI: which bento it names.

Two forms route the same: a string payload `churn:v2`, or a JSON payload `{"bento": "churn:v2"}`
(other JSON keys are ignored, so a team may keep notes there). Anything else names no bento,
and the reading says why in words a person can act on in the UI.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

BENTO_KEY = "bento"
# family:version, as BentoML tags are written; `latest` is refused (never route to a moving tag)
_TAG = re.compile(r"^[a-z0-9][a-z0-9_.-]*:[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class PayloadReading:
    """The bento a payload names, or why it names none."""

    bento: str | None
    problem: str | None = None


def read_payload(payload: Mapping[str, Any] | None) -> PayloadReading:
    """The bento tag in a variant payload (`{"type": ..., "value": ...}`), never raising."""
    if not payload or payload.get("value") in (None, ""):
        return PayloadReading(None, "the variant has no payload; set it to a bento tag")
    kind, value = str(payload.get("type") or "string"), payload["value"]
    if not isinstance(value, str):
        return PayloadReading(None, f"payload value {value!r} is not text")
    text = value.strip()
    if kind == "json" or text.startswith("{"):
        return _read_json(text)
    return _read_tag(text, f"string payload '{text}'")


def _read_json(text: str) -> PayloadReading:
    try:
        doc = json.loads(text)
    except ValueError:
        return PayloadReading(None, "JSON payload is not valid JSON")
    if not isinstance(doc, dict) or BENTO_KEY not in doc:
        return PayloadReading(None, f'JSON payload has no "{BENTO_KEY}" key')
    if not isinstance(doc[BENTO_KEY], str):
        return PayloadReading(None, f'JSON payload\'s "{BENTO_KEY}" is not a string')
    return _read_tag(doc[BENTO_KEY].strip(), f'JSON payload "{BENTO_KEY}": "{doc[BENTO_KEY]}"')


def _read_tag(tag: str, what: str) -> PayloadReading:
    if not _TAG.match(tag):
        return PayloadReading(None, f"{what} is not a bento tag of the form family:version")
    if tag.endswith(":latest"):
        return PayloadReading(None, f"{what}: name an explicit version, never 'latest'")
    return PayloadReading(tag)


def family_of(tag: str) -> str:
    """`churn` for `churn:v2`."""
    return tag.partition(":")[0]
