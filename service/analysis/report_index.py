"""The pages over all reports: `reports/index.html` and one story page per flag.

`reports/index.html` lists every run, newest first, with filters by analysis and decision that
need no script (radio buttons and CSS, as report pages run none) and a link per flag to its
story. `reports/<flag>/index.html` tells the rollout's story: each report and each recorded
change of the flag (our applies, the guard's moves, a person's approval, an edit in Unleash),
when, who or what acted and why, with links, and the primary metric's estimate and interval of
every A/B report on one plot. Both are rebuilt from the files on disk (and the audit table)
after every run, so they never disagree with the reports they list.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from service.analysis.metric_rows import metric_rows
from service.analysis.page_text import CONTENT_POLICY
from service.analysis.svg import LOSS, NEUTRAL, WARN, WIN, StoryPoint, story_plot
from service.flags.audit import DECIDE, GUARD, UNLEASH, flag_audit

KINDS = ("ab", "validation")
DECISIONS = ("ramp", "ship", "keep", "hold", "investigate", "rollback")
DECISION_COLOURS = {
    "ramp": WIN,
    "ship": WIN,
    "keep": WIN,
    "hold": WARN,
    "investigate": WARN,
    "rollback": LOSS,
}


@dataclass(frozen=True)
class Run:
    """One report on disk, as the index lists it."""

    flag: str
    run: str  # the folder's name, which sorts by time
    kind: str
    decision: str
    generated_at: str
    current_step: Any
    next_step: Any
    link: str  # relative to reports/
    document: dict[str, Any]

    @property
    def kind_class(self) -> str:
        return self.kind if self.kind in KINDS else "other"

    @property
    def decision_class(self) -> str:
        return self.decision if self.decision in DECISIONS else "other"


def update_index(reports_dir: Path, engine: sa.Engine | None = None) -> Path:
    """Rewrite `reports_dir/index.html` and every flag's story page; the audit table of
    `engine` (the event store) adds each recorded change to the stories."""
    runs = read_runs(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    index = reports_dir / "index.html"
    _write(index, index_page(runs))
    for flag in sorted({r.flag for r in runs}):
        if (reports_dir / flag).is_dir():
            changes = audit_changes(engine, flag) if engine is not None else []
            mine = [r for r in runs if r.flag == flag]
            _write(reports_dir / flag / "index.html", story_page(flag, mine, changes, reports_dir))
    return index


def read_runs(reports_dir: Path) -> list[Run]:
    """Every `*/*/decision.json` under `reports_dir`, newest first."""
    runs = [_run(reports_dir, path) for path in reports_dir.glob("*/*/decision.json")]
    return sorted(runs, key=lambda r: r.run, reverse=True)


def _run(reports_dir: Path, decision_path: Path) -> Run:
    run_dir = decision_path.parent
    try:
        document = json.loads(decision_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        document = {"recommendation": "unreadable"}
    page = run_dir / "report.html"
    return Run(
        flag=run_dir.parent.name,
        run=run_dir.name,
        kind=str(document.get("kind", "")),
        decision=str(document.get("recommendation", "")),
        generated_at=str(document.get("generated_at", "")),
        current_step=document.get("current_step"),
        next_step=document.get("next_step"),
        link=(page if page.exists() else decision_path).relative_to(reports_dir).as_posix(),
        document=document,
    )


# --- reports/index.html ----------------------------------------------------------------------


def index_page(runs: list[Run]) -> str:
    flags = sorted({r.flag for r in runs})
    rows = "\n".join(_index_row(r) for r in runs)
    flag_links = " ".join(
        f'<a href="{_href(flag)}/index.html">{html.escape(flag)}</a>' for flag in flags
    )
    return _PAGE.format(
        title="Rollout reports",
        policy=CONTENT_POLICY,
        style=_STYLE + _filter_style(),
        body=(
            "<h1>Rollout reports</h1>"
            f"<p>{len(runs)} run(s), newest first. Each flag's story: "
            f'<span id="flags">{flag_links or "none yet"}</span></p>'
            + _filters()
            + '<table id="runs"><thead><tr><th>Flag</th><th>Date</th><th>Analysis</th>'
            "<th>Decision</th><th>Step</th><th>Next step</th><th>Report</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        ),
    )


def _index_row(r: Run) -> str:
    e = html.escape
    return (
        f'<tr class="kind-{r.kind_class} decision-{r.decision_class}">'
        f'<td><a href="{_href(r.flag)}/index.html">{e(r.flag)}</a></td>'
        f"<td>{e(r.generated_at)}</td><td>{e(r.kind)}</td>"
        f'<td class="{r.decision_class}">{e(r.decision)}</td>'
        f"<td>{_step(r.current_step)}</td><td>{_step(r.next_step)}</td>"
        f'<td><a href="{_href(r.link)}">{e(r.run)}</a></td></tr>'
    )


def _filters() -> str:
    """Radio buttons that the stylesheet turns into filters (no script runs on these pages)."""
    groups = [("kind", ("all", *KINDS)), ("decision", ("all", *DECISIONS))]
    out = []
    for group, values in groups:
        label = "Analysis" if group == "kind" else "Decision"
        out.append(f'<span class="filter-label">{label}:</span>')
        for value in values:
            checked = " checked" if value == "all" else ""
            out.append(
                f'<input type="radio" name="{group}" id="{group}-{value}"{checked}>'
                f'<label for="{group}-{value}">{value}</label>'
            )
        out.append('<br class="filter-break">')
    return "".join(out)


def _filter_style() -> str:
    rules = [
        f"#{group}-{value}:checked ~ #runs tbody tr:not(.{group}-{value}) {{ display: none; }}"
        for group, values in (("kind", KINDS), ("decision", DECISIONS))
        for value in values
    ]
    rules.append(
        "input[type=radio]:checked + label { font-weight: 700; text-decoration: underline; }"
    )
    return "\n".join(rules)


# --- reports/<flag>/index.html ---------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One row of the audit table: a change of the flag and who or what made it."""

    ts: float
    source: str
    actor: str
    action: str
    what: str
    why: str

    @property
    def who(self) -> str:
        if self.source == GUARD:
            return f"guard ({self.actor})"
        if self.source == UNLEASH:
            return f"{self.actor} in Unleash"
        if self.source == DECIDE and "approv" in self.action:
            return f"{self.actor} (approval)"
        return f"{self.actor} (person, rollout {self.source})"


def audit_changes(engine: sa.Engine, flag: str) -> list[Change]:
    """The flag's audit rows, oldest first (none when the store has no audit table yet)."""
    query = (
        sa.select(flag_audit)
        .where(flag_audit.c.flag == flag)
        .order_by(flag_audit.c.ts, flag_audit.c.id)
    )
    try:
        with engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
    except sa.exc.DBAPIError:
        return []
    return [
        Change(r["ts"], r["source"], r["actor"], r["action"], r["what"], r["why"] or "")
        for r in rows
    ]


def story_page(flag: str, runs: list[Run], changes: list[Change], reports_dir: Path) -> str:
    """The rollout's story (see the module docstring); `runs` are this flag's, newest first."""
    context = _latest_context(reports_dir, runs)
    words = [
        f"<dt>{label}</dt><dd>{html.escape(str(context['flag'][key]))}</dd>"
        for label, key in (
            ("Description", "description"),
            ("Owner", "owner"),
            ("Hypothesis", "hypothesis"),
        )
        if (context.get("flag") or {}).get(key)
    ]
    timeline = sorted(
        [(_epoch(r.generated_at), "report", r) for r in runs]
        + [(c.ts, "change", c) for c in changes],
        key=lambda item: item[0],
        reverse=True,
    )
    rows = "".join(
        _report_row(item) if kind == "report" else _change_row(item)  # type: ignore[arg-type]
        for _, kind, item in timeline
    )
    return _PAGE.format(
        title=f"Rollout of {html.escape(flag)}",
        policy=CONTENT_POLICY,
        style=_STYLE,
        body=(
            f'<p><a href="../index.html">All reports</a></p><h1>Rollout of {html.escape(flag)}</h1>'
            + (f"<dl>{''.join(words)}</dl>" if words else "")
            + "<h2>The primary metric at each step</h2>"
            + _story_plot(runs)
            + "<h2>Timeline</h2>"
            '<table id="timeline"><thead><tr><th>When (UTC)</th><th>Step</th><th>What</th>'
            "<th>Who or what acted</th><th>Why</th><th>Link</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        ),
    )


def _story_plot(runs: list[Run]) -> str:
    points = []
    unit = ""
    for run in sorted((r for r in runs if r.kind == "ab"), key=lambda r: r.run):
        primary = next((row for row in metric_rows(run.document) if row.role == "primary"), None)
        if primary is None or primary.change is None:
            continue
        low, high = primary.change_interval or (None, None)
        unit = f"{primary.metric}: change, pp (interval)"
        points.append(
            StoryPoint(
                label=f"{_step(run.current_step)} {run.generated_at[5:16].replace('T', ' ')}",
                estimate=primary.change * 100,
                low=low * 100 if low is not None else None,
                high=high * 100 if high is not None else None,
                colour=DECISION_COLOURS.get(run.decision, NEUTRAL),
            )
        )
    if not points:
        return "<p><em>No A/B report with a comparison yet.</em></p>"
    return f'<div id="story-plot">{story_plot(points, unit)}</div>'


def _report_row(r: Run) -> str:
    e = html.escape
    reasons = "; ".join(str(x) for x in (r.document.get("reasons") or [])[:2])
    return (
        f'<tr class="report decision-{r.decision_class}"><td>{e(r.generated_at)}</td>'
        f"<td>{_step(r.current_step)}</td>"
        f'<td>{e(r.kind)} report: <strong class="{r.decision_class}">{e(r.decision)}</strong>'
        f" (next step {_step(r.next_step)})</td><td>rollout report</td><td>{e(reasons)}</td>"
        f'<td><a href="../{_href(r.link)}">{e(r.run)}</a></td></tr>'
    )


def _change_row(c: Change) -> str:
    e = html.escape
    when = datetime.fromtimestamp(c.ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return (
        f'<tr class="change source-{e(c.source)}"><td>{when}</td><td></td>'
        f"<td>{e(c.action)}: {e(c.what[:200])}</td><td>{e(c.who)}</td><td>{e(c.why[:300])}</td>"
        "<td></td></tr>"
    )


def _latest_context(reports_dir: Path, runs: list[Run]) -> dict[str, Any]:
    for run in runs:  # newest first
        path = reports_dir / run.flag / run.run / "context.json"
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(found, dict):
            return found
    return {}


# --- shared ----------------------------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    # Write then rename, so a reader (or a concurrent run) never sees half a file.
    partial = path.with_name(f".{path.stem}.{os.getpid()}.html")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def _href(path: str) -> str:
    return html.escape(path, quote=True)


def _step(step: Any) -> str:
    return f"{step:g}%" if isinstance(step, int | float) and not isinstance(step, bool) else ""


def _epoch(iso: str) -> float:
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; }
table { border-collapse: collapse; margin-top: 0.6rem; }
th, td { padding: 0.3rem 0.8rem; border-bottom: 1px solid #ddd; text-align: left;
  vertical-align: top; }
.ramp, .ship, .keep { color: #137333; } .rollback { color: #c5221f; }
.hold, .investigate { color: #b06000; }
input[type=radio] { margin-left: 0.8rem; }
.filter-label { color: #5f6368; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2rem 1rem; }
dt { color: #5f6368; } dd { margin: 0; }
"""

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
{policy}
<title>{title}</title>
<style>{style}</style>
</head>
<body>
{body}
</body>
</html>
"""
