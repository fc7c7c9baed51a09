"""What a report links to and says about its rollout, gathered by the runner before it runs.

The flag (its Unleash UI page in server mode, its description, owner and hypothesis from
flags/), each arm's bento and model card (copied beside the report, so the link works wherever
reports/ is served), the previous report of the same rollout, the step and the window, and the
exact command that reproduces the report. It reaches the notebook as one JSON parameter; the
notebook escapes every value where it puts it into the page.

Nothing secret goes in: the event store's URL never does, and a URL's credentials are dropped.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from service.analysis.preflight import Served
from service.config import Settings
from service.errors import RolloutError
from service.flags.definitions import load_flags
from service.flags.model import FlagDefinition
from service.registry.bentos import stored_bento
from service.registry.cards import card_sections, render_html

CARDS_FOLDER = "cards"
UNLEASH_PROJECT = "default"


def build_context(
    settings: Settings,
    *,
    kind: str,
    parameters: dict[str, Any],
    defaults: dict[str, Any],
    served: Sequence[Served],
    output_dir: Path,
    policy: Any,
) -> dict[str, Any]:
    """The report's context (see the module docstring) as a JSON-ready dict.

    `defaults` are each parameter's declared default (the command lists only what differs);
    `policy` puts the reports' Content-Security-Policy into a copied card page.
    """
    definition = _definition(settings, parameters["flag"])
    pinned = {**parameters, "window_end": parameters.get("window_end") or _now()}
    arms = _arms(kind, parameters, served)
    return {
        "flag": _flag(settings, parameters["flag"], definition),
        "arms": [
            {**arm, "card": _copy_card(settings, arm["bento"], output_dir, policy)} for arm in arms
        ],
        "previous_report": previous_report(output_dir, kind),
        "story": "../index.html",
        "step": parameters.get("current_step"),
        "window": {"start": parameters.get("window_start"), "end": pinned["window_end"]},
        "command": command_line(kind, pinned, defaults),
    }


def context_json(context: dict[str, Any]) -> str:
    return json.dumps(context, sort_keys=True, default=str)


def command_line(kind: str, parameters: dict[str, Any], defaults: dict[str, Any]) -> str:
    """`rollout report KIND --flag ...`: every value that differs from its default, quoted."""
    words = ["rollout", "report", kind]
    for name, value in parameters.items():
        if name not in defaults or value is None or value == defaults[name]:
            continue
        option = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            words.append(option if value else f"--no-{name.replace('_', '-')}")
        else:
            words += [option, f"{value:g}" if isinstance(value, float) else str(value)]
    return shlex.join(words)


def previous_report(output_dir: Path, kind: str) -> str | None:
    """The newest earlier report of the same flag and kind, relative to this run's folder."""
    earlier = sorted(
        run
        for run in output_dir.parent.glob(f"*-{kind}*")
        if run.name < output_dir.name and (run / "report.html").is_file()
    )
    return f"../{earlier[-1].name}/report.html" if earlier else None


def unleash_flag_url(unleash_url: str | None, flag: str) -> str | None:
    """The flag's page in the Unleash UI (server mode), without any credentials in the URL."""
    if not unleash_url:
        return None
    parts = urlsplit(unleash_url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    base = parts.path.rstrip("/").removesuffix("/api")
    path = f"{base}/projects/{UNLEASH_PROJECT}/features/{quote(flag, safe='')}"
    return urlunsplit((parts.scheme, netloc, path, "", ""))


def _flag(settings: Settings, flag: str, definition: FlagDefinition | None) -> dict[str, Any]:
    ramp = definition.ramp if definition else None
    return {
        "name": flag,
        "url": unleash_flag_url(settings.unleash_url, flag),
        "file": Path(definition.file).name if definition else None,
        "description": definition.description if definition else "",
        "owner": ramp.owner if ramp else "",
        "hypothesis": ramp.hypothesis if ramp else "",
    }


def _definition(settings: Settings, flag: str) -> FlagDefinition | None:
    try:
        return load_flags(settings.flags_dir).flags.get(flag)
    except RolloutError:  # a broken flags/ folder: the report still runs, without its context
        return None


def _arms(kind: str, parameters: dict[str, Any], served: Sequence[Served]) -> list[dict[str, Any]]:
    if kind == "validation":
        tags = [("validated", parameters.get("bento")), ("previous", parameters.get("previous"))]
        return [{"role": role, "variant": None, "bento": tag} for role, tag in tags if tag]
    arms = []
    for role in ("control", "treatment"):
        variant = parameters.get(role)
        counts: dict[str, int] = {}
        for s in served:
            if s.variant == variant and not s.shadow and s.bento:
                counts[s.bento] = counts.get(s.bento, 0) + s.exposures
        bento = max(counts, key=lambda tag: counts[tag]) if counts else None
        arms.append({"role": role, "variant": variant, "bento": bento})
    return arms


def _copy_card(settings: Settings, tag: str | None, output_dir: Path, policy: Any) -> str | None:
    """The bento's model card as `cards/<tag>.html` beside the report; None when this machine
    has not built the bento (its card lives with it)."""
    if not tag:
        return None
    try:
        bento = stored_bento(tag, settings)
        page = render_html(bento, card_sections(bento, settings))
    except (RolloutError, OSError, ValueError):
        return None
    name = tag.replace(":", "-").replace("/", "-") + ".html"
    folder = output_dir / CARDS_FOLDER
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(policy(page), encoding="utf-8")
    return f"{CARDS_FOLDER}/{name}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
