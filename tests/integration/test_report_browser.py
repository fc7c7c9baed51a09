"""Rendered reports in a real browser: the results table, the banners, the drill-down, the index
filters and a flag's story, for a planted-effect store, an SRM store and a multi-metric store.

Real papermill runs on real SQLite stores, opened in Debian's Chromium through Playwright (no
script runs on these pages: their Content-Security-Policy forbids it, so everything checked
here works without JavaScript). The numbers the table shows must be decision.json's.
Screenshots land in docs/reports/ for the README.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from service.analysis.reports import KERNEL_NAME, run_ab_report
from service.config import Settings
from service.flags.audit import GUARD, AuditStore
from service.store.events import create_engine, exposures, outcomes

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "docs" / "reports"
T0 = 1_793_577_600.0  # 2026-11-02T00:00:00Z
DAY = 86_400
SEGMENTS = ("consumer", "smb", "enterprise")
REGIONS = ("us", "eu", "apac")


def populate(url, flag, rates, *, users, seed, split=0.5, goals=False):
    """Users with a segment, a region and a `plan` property; `rates` per arm; `split` is the
    treatment's share actually served; with `goals`, revenue and sessions outcomes too."""
    rng = random.Random(seed)
    exposure_rows, outcome_rows = [], []
    for n in range(users):
        user = f"{flag}-u{n}"
        variant = "treatment" if rng.random() < split else "control"
        segment, region = rng.choice(SEGMENTS), rng.choice(REGIONS)
        first = T0 + rng.uniform(0, 3 * DAY)
        for visit in range(rng.randint(1, 3)):
            exposure_rows.append(
                {
                    "ts": first + visit,
                    "request_id": f"{user}-r{visit}",
                    "flag": flag,
                    "environment": "test",
                    "user_id": user,
                    "segment": segment,
                    "region": region,
                    "properties": {"plan": rng.choice(("free", "pro"))},
                    "variant": variant,
                    "bento": "churn:v2" if variant == "treatment" else "churn:v1",
                    "reason": "strategy_variant",
                    "status": 503 if rng.random() < 0.01 else 200,
                    "latency_ms": rng.gauss(40 if variant == "treatment" else 42, 5),
                    "shadow": False,
                    "fallback": False,
                }
            )
        rate = rates[variant] + (0.05 if segment == "enterprise" else 0.0)
        if rng.random() < rate:
            outcome_rows.append(_outcome(first + 3_600, f"{user}-r0", "retained", 1.0))
        if goals:
            lift = 1.1 if variant == "treatment" else 1.0
            outcome_rows.append(
                _outcome(first + 60, f"{user}-r0", "revenue", rng.expovariate(1 / (20 * lift)))
            )
            outcome_rows.append(_outcome(first + 60, f"{user}-r0", "sessions", rng.randint(1, 5)))
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(exposures.insert(), exposure_rows)
        conn.execute(outcomes.insert(), outcome_rows)
    engine.dispose()


def _outcome(ts, request_id, metric, value):
    return {"ts": ts, "request_id": request_id, "metric": metric, "value": float(value)}


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    from jupyter_client.kernelspec import KernelSpecManager

    if KERNEL_NAME not in KernelSpecManager().find_kernel_specs():
        pytest.fail(f"Jupyter kernel '{KERNEL_NAME}' missing: run `make .venv/.installed`")
    root = tmp_path_factory.mktemp("reports")
    return Settings.load({"reports_dir": root / "reports", "data_dir": root / "data"})


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('events') / 'events.db'}"
    populate(url, "churn-model", {"control": 0.30, "treatment": 0.36}, users=3_000, seed=1)
    populate(
        url, "search-model", {"control": 0.30, "treatment": 0.30}, users=3_000, seed=2, split=0.62
    )
    populate(
        url, "ranker-model", {"control": 0.30, "treatment": 0.33}, users=3_000, seed=3, goals=True
    )
    # A guard's move on the audit table: the story must name who acted.
    AuditStore(create_engine(url)).record(
        "embedded",
        "churn-model",
        source=GUARD,
        actor="rollout-guard",
        action="ramp",
        what="ab-test 10% -> 25%",
        why="the A/B report said ramp",
    )
    return url


@pytest.fixture(scope="module")
def reports(settings, store):
    """Four reports: the planted effect twice (the first day, then all of it), the SRM store,
    and the multi-metric store on the Bayesian engine with a `plan` drill-down."""
    run = {"event_store_url": store, "progress": lambda _m: None}
    first_day = run_ab_report(
        settings, flag="churn-model", window_end="2026-11-03T00:00:00", current_step=10, **run
    )
    planted = run_ab_report(settings, flag="churn-model", current_step=25, **run)
    srm = run_ab_report(settings, flag="search-model", expected_split="50:50", **run)
    multi = run_ab_report(
        settings,
        flag="ranker-model",
        goal_metrics="revenue,sessions",
        engine="bayesian",
        dimensions="plan",
        **run,
    )
    return {"first_day": first_day, "planted": planted, "srm": srm, "multi": multi}


def open_page(browser, path: Path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(path.as_uri())
    return page


def shot(page, name: str, selector: str | None = None) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    target = page.locator(selector).first if selector else page
    target.screenshot(path=str(SHOTS / name))


def cells(row) -> list[str]:
    return [c.strip() for c in row.locator("td").all_inner_texts()]


def test_planted_effect_table_rows_equal_decision_json(browser, reports):
    result = reports["planted"]
    decision = result.decision
    assert decision["recommendation"] == "ramp", decision["reasons"]
    page = open_page(browser, result.html_path)
    rows = page.locator("#results tbody tr.metric")
    assert rows.count() == 4  # retained, then the three guardrails
    primary = cells(rows.nth(0))
    arms = {a["role"]: a for a in decision["arms"]}
    checks = {c["name"]: c for c in decision["checks"]}
    decided = checks[decision["primary"]["check"]]
    assert primary[0].startswith(decision["metric"])
    assert primary[1] == f"{arms['control']['rate']:.2%}"
    assert primary[2] == f"{arms['treatment']['rate']:.2%}"
    low, high = decided["interval"]
    assert primary[3].splitlines() == [
        f"{decided['estimate'] * 100:+.2f} pp",
        f"{low * 100:+.2f} pp to {high * 100:+.2f} pp",
    ]
    assert primary[4] == f"{checks['relative_lift']['estimate']:+.1%}"
    p = decision["primary"]["p_value"]
    assert primary[6] == ("< 0.001" if p < 0.001 else f"{p:.3f}")
    assert primary[-1] == "win"
    assert page.locator("#results tbody tr.metric").nth(0).locator("svg.interval rect").count() == 1
    latency = cells(rows.nth(3))
    latency_check = checks["guardrail_latency_ms"]
    assert latency[1] == f"{latency_check['details']['control']:.1f} ms"
    assert latency[3].splitlines()[0] == f"{latency_check['estimate']:+.2f} ms"  # ms, not %
    assert latency[3].splitlines()[1].endswith(" ms")
    assert "method" not in " ".join(primary).lower()  # methods are footnotes and tooltips
    assert "two-proportion z-test" in page.locator("ol.notes").inner_text()
    assert page.locator(".banner").count() == 0
    slices = page.locator("#drilldown tbody tr.slice")
    assert slices.count() == len(SEGMENTS) + len(REGIONS)
    assert "Exploratory" in page.locator("#drilldown-note").inner_text()
    context = page.locator("#context").inner_text()
    assert "Churn-risk model" in context  # the flag's description from flags/
    assert "rollout report ab --flag churn-model" in context
    assert page.locator("#context a", has_text="the one before").count() == 1
    shot(page, "ab-report.png")
    shot(page, "results-table.png", "#results")
    shot(page, "drilldown.png", "#drilldown")


def test_srm_store_shows_the_banner_and_holds(browser, reports):
    result = reports["srm"]
    assert result.decision["recommendation"] == "hold"
    assert "sample ratio mismatch" in result.decision["reasons"][0]
    page = open_page(browser, result.html_path)
    banner = page.locator("#banner-srm")
    assert banner.is_visible()
    text = banner.inner_text()
    assert "Sample ratio mismatch" in text and "holds because of this" in text
    assert page.locator("#results tbody tr.metric").count() == 4
    assert page.locator("#drilldown tbody tr.slice").count() == len(SEGMENTS) + len(REGIONS)
    shot(page, "srm-banner.png")


def test_multi_metric_bayesian_store(browser, reports):
    result = reports["multi"]
    decision = result.decision
    page = open_page(browser, result.html_path)
    rows = page.locator("#results tbody tr.metric")
    assert rows.count() == 6  # retained, revenue, sessions, three guardrails
    names = [cells(rows.nth(i))[0].split()[0].rstrip("0123456789") for i in range(6)]
    assert names[:3] == ["retained", "revenue", "sessions"]
    bayesian = {c["name"]: c for c in decision["checks"]}["bayesian"]
    headers = page.locator("#results thead th").all_inner_texts()
    chance = cells(rows.nth(0))[headers.index("Chance to win")]
    assert chance == f"{bayesian['details']['chance_to_win']:.1%}"
    revenue = {c["name"]: c for c in decision["checks"]}["goal_revenue"]
    assert cells(rows.nth(1))[1] == f"{revenue['details']['control']:.4g}"
    plan = page.locator("#drilldown tbody tr.slice", has_text="plan")
    assert plan.count() == 2  # free, pro
    shot(page, "multi-metric.png", "#results")


def test_index_filters_without_script_and_the_story(browser, reports, settings):
    index = settings.reports_dir / "index.html"
    page = open_page(browser, index)
    rows = page.locator("#runs tbody tr")
    assert rows.count() == 4
    page.locator("label[for=decision-hold]").click()
    visible = [r for r in rows.all() if r.is_visible()]
    assert visible and all("decision-hold" in (r.get_attribute("class") or "") for r in visible)
    assert len(visible) == sum(
        1 for r in reports.values() if r.decision["recommendation"] == "hold"
    )
    page.locator("label[for=decision-all]").click()
    assert all(r.is_visible() for r in rows.all())
    shot(page, "index.png")
    story = open_page(browser, settings.reports_dir / "churn-model" / "index.html")
    assert story.locator("#story-plot svg circle").count() == 2  # one per A/B report
    timeline = story.locator("#timeline").inner_text()
    assert "guard (rollout-guard)" in timeline and "the A/B report said ramp" in timeline
    assert story.locator("#timeline a").count() == 2
    links = json.loads((reports["planted"].output_dir / "context.json").read_text())
    assert links["previous_report"] == f"../{reports['first_day'].output_dir.name}/report.html"
    shot(story, "story.png")
