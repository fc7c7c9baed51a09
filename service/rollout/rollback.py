"""`rollout rollback <flag> [--to <tag>]`: every user of a flag back on one known-good bento.

The target is the tag named, or the newest version of the flag's family that is older than the
newest one the flag serves now and passed its gates. One change points the flag's default and
every variant its strategies use at the target:
- embedded mode: `flags/<flag>.yaml` is rewritten minimally (only the tags change; comments and
  layout stay), checked by re-reading it, and written in one atomic replace;
- server mode (`UNLEASH_URL`): through the Admin API with an admin token from
  `UNLEASH_ADMIN_TOKEN` or the file named by `UNLEASH_ADMIN_TOKEN_FILE` (never printed).
Each rollback is one audit record (JSONL under the data folder).
"""

from __future__ import annotations

import difflib
import getpass
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from service.config import Settings
from service.errors import (
    ConfigError,
    FlagDefinitionError,
    RolloutError,
    UnknownFlag,
    UnleashAdminError,
)
from service.files import write_atomically
from service.flags import flag_files
from service.flags.audit import ROLLBACK, AuditStore
from service.flags.client_features import DEFAULT_VARIANT, SHADOW_PREFIX, default_variant
from service.flags.definitions import load_flags
from service.flags.documents import flag_doc
from service.flags.model import FlagDefinition
from service.flags.server_state import read_server
from service.flags.unleash_admin import Strategy, UnleashAdmin, Variant, token_from_environment
from service.registry.gates import failed_gates
from service.registry.stable import stable_version
from service.registry.versions import UnknownBento, declared_bentos
from service.store.events import create_engine

PROJECT = "default"
AUDIT_FILE = Path("audit") / "rollbacks.jsonl"


class RollbackError(RolloutError):
    """No version to roll back to, or the one named may not serve traffic."""

    code = "rollback_refused"


@dataclass(frozen=True)
class Rollback:
    """One rollback: what the flag served before, and the one bento it serves after."""

    flag: str
    target: str
    mode: str
    before: dict[str, Any]
    reason: str
    changes: list[str] = field(default_factory=list)
    actor: str = ""  # who asked for it (the console's operator); the login name when empty

    def audit_record(self) -> dict[str, Any]:
        return {
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "action": "rollback",
            **asdict(self),
            "actor": self.actor or getpass.getuser(),
        }


# ---------------------------------------------------------------- choosing the target


def choose_target(
    current: Iterable[str], settings: Settings, to: str | None = None, default: str | None = None
) -> str:
    """The tag to roll back to: `to` if it may serve, else the last good older version.

    Without `to`: the flag's `default` when it is older than the newest bento the flag serves
    and passed its gates (a canary or A/B arm is being undone: everyone goes back to the stable
    bento, nobody moves forward); otherwise the newest version older than the newest served
    that passed its gates (the default itself is being undone).
    Raises UnknownBento for a tag not declared, RollbackError naming the failed gate for one
    that did not pass, or when no older version passed its gates.
    """
    declared = list(declared_bentos(settings.bentos_dir))
    current = list(current)
    if to is not None:
        if to not in declared:
            raise UnknownBento(f"unknown bento {to}; declared: {', '.join(declared)}")
        families = {t.partition(":")[0] for t in current}
        if to.partition(":")[0] not in families:
            raise RollbackError(
                f"{to} is not of the family the flag serves ({', '.join(families)})"
            )
        _check_gates(to, settings)
        return to
    serving = [t for t in current if t in declared]
    if not serving:
        raise RollbackError(f"the flag serves no declared bento ({', '.join(current)})")
    newest = max(declared.index(t) for t in serving)
    older_default = default in declared and declared.index(str(default)) < newest
    if older_default and default and not failed_gates([default], settings):
        return default
    family = declared[newest].partition(":")[0]
    older = [t for t in declared[:newest] if t.partition(":")[0] == family]
    failures = failed_gates(older, settings)
    passing = [t for t in older if t not in failures]
    if not passing:
        checked = ", ".join(f"{t} ({failures[t]})" for t in older) or "none"
        raise RollbackError(
            f"no version older than {declared[newest]} passed its gates (checked: {checked}); "
            "name one with --to"
        )
    return passing[-1]


def _check_gates(tag: str, settings: Settings) -> None:
    failure = failed_gates([tag], settings).get(tag)
    if failure:
        raise RollbackError(f"{tag} may not serve traffic: gate {failure}")


# ---------------------------------------------------------------- embedded mode: flags/


def flag_file(flag: str, settings: Settings) -> tuple[FlagDefinition, Path]:
    """The flag's definition and its file; UnknownFlag if flags/ has no such flag."""
    flags = load_flags(settings.flags_dir).flags
    if flag not in flags:
        raise UnknownFlag(f"unknown flag '{flag}'; flags/ defines: {', '.join(flags) or 'none'}")
    definition = flags[flag]
    path = Path(definition.file)
    return definition, path if path.is_absolute() else settings.flags_dir / path.name


def rewritten_flag(text: str, target: str) -> str:
    """`text` with the default and every variant pointing at `target`; nothing else changes.

    Round-trip YAML (`flags.flag_files`): comments, order and layout stay as they were.
    """

    def point_at_target(data: Any) -> None:
        if "default" in data:  # without one, the family's stable version serves
            data["default"] = target
        for name in data.get("variants") or {}:
            data["variants"][name] = target

    return flag_files.edited(text, point_at_target)


def rollback_embedded(
    flag: str, settings: Settings, to: str | None = None, dry_run: bool = False, actor: str = ""
) -> tuple[Rollback, str]:
    """Rewrite flags/<flag>.yaml (unless `dry_run`); returns the rollback and the diff."""
    definition, path = flag_file(flag, settings)
    default = definition.default_bento or stable_version(
        settings.bentos_dir, definition.family or ""
    )
    target = choose_target(_in_order(definition), settings, to, default)
    text = path.read_text(encoding="utf-8")
    new_text = rewritten_flag(text, target)
    diff = "".join(
        difflib.unified_diff(text.splitlines(True), new_text.splitlines(True), str(path), str(path))
    )
    before = {"default": definition.default_bento, "variants": dict(definition.variants)}
    reason = _reason(to, target, default)
    changes = [f"{path}: default and variants -> {target}"]
    done = Rollback(flag, target, "embedded", before, reason, changes, actor)
    if not dry_run and new_text != text:
        write_atomically(path, new_text)
        after = flag_file(flag, settings)[0]
        record(done, settings, state=flag_doc(after))  # the flag as it serves now
    return done, diff


def _reason(to: str | None, target: str, default: str | None) -> str:
    if to:
        return f"--to {to}"
    if target == default:
        return "back to the flag's default, which passed its gates"
    return "the newest version older than the newest served that passed its gates"


def _in_order(definition: FlagDefinition) -> list[str]:
    explicit = [definition.default_bento] if definition.default_bento else []
    return [*explicit, *definition.variants.values()]


# ---------------------------------------------------------------- server mode: Admin API


def admin_token() -> str:
    """The admin token from UNLEASH_ADMIN_TOKEN or UNLEASH_ADMIN_TOKEN_FILE (never printed)."""
    token = token_from_environment("UNLEASH_ADMIN_TOKEN")
    if not token:
        raise ConfigError(
            "server mode needs an Unleash admin token: set UNLEASH_ADMIN_TOKEN or "
            "UNLEASH_ADMIN_TOKEN_FILE"
        )
    return token


def served_on_server(admin: UnleashAdmin, flag: str) -> dict[str, list[str]]:
    """environment -> bento tags the flag's default and strategy variants carry, in order."""
    feature = admin.get_feature(PROJECT, flag)
    served: dict[str, list[str]] = {}
    for env in feature.environments:
        tags = [v["payload"]["value"] for v in env.variants if "payload" in v]
        for strategy in admin.list_strategies(PROJECT, flag, env.name):
            tags += [v["payload"]["value"] for v in strategy.get("variants", []) if "payload" in v]
        if tags:
            served[env.name] = tags
    return served


def rollback_server(
    flag: str,
    settings: Settings,
    admin: UnleashAdmin,
    to: str | None = None,
    dry_run: bool = False,
    actor: str = "",
) -> tuple[Rollback, str]:
    """Point the flag's default variant and every strategy variant at the target, per env;
    shadows stay. When flags/ defines the flag, its file is edited to match (the diff is
    returned) and the audit row records the server's document after, so `rollout flags plan`
    sees no drift. With `dry_run` nothing is written and the changes are only listed."""
    before = served_on_server(admin, flag)
    if not before:
        raise UnknownFlag(f"flag '{flag}' carries no bento on {admin.url}")
    default = _server_default(admin, flag, before)
    target = choose_target(_flattened(before), settings, to, default)
    saved = {env: _environment_state(admin, flag, env) for env in before}
    file_text, diff = _flags_file_change(flag, settings, target)
    reason = _reason(to, target, default)
    if dry_run:
        planned_changes = [
            c for env in before for c in _retarget_environment(admin, flag, env, target, False)
        ]
        planned = Rollback(
            flag, target, "server (dry run)", {"environments": before}, reason, planned_changes
        )
        return planned, diff
    changes: list[str] = []
    try:
        for env in before:
            changes += _retarget_environment(admin, flag, env, target)
    except UnleashAdminError:
        # Unleash has no transaction across calls: put back what was changed, then fail.
        for env, (strategies, variants) in saved.items():
            _restore_environment(admin, flag, env, strategies, variants)
        raise
    if file_text is not None:
        path, new_text = file_text
        write_atomically(path, new_text)
        changes.append(f"{path}: default and variants -> {target} (commit it)")
    done = Rollback(flag, target, "server", {"environments": before}, reason, changes, actor)
    record(done, settings, state=read_server(admin, [flag]).doc(flag), server=admin.url)
    return done, diff


def _flags_file_change(
    flag: str, settings: Settings, target: str
) -> tuple[tuple[Path, str] | None, str]:
    """flags/<flag>.yaml rewritten for the rollback and its diff; (None, "") when flags/ does
    not define the flag (a flag made in the Unleash UI)."""
    try:
        _definition, path = flag_file(flag, settings)
    except (UnknownFlag, FlagDefinitionError):
        return None, ""
    text = path.read_text(encoding="utf-8")
    new_text = rewritten_flag(text, target)
    diff = "".join(
        difflib.unified_diff(text.splitlines(True), new_text.splitlines(True), str(path), str(path))
    )
    return ((path, new_text) if new_text != text else None), diff


def _server_default(admin: UnleashAdmin, flag: str, envs: Iterable[str]) -> str | None:
    """The flag's default bento on the server, when all its environments agree on one."""
    defaults = {
        v["payload"]["value"]
        for env in envs
        for v in admin.get_feature_variants(PROJECT, flag, env)
        if v.get("name") == DEFAULT_VARIANT and "payload" in v
    }
    return defaults.pop() if len(defaults) == 1 else None


def _flattened(served: dict[str, list[str]]) -> list[str]:
    return [tag for tags in served.values() for tag in tags]


def _environment_state(
    admin: UnleashAdmin, flag: str, env: str
) -> tuple[list[Strategy], list[Variant]]:
    return admin.list_strategies(PROJECT, flag, env), admin.get_feature_variants(PROJECT, flag, env)


def _retarget_environment(
    admin: UnleashAdmin, flag: str, env: str, target: str, write: bool = True
) -> list[str]:
    """Every strategy variant and the flag's default in `env` on `target` (shadow variants
    stay); the changes in words. `write=False` only lists them (a dry run)."""
    changes = []
    for strategy in admin.list_strategies(PROJECT, flag, env):
        tags = {v.get("payload", {}).get("value") for v in strategy.get("variants", [])}
        if strategy.get("variants") and tags != {target}:
            if write:
                admin.update_strategy(
                    PROJECT, flag, env, strategy["id"], _retarget(strategy, target)
                )
            changes.append(f"{env}: strategy {strategy.get('title') or strategy['id']} -> {target}")
    variants = admin.get_feature_variants(PROJECT, flag, env)
    shadows = [v for v in variants if str(v.get("name", "")).startswith(SHADOW_PREFIX)]
    current = [v for v in variants if v.get("name") == DEFAULT_VARIANT]
    if [v.get("payload", {}).get("value") for v in current] != [target]:
        if write:
            admin.set_feature_variants(
                PROJECT, flag, env, [cast(Variant, default_variant(target)), *shadows]
            )
        changes.append(f"{env}: {DEFAULT_VARIANT} -> {target}")
    return changes


def _restore_environment(
    admin: UnleashAdmin, flag: str, env: str, strategies: list[Strategy], variants: list[Variant]
) -> None:
    for strategy in strategies:
        admin.update_strategy(PROJECT, flag, env, strategy["id"], strategy)
    admin.set_feature_variants(PROJECT, flag, env, variants)


def _retarget(strategy: Strategy, target: str) -> Strategy:
    variants = [
        {**v, "payload": {"type": "string", "value": target}} for v in strategy.get("variants", [])
    ]
    return cast(Strategy, {**strategy, "variants": variants})


# ---------------------------------------------------------------- audit


def record(
    rollback: Rollback,
    settings: Settings,
    state: dict[str, Any] | None = None,
    server: str | None = None,
) -> Path:
    """Record the rollback: one row in the flag audit table, one line in the JSONL trail.

    The table (service.flags.audit, in the event store) puts it next to every other flag change in
    `rollout audit <flag>`; the JSONL file keeps the full before/after even without a database.
    """
    entry = rollback.audit_record()
    _record_in_audit_table(entry, settings, state, server)
    path = settings.data_dir / AUDIT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(entry, sort_keys=True) + "\n")
    return path


def _record_in_audit_table(
    entry: dict[str, Any], settings: Settings, state: dict[str, Any] | None, server: str | None
) -> None:
    engine = create_engine(settings.event_store_url)
    try:
        AuditStore(engine).record(
            server or settings.unleash_url or "embedded",
            entry["flag"],
            source=ROLLBACK,
            actor=entry["actor"],
            action="rollback",
            what="\n".join(entry["changes"]) or f"-> {entry['target']}",
            why=entry["reason"],
            # The flag's document after the change (server mode): `flags plan`'s baseline.
            state=state or {"before": entry["before"], "target": entry["target"]},
        )
    finally:
        engine.dispose()


def rollback(
    flag: str, settings: Settings, to: str | None = None, dry_run: bool = False, actor: str = ""
) -> tuple[Rollback, str]:
    """Embedded or server mode, as the settings say; returns the rollback and the flags/ diff.

    `actor` is who the audit names (default: the login name running this).
    """
    if not settings.unleash_url:
        return rollback_embedded(flag, settings, to, dry_run, actor)
    with UnleashAdmin(settings.unleash_url, admin_token()) as admin:
        return rollback_server(flag, settings, admin, to, dry_run, actor)
