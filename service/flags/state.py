"""Where a flag's rollout lives, read and written the same way in both modes.

`EmbeddedFlag` is a file in flags/ (what the embedded selector serves); `ServerFlag` is the
flag on an Unleash server, written through the Admin API with the plan/apply machinery of
service.flags.sync, so a ramp is validated before the first write exactly like an apply. Both
read and write *flag documents* (service.flags.ramp), and after every write the flags/ file is
edited to match, touching only the changed keys (comments and layout stay).

Callers record every write in the audit table (service.flags.audit) with the document it left
behind: that is the baseline the guard compares with to notice a person's change, and
`rollout flags plan`'s drift baseline too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ruamel.yaml.comments import CommentedMap

from service.errors import UnknownFlag
from service.flags import flag_files
from service.flags.definitions import flag_from_document
from service.flags.documents import PROJECT, _normalized, flag_doc, server_flag_doc
from service.flags.model import FlagDefinition, FlagSet
from service.flags.plan import Target, make_plan
from service.flags.ramp import Doc, Move
from service.flags.server_state import read_server
from service.flags.unleash_admin import UnleashAdmin


@dataclass(frozen=True)
class Written:
    """What a write did: the document now in force and the flags/ diff to commit."""

    doc: Doc
    file_diff: str


class FlagLocation(Protocol):
    """A flag's home: read its document, write a move, say where it is."""

    server: str

    def read(self) -> Doc: ...

    def write(self, move: Move) -> Written: ...

    def link(self, title: str, url: str) -> None: ...


def same_doc(a: Doc | None, b: Doc | None) -> bool:
    """Equal as rollouts: variant maps compare as maps, `ramp` (flags/-only) is ignored."""
    if a is None or b is None:
        return a is b
    return _normalized(_core(a)) == _normalized(_core(b))


def _core(doc: Doc) -> Doc:
    return {k: v for k, v in doc.items() if k != "ramp"}


class EmbeddedFlag:
    """The flag in flags/<file>: the embedded selector serves what this file says."""

    def __init__(self, definition: FlagDefinition, flag_set: FlagSet) -> None:
        self.definition, self.flag_set = definition, flag_set
        self.path = Path(definition.file)
        self.server = "embedded"

    def read(self) -> Doc:
        return flag_doc(self.definition)

    def write(self, move: Move) -> Written:
        diff = edit_flag_file(self.path, move)
        return Written(move.doc, diff)

    def link(self, title: str, url: str) -> None:
        """flags/ has no links: the audit row carries the evidence."""


class ServerFlag:
    """The flag on an Unleash server; flags/ is edited to match after each write."""

    def __init__(self, admin: UnleashAdmin, definition: FlagDefinition, flag_set: FlagSet) -> None:
        self.admin, self.definition, self.flag_set = admin, definition, flag_set
        self.server = admin.url

    def read(self) -> Doc:
        """The flag as the server has it (UnleashAdminError when unreachable)."""
        state = read_server(self.admin, [self.definition.name])
        doc = state.doc(self.definition.name)
        if doc is None:
            raise UnknownFlag(f"flag '{self.definition.name}' does not exist on {self.server}")
        return doc

    def write(self, move: Move) -> Written:
        """Validate the new document, then write only this flag's changes; restore on failure."""
        desired = flag_from_document(move.doc, self.flag_set)
        state = read_server(self.admin, [desired.name])
        flag_set = FlagSet(
            {desired.name: desired}, self.flag_set.context_fields, self.flag_set.segments
        )
        plan = make_plan(flag_set, state, {desired.name: None})
        changes = [c for c in plan.changes if c.flag == desired.name]
        target = Target(self.admin, PROJECT, {s.name: s.id for s in state.segments.values()})
        done = 0
        try:
            for change in changes:
                change.write(target)
                done += 1
        except Exception:
            if done:
                self._restore(state)
            raise
        after = server_flag_doc(
            read_server(self.admin, [desired.name]).features[desired.name],  # type: ignore[arg-type]
            state.segment_names,
        )
        return Written(after, edit_flag_file(Path(self.definition.file), move))

    def link(self, title: str, url: str) -> None:
        """Point the flag's link `title` at `url`, so the UI leads to the evidence."""
        self.admin.set_feature_link(PROJECT, self.definition.name, title, url)

    def _restore(self, before: Any) -> None:
        """Put the flag back as it was before a write failed half-way (best effort)."""
        previous = before.doc(self.definition.name)
        if previous is None:
            return
        restored = flag_from_document(previous, self.flag_set)
        flag_set = FlagSet(
            {restored.name: restored}, self.flag_set.context_fields, self.flag_set.segments
        )
        now = read_server(self.admin, [restored.name])
        plan = make_plan(flag_set, now, {restored.name: None})
        target = Target(self.admin, PROJECT, {s.name: s.id for s in now.segments.values()})
        for change in (c for c in plan.changes if c.flag == restored.name):
            change.write(target)


# ---------------------------------------------------------------- flags/ edited in place


def edit_flag_file(path: Path, move: Move) -> str:
    """Set the default, the variants' bentos and the strategies' rollout and weights in `path`;
    return the diff.

    Only those keys change; the file is replaced atomically (`flags.flag_files`).
    """

    def change(data: CommentedMap) -> None:
        if move.doc.get("default"):  # without one, the stable version serves: none is added
            data["default"] = move.doc["default"]
        for name, tag in (move.doc.get("variants") or {}).items():
            if (data.get("variants") or {}).get(name, tag) != tag:
                data["variants"][name] = tag
        for env_name, env in move.doc["environments"].items():
            environments = data.get("environments") or {}
            strategies = environments.get(env_name, {}).get("strategies") or []
            for new in env["strategies"]:
                for old in strategies:
                    if old.get("name") == new["name"]:
                        _update_strategy(old, new)

    return flag_files.edit_flag_file(path, change)


def _update_strategy(old: CommentedMap, new: Doc) -> None:
    if old.get("rollout", 100) != new.get("rollout", 100):
        old["rollout"] = new.get("rollout", 100)
    variants = new.get("variants")
    if variants is not None and dict(old.get("variants") or {}) != variants:
        old["variants"] = flag_files.flow_mapping(variants)
