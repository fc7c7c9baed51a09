"""Flag files in flags/ edited in place: round-trip YAML, so comments and layout survive.

Every change `rollout` makes to a flag file (a ramp move, a rollback, shipping) loads it with
ruamel's round-trip loader, changes only the keys it means to, and replaces the file atomically,
so an embedded selector reloading flags/ never reads half of it.
"""

from __future__ import annotations

import difflib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from service.files import write_atomically


def _round_trip() -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)  # the style of our flag files
    yaml.width = 4096  # never re-wrap a line we did not change
    return yaml


def edit_flag_file(
    path: Path, change: Callable[[CommentedMap], Any], *, dry_run: bool = False
) -> str:
    """Apply `change` to the loaded document and write it back; return the unified diff.

    With `dry_run` nothing is written and the diff says what would change.
    """
    text = path.read_text(encoding="utf-8")
    new_text = edited(text, change)
    if new_text != text and not dry_run:
        write_atomically(path, new_text)
    return "".join(
        difflib.unified_diff(text.splitlines(True), new_text.splitlines(True), str(path), str(path))
    )


def edited(text: str, change: Callable[[CommentedMap], Any]) -> str:
    """`text` (a flag file) after `change` was applied to its round-trip document."""
    yaml = _round_trip()
    data = yaml.load(text)
    change(data)
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def flow_mapping(values: dict[str, Any]) -> CommentedMap:
    """A mapping written on one line (`{control: 50, treatment: 50}`), as our flag files do."""
    flow = CommentedMap(values)
    flow.fa.set_flow_style()
    return flow
