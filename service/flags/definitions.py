"""Flags as code: the YAML files in flags/ parsed into typed definitions and validated.

Every problem is reported with the file, the flag and the field, and all of them are
collected before anything is raised, so one run of `rollout flags validate` shows the lot.
Unleash's wire format lives in `flags.client_features`; this module knows only our YAML.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from service.errors import FlagDefinitionError, FlagProblem
from service.flags.flag_reader import FlagReader, read_yaml
from service.flags.model import (
    BUILTIN_CONTEXT_FIELDS,
    CONTEXT_FILE,
    ContextField,
    FlagDefinition,
    FlagSet,
    Segment,
)


def load_flags(flags_dir: Path, known_bentos: Iterable[str] | None = None) -> FlagSet:
    """Parse and validate every flag file; raise FlagDefinitionError listing all problems.

    `known_bentos` are the tags a flag may point at (declared in bentos/); None skips that check.
    """
    problems: list[FlagProblem] = []
    context_fields = _load_context(flags_dir, problems)
    segments = _load_segments(flags_dir, context_fields, problems)
    reader = FlagReader(
        context_fields, set(known_bentos) if known_bentos is not None else None, problems
    )
    reader.segments = segments
    flags: dict[str, FlagDefinition] = {}
    files = sorted(p for p in flags_dir.glob("*.y*ml") if p.name != CONTEXT_FILE)
    if not files:
        problems.append(FlagProblem(str(flags_dir), "-", "-", "no flag files (*.yaml) found"))
    for path in files:
        for flag in reader.read_file(path):
            if flag.name in flags:
                problems.append(
                    FlagProblem(
                        flag.file,
                        flag.name,
                        "flag",
                        f"duplicate flag name, also in {flags[flag.name].file}",
                    )
                )
            else:
                flags[flag.name] = flag
    if problems:
        raise FlagDefinitionError(problems)
    return FlagSet(flags=flags, context_fields=context_fields, segments=segments)


def flag_from_document(
    doc: dict[str, Any], flag_set: FlagSet, known_bentos: Iterable[str] | None = None
) -> FlagDefinition:
    """A flag document (a flag file's content, e.g. one read from a server) as a definition.

    Checked exactly like a file, against `flag_set`'s context fields and segments; raises
    FlagDefinitionError listing every problem.
    """
    problems: list[FlagProblem] = []
    reader = FlagReader(
        flag_set.context_fields, set(known_bentos) if known_bentos is not None else None, problems
    )
    reader.segments = flag_set.segments
    reader.file = str(doc.get("flag", "-"))
    flag = reader.read_flag(doc)
    if problems or flag is None:
        raise FlagDefinitionError(problems)
    return flag


def _load_context(flags_dir: Path, problems: list[FlagProblem]) -> dict[str, ContextField]:
    path = flags_dir / CONTEXT_FILE
    fields_ = {name: ContextField(name) for name in BUILTIN_CONTEXT_FIELDS}
    if not path.exists():
        return fields_
    doc = read_yaml(path, problems) or {}
    raw = doc.get("context_fields", {}) if isinstance(doc, dict) else None
    if not isinstance(raw, dict):
        problems.append(FlagProblem(str(path), "-", "context_fields", "must be a mapping"))
        return fields_
    for name, spec in raw.items():
        spec = spec or {}
        values = spec.get("legal_values", []) if isinstance(spec, dict) else None
        if not isinstance(values, list):
            problems.append(
                FlagProblem(
                    str(path),
                    "-",
                    f"context_fields.{name}.legal_values",
                    "must be a list of strings",
                )
            )
            values = []
        fields_[str(name)] = ContextField(
            str(name), str(spec.get("description", "")), tuple(str(v) for v in values)
        )
    return fields_


def _load_segments(
    flags_dir: Path, context_fields: dict[str, ContextField], problems: list[FlagProblem]
) -> dict[str, Segment]:
    """The `segments:` section of context.yaml: name -> description and constraints."""
    path = flags_dir / CONTEXT_FILE
    doc = read_yaml(path, []) if path.exists() else None
    raw = doc.get("segments", {}) if isinstance(doc, dict) else {}
    if not isinstance(raw, dict):
        problems.append(FlagProblem(str(path), "-", "segments", "must be a mapping"))
        return {}
    reader = FlagReader(context_fields, None, problems)
    reader.file = str(path)
    segments = {}
    for name, spec in raw.items():
        where = f"segments.{name}"
        if not isinstance(spec, dict):
            reader.problem(where, "must be a mapping with 'description' and 'constraints'")
            continue
        reader.unknown_keys(spec, {"description", "constraints"}, f"{where}.")
        constraints = tuple(reader.read_constraints(spec.get("constraints", []), where))
        segments[str(name)] = Segment(str(name), str(spec.get("description", "")), constraints)
    return segments
