"""Segments in flags/: declared in context.yaml, validated, inlined for embedded mode; and
the HTTP -> Unleash context mapping the client-specification suite checks end to end."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from service.errors import FlagDefinitionError
from service.flags.client_features import client_features
from service.flags.definitions import load_flags
from service.serving import context as unleash_context

CONTEXT = """
context_fields:
  region: {legal_values: [eu, us]}
  segment: {legal_values: [smb, enterprise]}
segments:
  eu-enterprise:
    description: EU enterprise accounts
    constraints:
      - {field: region, operator: IN, values: [eu]}
      - {field: segment, operator: IN, values: [enterprise]}
"""
FLAG = """
flag: f
default: churn:v1
variants: {canary: churn:v2}
environments:
  development:
    enabled: true
    strategies:
      - name: canary
        segments: [SEGMENT]
        constraints: [{field: userId, operator: NOT_IN, values: [blocked]}]
        variants: {canary: 100}
"""


def write(tmp_path: Path, context: str = CONTEXT, segment: str = "eu-enterprise") -> Path:
    (tmp_path / "context.yaml").write_text(textwrap.dedent(context))
    (tmp_path / "f.yaml").write_text(textwrap.dedent(FLAG).replace("SEGMENT", segment))
    return tmp_path


def test_segment_constraints_are_inlined_first_for_the_sdk(tmp_path: Path) -> None:
    features = client_features(load_flags(write(tmp_path)), "development")
    [strategy] = features["features"][0]["strategies"]
    assert [(c["contextName"], c["operator"]) for c in strategy["constraints"]] == [
        ("region", "IN"),
        ("segment", "IN"),
        ("userId", "NOT_IN"),
    ]
    assert "segments" not in strategy


@pytest.mark.parametrize(
    ("context", "segment", "message"),
    [
        (CONTEXT, "nobody", "unknown segment 'nobody' (declared in context.yaml: eu-enterprise)"),
        (
            CONTEXT.replace("field: region", "field: country"),
            "eu-enterprise",
            "segments.eu-enterprise.constraints[0].field: unknown context field 'country'",
        ),
        (
            CONTEXT.replace("values: [eu]", "values: [mars]"),
            "eu-enterprise",
            "mars not legal for 'region'",
        ),
        (
            CONTEXT.replace("    description:", "    colour:"),
            "eu-enterprise",
            "colour: unknown field",
        ),
    ],
    ids=["unknown-segment", "unknown-field", "illegal-value", "unknown-key"],
)
def test_segment_problems_name_file_and_field(
    tmp_path: Path, context: str, segment: str, message: str
) -> None:
    with pytest.raises(FlagDefinitionError) as caught:
        load_flags(write(tmp_path, context, segment))
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("query", "context"),
    [
        ({"userId": "u1"}, {"userId": "u1", "properties": {}}),
        (
            {"appName": "web", "environment": "prod"},
            {"appName": "web", "environment": "prod", "properties": {}},
        ),
        ({"region": "eu"}, {"properties": {"region": "eu"}}),
        ({"properties[segment]": "smb"}, {"properties": {"segment": "smb"}}),
        (
            {"remoteAddress": "10.0.0.1", "currentTime": "2026-01-01T00:00:00Z", "sessionId": "s"},
            {
                "remoteAddress": "10.0.0.1",
                "currentTime": "2026-01-01T00:00:00Z",
                "sessionId": "s",
                "properties": {},
            },
        ),
    ],
    ids=["user", "app-and-environment", "bare-property", "bracket-property", "other-standard"],
)
def test_query_parameters_to_unleash_context(
    query: dict[str, str], context: dict[str, object]
) -> None:
    assert unleash_context.from_query(query) == context
