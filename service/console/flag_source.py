"""Where the console reads flags: flags/ in embedded mode, the Unleash Admin API in server mode.

The same choice as the selector's (`UNLEASH_URL` set means server mode). In server mode the
console holds an admin token (UNLEASH_ADMIN_TOKEN or UNLEASH_ADMIN_TOKEN_FILE), because its
actions write the flag and its timeline reads Unleash's event log; flags/ still supplies what
Unleash does not hold (the ramp schedule). Problems never stop a page: a flag file that does not
load, or a flag on the server that would not validate, is listed with the flag.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from service.config import Settings
from service.errors import FlagDefinitionError, RolloutError
from service.flags.audit import AuditStore
from service.flags.definitions import flag_from_document, load_flags
from service.flags.documents import flag_doc
from service.flags.model import FlagDefinition, FlagSet, Segment
from service.flags.ramp import Doc
from service.flags.server_state import read_all_flags
from service.flags.state import EmbeddedFlag, FlagLocation, ServerFlag
from service.flags.unleash_admin import UnleashAdmin, admin_from_environment
from service.registry.versions import declared_bentos
from service.store.events import create_engine

EMBEDDED = "embedded"


@dataclass
class FlagsRead:
    """Every flag's document, its flags/ definition when there is one, and its problems."""

    mode: str  # embedded | the Unleash URL
    docs: dict[str, Doc]
    definitions: dict[str, FlagDefinition]
    problems: dict[str, list[str]] = field(default_factory=dict)  # flag ("" = all) -> lines
    segments: dict[str, Segment] = field(default_factory=dict)  # from flags/context.yaml


class FlagSource:
    """Reads flags for the pages and gives the actions a flag's home (FlagLocation)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.server_url = settings.unleash_url
        self._engine = create_engine(settings.event_store_url)
        self.store = AuditStore(self._engine)

    @property
    def mode(self) -> str:
        return self.server_url or EMBEDDED

    @contextmanager
    def admin(self) -> Iterator[UnleashAdmin]:
        with admin_from_environment(self.server_url) as admin:
            yield admin

    def read(self) -> FlagsRead:
        flag_set, problems = self._flags_dir()
        definitions = dict(flag_set.flags) if flag_set else {}
        if not self.server_url:
            docs = {name: flag_doc(d) for name, d in definitions.items()}
            read = FlagsRead(EMBEDDED, docs, definitions, problems)
        else:
            with self.admin() as admin:
                state = read_all_flags(admin)
            found = {name: state.doc(name) for name in state.features}
            docs = {name: doc for name, doc in found.items() if doc is not None}
            read = FlagsRead(state.url, docs, definitions, problems)
        self._check(read, flag_set)
        read.segments = dict(flag_set.segments) if flag_set else {}
        return read

    def _flags_dir(self) -> tuple[FlagSet | None, dict[str, list[str]]]:
        try:
            return load_flags(self.settings.flags_dir), {}
        except FlagDefinitionError as exc:
            problems: dict[str, list[str]] = {}
            for problem in exc.problems:
                problems.setdefault("", []).append(str(problem))
            return None, problems

    def _check(self, read: FlagsRead, flag_set: FlagSet | None) -> None:
        """Each flag validated as a file would be, bento tags against bentos/ included."""
        if flag_set is None:
            return
        known = declared_bentos(self.settings.bentos_dir)
        for name, doc in read.docs.items():
            try:
                flag_from_document(doc, flag_set, known)
            except FlagDefinitionError as exc:
                lines = [f"{p.field}: {p.message}" for p in exc.problems]
                read.problems.setdefault(name, []).extend(lines)

    @contextmanager
    def location(self, flag: str) -> Iterator[tuple[FlagDefinition, FlagLocation]]:
        """The flag's definition in flags/ and its home, for an action (RolloutError if none)."""
        flag_set = load_flags(self.settings.flags_dir)
        definition = flag_set.flags.get(flag)
        if definition is None:
            raise RolloutError(f"flag '{flag}' is not defined in {self.settings.flags_dir}")
        if not self.server_url:
            yield definition, EmbeddedFlag(definition, flag_set)
            return
        with self.admin() as admin:
            yield definition, ServerFlag(admin, definition, flag_set)

    def copy_unleash_events(self, flag: str) -> None:
        """Server mode: the flag's new entries of Unleash's event log into the audit table."""
        if self.server_url:
            with self.admin() as admin:
                self.store.record_unleash_events(admin.url, admin.get_events(flag))

    def close(self) -> None:
        self._engine.dispose()
