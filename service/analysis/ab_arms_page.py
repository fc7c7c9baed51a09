"""The A/B/n report's results table, as HTML: one row per treatment arm against control.

Each row shows the arm's step, its conversion rate, the change against control with the
interval at the arm's corrected level, the relative change, the p-value corrected across the
arms, its guardrails and the verdict; the arm the decision is about is marked. Every value is
read from `decision.json` and escaped.
"""

from __future__ import annotations

import html
from typing import Any

from service.analysis.metric_rows import INCONCLUSIVE, LOSS, WIN


def arms_table_html(document: dict[str, Any]) -> str:
    """The results table of an A/B/n `decision.json` (see the module docstring)."""
    checks = {c["name"]: c for c in document.get("checks", [])}
    control = document["arms"][0]
    primary = document.get("primary") or {}
    head = [
        "Arm",
        "Step",
        f"{html.escape(str(document['metric']))} rate",
        f"Change vs {html.escape(str(control['variant']))} (interval)",
        "Relative change",
        "p-value (corrected)",
        "Guardrails",
        "Result",
    ]
    rate = f"{control['rate']:.2%}" if control["rate"] is not None else ""
    rows = [f"<tr><td>{html.escape(str(control['variant']))} (control)</td><td></td>"]
    rows[0] += f"<td>{rate}</td>" + "<td></td>" * 5 + "</tr>"
    for arm in document["arms"][1:]:
        name = str(arm.get("name") or arm["variant"])
        summary = (primary.get("arms") or {}).get(name) or {}
        rows.append(_row(arm, name, checks, summary, name == primary.get("arm"), document))
    correction = html.escape(str(primary.get("correction", "")))
    return (
        '<table class="results" id="results"><thead><tr>'
        + "".join(f"<th>{h}</th>" for h in head)
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
        + f'<p class="notes">A/B/n: each arm against control; p-values corrected across the '
        f"arms ({correction}), each interval at the level that agrees with its corrected "
        "p-value. &#9654; marks the arm the decision is about.</p>"
    )


def _row(
    arm: dict[str, Any],
    name: str,
    checks: dict[str, Any],
    summary: dict[str, Any],
    named: bool,
    document: dict[str, Any],
) -> str:
    decided = checks.get(summary.get("check") or "") or checks.get(f"difference:{name}")
    lift = checks.get(f"relative_lift:{name}")
    p = summary.get("p_value")
    verdict = INCONCLUSIVE
    if summary.get("significant") and decided is not None:
        verdict = WIN if decided["passed"] else LOSS
    guardrails = [
        f"{c['name'].split(':')[0].removeprefix('guardrail_')}: "
        f"{c['details']['outcome'].replace('_', '-')}"
        for c in checks.values()
        if c["name"].startswith("guardrail_") and c["name"].endswith(f":{name}")
    ]
    cells = [
        ("&#9654; " if named else "") + html.escape(name),
        f"{arm['step']:g}%" if arm.get("step") is not None else "",
        f"{arm['rate']:.2%}" if arm.get("rate") is not None else "",
        _change(decided),
        f"{lift['estimate']:+.1%}" if lift and lift["estimate"] is not None else "",
        ("< 0.001" if p < 0.001 else f"{p:.3f}") if p is not None else "",
        html.escape("; ".join(guardrails)),
        f'<span class="verdict {verdict}">{verdict}</span>',
    ]
    css = f"arm verdict-{verdict}{' decided' if named else ''}"
    return (
        f'<tr class="{css}" data-arm="{html.escape(name, quote=True)}">'
        + "".join(f"<td>{c}</td>" for c in cells)
        + "</tr>"
    )


def _change(check: dict[str, Any] | None) -> str:
    if check is None or check["estimate"] is None:
        return ""
    text = f"{check['estimate'] * 100:+.2f} pp"
    level = check["details"].get("interval_level")
    if check["interval"]:
        low, high = check["interval"]
        at = f"{level:.1%}: " if level else ""
        text += f'<span class="ci">{at}{low * 100:+.2f} to {high * 100:+.2f} pp</span>'
    return text
