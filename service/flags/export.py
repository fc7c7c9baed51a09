"""`rollout flags export`: the server's flags and context fields written as flags/ YAML."""

from __future__ import annotations

from typing import Any

import yaml

from service.flags.definitions import (
    BUILTIN_CONTEXT_FIELDS,
    CONTEXT_FILE,
)
from service.flags.documents import Doc, _wire_constraint_doc
from service.flags.server_state import ServerState

# --- export ----------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Block style for mappings, flow style for short lists of scalars (constraint values)."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(not isinstance(v, dict | list) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def to_yaml(doc: Doc, header: str) -> str:
    body = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return f"# {header}\n{body}"


def export_flag(doc: Doc) -> str:
    """A flag file for the server's flag; it plans to no change against that server."""
    return to_yaml(doc, f"Exported from Unleash by `rollout flags export`: flag {doc['flag']}.")


def export_context(server: ServerState) -> str:
    """context.yaml: the server's custom context fields and its segments."""
    fields_ = {
        f.name: {"description": f.description, "legal_values": list(f.legal_values)}
        for f in server.context_fields.values()
        if f.name not in BUILTIN_CONTEXT_FIELDS
    }
    segments = {
        s.name: {
            "description": s.description,
            "constraints": [_wire_constraint_doc(c) for c in s.constraints],
        }
        for s in server.segments.values()
    }
    doc: Doc = {"context_fields": fields_}
    if segments:
        doc["segments"] = segments
    return to_yaml(doc, f"Exported from Unleash by `rollout flags export`: {CONTEXT_FILE}.")


def model_flags(server: ServerState) -> dict[str, Doc]:
    """The server's model flags (those with a default bento) as documents, by name."""
    docs = {name: server.doc(name) for name in server.features}
    return {name: doc for name, doc in docs.items() if doc is not None and doc["default"]}
