"""Model cards: what a bento is, what it was trained on, how good it is, and what changed.

Generated at build from the model's metadata in the store (written by the family's train.py),
the training snapshot's manifest and the family's `versions.yaml` (`card:` for intended use and
limitations that hold for every version, a version's own `limitations:`). Stored with the
bento as `rollout/card.{json,md,html}`, so the card travels and is deleted with it.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from service.config import Settings
from service.registry.bentos import StoredBento, stored_bento
from service.registry.versions import VERSIONS_FILE, UnknownBento, declared_bentos

CARD_FILES = ("card.json", "card.md", "card.html")
METRIC_COLUMNS = ("auc", "accuracy", "log_loss", "brier", "offer_rate", "churn_rate", "rows")
# A slice whose AUC trails the overall AUC by this much is called out as a limitation.
WEAK_SLICE_AUC_GAP = 0.05


@dataclass(frozen=True)
class Section:
    """One titled part of a card: prose lines and/or a table (header row first)."""

    title: str
    lines: tuple[str, ...] = ()
    table: tuple[tuple[str, ...], ...] = ()


def card_sections(bento: StoredBento, settings: Settings) -> list[Section]:
    """The card of `bento`, as sections every renderer shares."""
    meta = bento.model_metadata
    family_doc = _family_doc(settings, bento.family)
    return [
        Section("Intended use", (str((family_doc.get("card") or {}).get("intended_use", "")),)),
        _training_section(bento, settings),
        _hyperparameters_section(meta),
        _metrics_section(meta.get("metrics", {})),
        Section("Known limitations", tuple(f"- {x}" for x in _limitations(bento, family_doc))),
        Section("Change log", tuple(_change_log(bento, settings))),
    ]


def _family_doc(settings: Settings, family: str) -> dict[str, Any]:
    path = settings.bentos_dir / family / VERSIONS_FILE
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _training_section(bento: StoredBento, settings: Settings) -> Section:
    meta, training = bento.model_metadata, bento.model_metadata.get("training", {})
    snapshot = bento.labels.get("snapshot", "")
    manifest = _snapshot_manifest(settings, snapshot)
    source = manifest.get("source") or {}
    return Section(
        "Training data",
        (
            f"- snapshot: `{snapshot or 'not recorded'}` (`.data/snapshots/<sha256>.csv`)",
            f"- data fingerprint: `{meta.get('data_fingerprint', '')}`",
            f"- size: {manifest.get('rows', training.get('rows'))} rows,"
            f" {training.get('holdout', 0):.0%} held out for the metrics below",
            f"- period: {training.get('period') or manifest.get('period') or 'not declared'}",
            f"- source: {source.get('generator', 'given snapshot')}"
            f" (seed {source.get('seed', '-')}, drift {source.get('drift', '-')})",
        ),
    )


def _snapshot_manifest(settings: Settings, sha: str) -> dict[str, Any]:
    path = settings.data_dir / "snapshots" / f"{sha}.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _hyperparameters_section(meta: dict[str, Any]) -> Section:
    return Section(
        "Model",
        (
            f"- kind: {meta.get('kind')}",
            f"- hyperparameters: `{json.dumps(meta.get('params', {}), sort_keys=True)}`",
            f"- features used: {', '.join(meta.get('features', []))}",
            f"- serving: `{json.dumps(meta.get('serving', {}), sort_keys=True)}`",
            f"- model hash: `{meta.get('model_hash', '')}`",
        ),
    )


def _metrics_section(metrics: dict[str, Any]) -> Section:
    rows: list[tuple[str, ...]] = [("slice", *METRIC_COLUMNS)]
    slices = [("overall", metrics.get("overall", {}))]
    for per in ("segment", "region"):
        slices += [(f"{per}={k}", v) for k, v in (metrics.get(f"by_{per}") or {}).items()]
    for name, values in slices:
        rows.append((name, *(_fmt(values.get(c)) for c in METRIC_COLUMNS)))
    return Section("Offline metrics (holdout)", (), tuple(rows))


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _limitations(bento: StoredBento, family_doc: dict[str, Any]) -> list[str]:
    meta = bento.model_metadata
    declared = list((family_doc.get("card") or {}).get("limitations") or [])
    for entry in family_doc.get("versions") or []:
        if isinstance(entry, dict) and entry.get("version") == bento.version:
            declared += list(entry.get("limitations") or [])
    metrics = meta.get("metrics", {})
    overall = (metrics.get("overall") or {}).get("auc") or 0.0
    for per in ("segment", "region"):
        for name, values in (metrics.get(f"by_{per}") or {}).items():
            auc = values.get("auc")
            if auc is not None and auc < overall - WEAK_SLICE_AUC_GAP:
                declared.append(f"weaker on {per}={name}: AUC {auc:.3f} vs {overall:.3f} overall")
    return [str(x) for x in declared]


def previous_version(bento: StoredBento, settings: Settings) -> StoredBento | None:
    """The version declared just before `bento` in its family that is in the store."""
    tags = [t for t in declared_bentos(settings.bentos_dir) if t.startswith(f"{bento.family}:")]
    if bento.tag not in tags:
        return None
    for tag in reversed(tags[: tags.index(bento.tag)]):
        try:
            return stored_bento(tag, settings)
        except UnknownBento:
            continue
    return None


def _change_log(bento: StoredBento, settings: Settings) -> list[str]:
    meta = bento.model_metadata
    lines = [f"- {meta.get('change', '')}", *_baseline_lines(meta)]
    before = previous_version(bento, settings)
    if before is None:
        return [*lines, "- first version of the family"]
    old = before.model_metadata
    lines.append(f"- against {before.tag}:")
    for key in ("kind", "params", "features", "serving"):
        if old.get(key) != meta.get(key):
            lines.append(f"  - {key}: `{_short(old.get(key))}` -> `{_short(meta.get(key))}`")
    if before.labels.get("snapshot") != bento.labels.get("snapshot"):
        lines.append(
            f"  - training data: snapshot {before.labels.get('snapshot', '?')[:12]}"
            f" -> {bento.labels.get('snapshot', '?')[:12]}"
        )
    ours, theirs = (
        meta.get("metrics", {}).get("overall", {}),
        old.get("metrics", {}).get("overall", {}),
    )
    for metric in ("auc", "brier", "log_loss", "offer_rate"):
        if ours.get(metric) is not None and theirs.get(metric) is not None:
            delta = ours[metric] - theirs[metric]
            lines.append(f"  - {metric}: {theirs[metric]:.4f} -> {ours[metric]:.4f} ({delta:+.4f})")
    return lines


def _baseline_lines(meta: dict[str, Any]) -> list[str]:
    """The flag defaults scored on this version's holdout at training time (same rows)."""
    ours = (meta.get("metrics") or {}).get("overall", {})
    lines = []
    for baseline in meta.get("baselines") or []:
        theirs = (baseline.get("metrics") or {}).get("overall", {})
        if ours.get("auc") is not None and theirs.get("auc") is not None:
            lines.append(
                f"- on this version's holdout, the flag default {baseline.get('bento')} scores"
                f" AUC {theirs['auc']:.4f} and this version {ours['auc']:.4f}"
            )
    return lines


def _short(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if not isinstance(value, str) else value


# ---------------------------------------------------------------- rendering


def render_markdown(bento: StoredBento, sections: list[Section]) -> str:
    """The card as Markdown (what `rollout models show` prints)."""
    out = [
        f"# Model card: {bento.tag}",
        "",
        f"Built {bento.created}; packages `{bento.model_tag}`.",
        "",
    ]
    for section in sections:
        out += [f"## {section.title}", "", *section.lines]
        if section.table:
            header, *rows = section.table
            out += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
            out += ["| " + " | ".join(row) + " |" for row in rows]
        out.append("")
    return "\n".join(out)


def render_html(bento: StoredBento, sections: list[Section]) -> str:
    """The card as a standalone HTML page (every value escaped)."""
    e = html.escape
    body = [
        f"<h1>Model card: {e(bento.tag)}</h1>",
        f"<p>Built {e(bento.created)}; packages <code>{e(bento.model_tag)}</code>.</p>",
    ]
    for section in sections:
        body.append(f"<h2>{e(section.title)}</h2>")
        items = [line.lstrip("- ").replace("`", "") for line in section.lines if line.strip()]
        if items:
            body.append("<ul>" + "".join(f"<li>{e(item)}</li>" for item in items) + "</ul>")
        if section.table:
            header, *rows = section.table
            head = "".join(f"<th>{e(c)}</th>" for c in header)
            cells = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
    style = "body{font-family:sans-serif;max-width:60em;margin:auto}td,th{padding:2px 8px}"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{e(bento.tag)}</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )


def write_card(tag: str, settings: Settings) -> Path:
    """Generate the card of the built bento `tag` and store it with the bento (JSON, MD, HTML)."""
    bento = stored_bento(tag, settings)
    sections = card_sections(bento, settings)
    folder = bento.rollout_dir
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"tag": tag, "created": bento.created, "sections": [s.__dict__ for s in sections]}
    (folder / "card.json").write_text(json.dumps(doc, indent=2, default=list), encoding="utf-8")
    (folder / "card.md").write_text(render_markdown(bento, sections), encoding="utf-8")
    (folder / "card.html").write_text(render_html(bento, sections), encoding="utf-8")
    return folder / "card.md"


def read_card(tag: str, settings: Settings) -> str:
    """The stored Markdown card of `tag` (generated now if the bento predates cards)."""
    bento = stored_bento(tag, settings)
    path = bento.rollout_dir / "card.md"
    if not path.is_file():
        write_card(tag, settings)
    return path.read_text(encoding="utf-8")
