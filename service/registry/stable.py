"""The stable version of each model family: the registry's fact, not a flag's.

Each family declares it beside its versions, as `stable: v1` in `bentos/<family>/versions.yaml`.
It is the bento every model flag of that family serves to users no strategy variant matches,
and to everyone when the flag is off, archived, or names something the selector cannot serve
(a flag's explicit `default` still wins where one is set). `rollout models promote churn:v2`
moves it, and shipping a version (`rollout decide apply` with `ship`, the guard's ship) calls
the same `promote`.

Embedded and server mode read the same file: the selector re-reads it when it changes, so a
promotion reaches every worker within the refresh interval, without a restart.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import yaml
from ruamel.yaml import YAML

from service.errors import ConfigError
from service.registry.versions import VERSIONS_FILE, UnknownBento

STABLE_KEY = "stable"


def stable_versions(bentos_dir: Path) -> dict[str, str]:
    """family -> its stable bento tag (e.g. `churn:v1`), for every family that declares one.

    Raises ConfigError naming the file when `stable:` names a version the file does not declare.
    """
    found = {}
    for path in sorted(Path(bentos_dir).glob(f"*/{VERSIONS_FILE}")):
        version = _read_stable(path)
        if version is not None:
            found[path.parent.name] = f"{path.parent.name}:{version}"
    return found


def stable_version(bentos_dir: Path, family: str) -> str | None:
    """The family's stable bento tag, or None when it declares none."""
    path = Path(bentos_dir) / family / VERSIONS_FILE
    version = _read_stable(path) if path.is_file() else None
    return f"{family}:{version}" if version else None


def _read_stable(path: Path) -> str | None:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(doc, dict) or doc.get(STABLE_KEY) is None:
        return None
    version = str(doc[STABLE_KEY])
    declared = _declared_versions(doc)
    if version not in declared:
        raise ConfigError(
            f"{path}: {STABLE_KEY}: '{version}' is not a declared version "
            f"(declared: {', '.join(declared) or 'none'})"
        )
    return version


def _declared_versions(doc: Mapping[str, object]) -> list[str]:
    entries = doc.get("versions")
    if not isinstance(entries, list):
        return []
    return [str(e["version"]) for e in entries if isinstance(e, dict) and "version" in e]


def promote(bentos_dir: Path, tag: str) -> str | None:
    """Make `tag` (`family:version`) its family's stable version; return the previous one.

    The file is edited round-trip (comments and layout stay) and replaced atomically, so a
    selector re-reading it never sees half a file. UnknownBento when the version is not declared.
    """
    family, _, version = tag.partition(":")
    path = Path(bentos_dir) / family / VERSIONS_FILE
    if not version or not path.is_file():
        raise UnknownBento(f"'{tag}' names no declared family:version (no {path})")
    rt = YAML()
    rt.preserve_quotes = True
    rt.indent(mapping=2, sequence=4, offset=2)
    rt.width = 96
    text = path.read_text(encoding="utf-8")
    data = rt.load(text)
    declared = _declared_versions(data)
    if version not in declared:
        raise UnknownBento(
            f"{tag} is not declared in {path} (declared: {', '.join(declared) or 'none'})"
        )
    previous = data.get(STABLE_KEY)
    if previous == version:
        return tag
    if STABLE_KEY in data:
        data[STABLE_KEY] = version
    else:  # right after model_name, where a reader of the file looks for the family's facts
        keys = list(data)
        at = keys.index("model_name") + 1 if "model_name" in keys else len(keys)
        data.insert(at, STABLE_KEY, version, comment="moved by `rollout models promote`")
    out = io.StringIO()
    rt.dump(data, out)
    _replace(path, out.getvalue())
    return f"{family}:{previous}" if previous else None


def _replace(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(tmp, path)
