"""`rollout flags export`: the server's flags and context fields written as flags/ YAML."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from service.flags.documents import Doc, _wire_constraint_doc
from service.flags.model import BUILTIN_CONTEXT_FIELDS, CONTEXT_FILE
from service.flags.payloads import family_of
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


def export_flag(doc: Doc, stable: Mapping[str, str] | None = None) -> str:
    """A flag file for the server's flag; it plans to no change against that server.

    A flag without a flag-level default (any flag made in the Unleash UI) is written without
    `default:`, so it keeps following its family's stable version; a comment says which that
    is now (from `stable`, family -> tag).
    """
    header = f"Exported from Unleash by `rollout flags export`: flag {doc['flag']}."
    if doc.get("default"):
        return to_yaml(doc, header)
    family = next((family_of(t) for t in doc["variants"].values() if t), None)
    tag = (stable or {}).get(family or "")
    note = (
        f"No `default:`: everyone no strategy variant serves gets the stable version of "
        f"'{family}' ({tag or 'none declared yet'}; `rollout models promote` moves it)."
    )
    return to_yaml({k: v for k, v in doc.items() if k != "default"}, f"{header}\n# {note}")


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
    """The server's model flags (a default bento, or a variant naming one) as documents."""
    docs = {name: server.doc(name) for name in server.features}
    return {
        name: doc
        for name, doc in docs.items()
        if doc is not None and (doc["default"] or any(doc["variants"].values()))
    }
