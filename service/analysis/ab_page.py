"""The A/B report's page parts, as HTML: banners, the results table, the context block.

The notebook displays these; every value that came from a caller, a flag file or Unleash is
escaped here (`html.escape`), links are only relative paths or http(s) URLs, and the interval
bars are inline SVG (service.analysis.svg) because report pages run no script.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from service.analysis.ab_arms_page import arms_table_html
from service.analysis.drilldown import DrillDown, SliceResult
from service.analysis.metric_rows import (
    INCONCLUSIVE,
    LOSS,
    NON_INFERIOR,
    NOT_MEASURED,
    WIN,
    MetricRow,
    metric_rows,
)
from service.analysis.svg import LOSS as RED
from service.analysis.svg import NEUTRAL, axis_labels, interval_bar, shared_axis
from service.analysis.svg import WIN as GREEN

VERDICT_COLOURS = {WIN: GREEN, NON_INFERIOR: GREEN, LOSS: RED, INCONCLUSIVE: NEUTRAL}
STYLE = """<style>
.rollout-report table.results { border-collapse: collapse; font-size: 0.85rem; }
.rollout-report .results th, .rollout-report .results td {
  padding: 0.3rem 0.6rem; border-bottom: 1px solid #e0e0e0; text-align: right;
  white-space: nowrap; }
.rollout-report .results th:first-child, .rollout-report .results td:first-child {
  text-align: left; }
.rollout-report .results td.bar { padding: 0.1rem 0.4rem; }
.rollout-report .verdict { font-weight: 600; border-radius: 3px; padding: 0.1rem 0.4rem; }
.rollout-report .verdict.win, .rollout-report .verdict.non-inferior { color: #137333;
  background: #e6f4ea; }
.rollout-report .verdict.loss { color: #c5221f; background: #fce8e6; }
.rollout-report .verdict.inconclusive, .rollout-report .verdict.not-measured { color: #5f6368;
  background: #f1f3f4; }
.rollout-report .results th { white-space: normal; vertical-align: bottom; }
.rollout-report .role { color: #5f6368; font-size: 0.8rem; }
.rollout-report .ci { color: #5f6368; font-size: 0.8rem; display: block; }
.rollout-report .banner { border-left: 6px solid; padding: 0.6rem 0.9rem; margin: 0.5rem 0; }
.rollout-report .banner.alarm { border-color: #c5221f; background: #fce8e6; }
.rollout-report .banner.caution { border-color: #b06000; background: #fef7e0; }
.rollout-report .notes { color: #5f6368; font-size: 0.82rem; }
.rollout-report dl.context { display: grid; grid-template-columns: max-content auto;
  gap: 0.2rem 1rem; }
.rollout-report dl.context dt { color: #5f6368; }
.rollout-report dl.context dd { margin: 0; }
</style>"""


def page(*parts: str) -> str:
    """`parts` inside the report's own styled block."""
    return f'{STYLE}<div class="rollout-report">{"".join(parts)}</div>'


# --- banners ---------------------------------------------------------------------------------


def banners(document: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(id, severity, text) for each problem that makes the comparison untrustworthy: missing
    data, a sample ratio mismatch, users in both arms, too few users. Each ends saying the
    decision holds because of it."""
    checks = {c["name"]: c for c in document.get("checks", [])}
    found = []
    if document.get("missing"):
        found.append(
            (
                "missing-data",
                "alarm",
                "Missing data or inputs: "
                + "; ".join(document["missing"])
                + ". Check the flag, arm and metric names and the window.",
            )
        )
    srm = checks.get("sample_ratio_mismatch")
    if srm is not None and not srm["passed"]:
        observed = ", ".join(f"{k} {v:,}" for k, v in srm["details"]["observed"].items())
        expected = ", ".join(f"{k} {v:,.0f}" for k, v in srm["details"]["expected"].items())
        found.append(
            (
                "srm",
                "alarm",
                f"Sample ratio mismatch: {observed} users against an expected {expected} "
                f"(chi-square {_p_words(srm['p_value'])}, "
                f"alarm below {srm['details']['threshold']})."
                " Check the split the flag really serves (--expected-split), whether a variant "
                "was renamed or its bento fell back, and whether events of one arm were dropped.",
            )
        )
    both = checks.get("users_in_both_arms")
    if both is not None and not both["passed"]:
        found.append(
            (
                "users-in-both-arms",
                "alarm",
                f"Users in both arms: {both['details']['users']:,} users ({both['estimate']:.1%})"
                f" were served both variants (allowed: {both['details']['allowed']:.0%}). Check "
                "the strategy's stickiness (userId) and whether the flag changed mid-window.",
            )
        )
    size = checks.get("sample_size")
    if size is not None and not size["passed"] and not document.get("missing"):
        found.append(
            (
                "too-few-users",
                "caution",
                f"Too few users: the smaller arm has {size['estimate']:,}; at least "
                f"{size['details']['min_users_per_arm']:,} per arm are needed before the "
                "comparison means anything. Keep collecting or widen the window.",
            )
        )
    held = document.get("recommendation") == "hold"
    suffix = " The decision holds because of this." if held else ""
    return [(key, severity, text + suffix) for key, severity, text in found]


def banners_html(document: dict[str, Any]) -> str:
    return "".join(
        f'<div class="banner {severity}" id="banner-{key}" role="alert">'
        f"<strong>{html.escape(text.split(':', 1)[0])}:</strong>"
        f"{html.escape(text.split(':', 1)[1])}</div>"
        for key, severity, text in banners(document)
    )


# --- the results table -----------------------------------------------------------------------


def results_table_html(document: dict[str, Any]) -> str:
    """One row per metric with both arms' values, the changes, an interval bar on a shared
    (relative change) axis, the deciding p-value or chance to win and risk, and the verdict in
    colour and words; methods in numbered footnotes and each row's tooltip."""
    if len(document.get("arm_steps") or {}) > 1:
        return arms_table_html(document)
    rows = metric_rows(document)
    if not rows:
        return "<p><em>No comparison: an arm has no users in the window.</em></p>"
    arms = {arm["role"]: arm["variant"] for arm in document["arms"]}
    axis = shared_axis([v for r in rows for v in (*(r.relative_interval or ()), r.margin)])
    bayesian = any(r.chance_to_win is not None for r in rows)
    level = f"{1 - document['alpha']:.0%}"
    head = [
        "Metric",
        html.escape(str(arms.get("control"))) + ' <span class="role">control</span>',
        html.escape(str(arms.get("treatment"))) + ' <span class="role">treatment</span>',
        f"Change ({level} interval)",
        "Relative change",
        "Interval, relative (shared axis)<br>" + axis_labels(axis, _ticks(axis)),
        "p-value",
    ]
    head += ["Chance to win", "Risk"] if bayesian else []
    head.append("Result")
    body = [_row(i + 1, row, axis, bayesian) for i, row in enumerate(rows)]
    notes = "".join(
        f'<li id="method-{i + 1}">{html.escape(row.metric)}: {html.escape(row.method)}'
        f" (decision.json check <code>{html.escape(row.check)}</code>)</li>"
        for i, row in enumerate(rows)
    )
    return (
        '<table class="results" id="results"><thead><tr>'
        + "".join(f"<th>{h}</th>" for h in head)
        + "</tr></thead><tbody>"
        + "".join(body)
        + f'</tbody></table><ol class="notes">{notes}</ol>'
        + '<p class="notes">Bars: relative change with its interval; dashed: a guardrail\'s '
        "margin. Goal metrics' p-values are corrected across the primary and goal metrics.</p>"
    )


def _row(n: int, row: MetricRow, axis: Any, bayesian: bool) -> str:
    colour = VERDICT_COLOURS.get(row.verdict, NEUTRAL)
    low, high = row.relative_interval or (None, None)
    bar = interval_bar(
        axis,
        low,
        high,
        row.relative,
        colour,
        title=f"{row.metric}: {_relative(row.relative)} ({_pair(row.relative_interval, _rel)})",
        marker=row.margin,
    )
    cells = [
        f'{html.escape(row.metric)}<sup><a href="#method-{n}">{n}</a></sup> '
        f'<span class="role">{html.escape(row.role)}</span>',
        _value(row.control, row.unit),
        _value(row.treatment, row.unit),
        f"{_change(row.change, row.unit)}"
        f'<span class="ci">{_pair(row.change_interval, lambda v: _change(v, row.unit))}</span>',
        _relative(row.relative),
        bar,
        _p(row.p_value) if row.p_value is not None else "",
    ]
    if bayesian:
        cells += [_percent(row.chance_to_win, 1), _percent(row.risk, 2)]
    css = row.verdict.replace(" ", "-")
    cells.append(f'<span class="verdict {css}">{html.escape(row.verdict)}</span>')
    cell_html = "".join(
        f'<td class="{"bar" if i == 5 else ""}">{c}</td>' for i, c in enumerate(cells)
    )
    return (
        f'<tr class="metric {html.escape(row.role)} verdict-{css}" '
        f'data-check="{html.escape(row.check)}"'
        f' title="{html.escape(row.method, quote=True)}">{cell_html}</tr>'
    )


def _ticks(axis: Any) -> Sequence[str]:
    return (f"{axis.low:+.0%}", "0", f"{axis.high:+.0%}")


def _value(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    if unit == "%":
        return f"{value:.2%}"
    if unit == "ms":
        return f"{value:.1f} ms"
    return f"{value:.4g}"


def _change(value: float | None, unit: str) -> str:
    if value is None:
        return NOT_MEASURED if unit else ""
    if unit == "%":
        return f"{value * 100:+.2f} pp"
    if unit == "ms":
        return f"{value:+.2f} ms"
    return f"{value:+.4g}"


def _rel(value: float) -> str:
    return f"{value:+.1%}"


def _relative(value: float | None) -> str:
    return _rel(value) if value is not None else ""


def _pair(pair: tuple[float, float] | None, form: Any) -> str:
    return f"{form(pair[0])} to {form(pair[1])}" if pair else ""


def _percent(value: float | None, digits: int) -> str:
    return f"{value:.{digits}%}" if value is not None else ""


def p_text(value: float) -> str:
    """A p-value as printed: `< 0.001` below it, three decimals otherwise."""
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


_p = p_text


def _p_words(value: float) -> str:
    return "p < 0.001" if value < 0.001 else f"p = {value:.3f}"


# --- context ---------------------------------------------------------------------------------


def context_html(context: dict[str, Any]) -> str:
    """The flag and its words, each arm's bento and card, the step, the window, the previous
    report, the rollout's story and the command that reproduces this report."""
    if not context:
        return ""
    flag = context.get("flag") or {}
    items = [("Flag", _link(flag.get("name"), flag.get("url")) + _file(flag.get("file")))]
    items += [
        (label, html.escape(flag[key]))
        for label, key in (("Description", "description"), ("Owner", "owner"))
        if flag.get(key)
    ]
    if flag.get("hypothesis"):
        items.append(("Hypothesis", html.escape(flag["hypothesis"])))
    for arm in context.get("arms") or []:
        name = arm.get("variant") or arm.get("role")
        card = _link("model card", arm.get("card")) if arm.get("card") else "no card on this host"
        bento = html.escape(str(arm.get("bento") or "unknown bento"))
        items.append(
            (f"{html.escape(str(arm.get('role')))}: {html.escape(str(name))}", f"{bento} ({card})")
        )
    step = context.get("step")
    items.append(
        ("Step", f"{step:g}% of users on the treatment" if step is not None else "unknown")
    )
    window = context.get("window") or {}
    items.append(
        ("Window", html.escape(f"{window.get('start') or 'first exposure'} to {window.get('end')}"))
    )
    previous = context.get("previous_report")
    items.append(
        ("Previous report", _link("the one before", previous) if previous else "none: the first")
    )
    items.append(("The rollout's story", _link("every step of this flag", context.get("story"))))
    items.append(("Reproduce", f"<code>{html.escape(str(context.get('command', '')))}</code>"))
    rows = "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in items)
    return f'<dl class="context" id="context">{rows}</dl>'


def _link(text: Any, href: Any) -> str:
    label = html.escape(str(text))
    if not isinstance(href, str) or not _safe_href(href):
        return label
    return f'<a href="{html.escape(href, quote=True)}">{label}</a>'


def _safe_href(href: str) -> bool:
    if href.startswith(("https://", "http://")):
        return True
    return ":" not in href.split("/", 1)[0] and not href.startswith("//")


def _file(name: Any) -> str:
    return f" (flags/{html.escape(str(name))})" if name else ""


# --- the drill-down --------------------------------------------------------------------------

_OUTCOME_CSS = {"non-inferior": WIN, "inferior": LOSS, "inconclusive": INCONCLUSIVE}


def slices_html(drill: DrillDown, arms: Sequence[str]) -> str:
    """The drill-down table: per slice, users per arm, the primary metric's rates and change
    with its interval, raw and Holm-corrected p-values, and each guardrail's outcome."""
    if not drill.slices:
        return "<p><em>No slices: no users in the window.</em></p>"
    names = sorted({g for s in drill.slices for g in s.guardrails})
    head = [
        "Dimension",
        "Slice",
        f"Users {html.escape(arms[0])}",
        f"Users {html.escape(arms[1])}",
        f"Rate {html.escape(arms[0])}",
        f"Rate {html.escape(arms[1])}",
        "Change (interval)",
        "Relative",
        "p (raw)",
        "p (Holm)",
        *(html.escape(n) for n in names),
    ]
    body = "".join(_slice_row(s, names) for s in drill.slices)
    return (
        f'<p class="notes" id="drilldown-note"><strong>{html.escape(drill.note())}</strong></p>'
        '<table class="results" id="drilldown"><thead><tr>'
        + "".join(f"<th>{h}</th>" for h in head)
        + f"</tr></thead><tbody>{body}</tbody></table>"
    )


def _slice_row(s: SliceResult, guardrails: Sequence[str]) -> str:
    change = _change(s.difference, "%") if s.difference is not None else "too few"
    cells = [
        html.escape(s.dimension),
        html.escape(s.value),
        f"{s.control_users:,}",
        f"{s.treatment_users:,}",
        _value(s.control_rate, "%"),
        _value(s.treatment_rate, "%"),
        f'{change}<span class="ci">{_pair(s.interval, lambda v: _change(v, "%"))}</span>',
        _relative(s.relative),
        _p(s.p_value) if s.p_value is not None else "",
        _p(s.adjusted_p) if s.adjusted_p is not None else "",
    ]
    for name in guardrails:
        outcome = s.guardrails.get(name, NOT_MEASURED)
        css = _OUTCOME_CSS.get(outcome, NOT_MEASURED).replace(" ", "-")
        cells.append(f'<span class="verdict {css}">{html.escape(outcome)}</span>')
    return '<tr class="slice">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
