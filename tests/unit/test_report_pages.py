"""The report pages without a kernel: the results table's rows come from decision.json, banners
name what is wrong, every value is escaped, the index filters need no script, the story names
who acted, and the preflight refuses what the store lacks (on a real SQLite file)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import numpy as np
import pytest

from service.analysis.ab_evidence import DecisionPolicy, GuardrailSpec
from service.analysis.ab_page import (
    banners,
    context_html,
    p_text,
    results_table_html,
    slices_html,
)
from service.analysis.ab_test import DEFAULT_GUARDRAILS, decide_ab
from service.analysis.drilldown import drill_down
from service.analysis.metric_rows import metric_rows
from service.analysis.preflight import check_ab_inputs, check_validation_inputs
from service.analysis.queries import AbSample, Window, ab_sample
from service.analysis.report_context import command_line, previous_report, unleash_flag_url
from service.analysis.report_index import Change, index_page, read_runs, story_page
from service.analysis.stats import MomentStats, ProportionStats
from service.errors import ReportRefused
from service.flags.audit import DECIDE, GUARD, UNLEASH
from service.store.events import create_engine, exposures, outcomes

WIN = ((5_000, 1_500), (5_000, 1_750))


def moments(arm, y, x):
    y, x = np.asarray(y, float), np.asarray(x, float)
    return MomentStats(arm, len(y), y.sum(), y @ y, x.sum(), x @ x, x @ y)


def guardrail_sums(seed=1, users=2_000):
    rng = np.random.default_rng(seed)
    out = {"error_rate": {}, "fallback_rate": {}, "latency_ms": {}}
    for arm, lat in (("control", 10.0), ("treatment", 9.0)):
        requests = np.full(users, 4.0)
        out["error_rate"][arm] = moments(arm, rng.binomial(4, 0.01, users), requests)
        out["fallback_rate"][arm] = moments(arm, np.zeros(users), requests)
        out["latency_ms"][arm] = moments(arm, rng.gamma(4.0, lat, users), requests)
    return out


def document(arms=WIN, *, engine="frequentist", goals=None, metric="retained", variant="treatment"):
    (cu, cc), (tu, tc) = arms
    sample = AbSample(
        flag="churn-model",
        metric=metric,
        window=Window(),
        arms={
            "control": ProportionStats("control", cu, cc),
            variant: ProportionStats(variant, tu, tc),
        },
        users_in_several_arms=0,
        first_exposure=datetime(2026, 11, 2, tzinfo=UTC),
        last_exposure=datetime(2026, 11, 2, tzinfo=UTC),
    )
    sums = guardrail_sums()
    sums = {name: {"control": m["control"], variant: m["treatment"]} for name, m in sums.items()}
    return decide_ab(
        sample,
        control="control",
        treatment=variant,
        current_step=25,
        policy=DecisionPolicy(guardrails=DEFAULT_GUARDRAILS, engine=engine),
        goal_moments=goals,
        guardrail_moments=sums,
    ).to_dict()


def test_rows_are_decision_json_numbers_one_unit_per_column():
    doc = document()
    rows = metric_rows(doc)
    assert [r.role for r in rows] == ["primary", "guardrail", "guardrail", "guardrail"]
    primary, latency = rows[0], rows[3]
    checks = {c["name"]: c for c in doc["checks"]}
    assert doc["primary"] == {
        "engine": "frequentist",
        "check": "difference",
        "p_value": checks["difference"]["p_value"],
        "significant": True,
    }
    assert (primary.control, primary.treatment) == (0.3, 0.35)
    assert primary.change == checks["difference"]["estimate"]
    assert primary.change_interval == tuple(checks["difference"]["interval"])
    assert primary.relative_interval == tuple(checks["relative_lift"]["interval"])
    assert primary.verdict == "win" and primary.unit == "%"
    lat = checks["guardrail_latency_ms"]
    assert latency.unit == "ms" and latency.change == lat["estimate"]
    assert latency.change_interval == tuple(lat["interval"])  # ms, like the change
    assert latency.relative_interval == tuple(lat["details"]["relative_lift_interval"])
    assert latency.verdict == "non-inferior" and latency.margin == 0.2


def test_bayesian_row_shows_chance_to_win_and_risk_instead_of_a_p_value():
    doc = document(engine="bayesian")
    primary = metric_rows(doc)[0]
    bayesian = {c["name"]: c for c in doc["checks"]}["bayesian"]
    assert primary.check == "bayesian" and primary.p_value is None
    assert primary.chance_to_win == bayesian["details"]["chance_to_win"]
    assert primary.risk == bayesian["details"]["risk_treatment"]
    assert primary.relative == bayesian["estimate"]
    page = results_table_html(doc)
    assert "Chance to win" in page and f"{primary.chance_to_win:.1%}" in page


def test_goal_metrics_get_their_own_rows_with_corrected_p_values():
    rng = np.random.default_rng(3)
    revenue = {
        "control": moments("control", rng.exponential(20, 5_000), np.zeros(5_000)),
        "treatment": moments("treatment", rng.exponential(20, 5_000), np.zeros(5_000)),
    }
    doc = document(goals={"revenue": revenue})
    goal = next(r for r in metric_rows(doc) if r.role == "goal")
    check = {c["name"]: c for c in doc["checks"]}["goal_revenue"]
    assert goal.metric == "revenue" and goal.p_value == check["p_value"]
    assert goal.verdict == "inconclusive"  # no difference planted: a word, not a failure
    assert "corrected" in goal.method


@pytest.mark.parametrize(
    ("p", "text"), [(0.0, "< 0.001"), (6.54e-15, "< 0.001"), (0.0123, "0.012")]
)
def test_p_values_print_below_a_thousandth_as_such(p, text):
    assert p_text(p) == text


def test_banners_name_the_problem_and_that_the_decision_holds():
    srm = document(arms=((7_000, 2_100), (3_000, 900)))
    assert srm["recommendation"] == "hold"
    found = {key: text for key, _severity, text in banners(srm)}
    assert "Sample ratio mismatch" in found["srm"] and "holds because of this" in found["srm"]
    few = document(arms=((50, 15), (50, 20)))
    found = {key: text for key, _severity, text in banners(few)}
    assert set(found) == {"too-few-users"} and "at least 100 per arm" in found["too-few-users"]
    assert banners(document()) == []


def test_values_from_callers_are_escaped_in_every_part():
    evil = "<script>alert(1)</script>"
    doc = document(metric=evil, variant=evil)
    page = results_table_html(doc)
    assert "<script>" not in page and "&lt;script&gt;" in page
    context = {
        "flag": {"name": evil, "url": "javascript:alert(1)", "description": evil, "owner": ""},
        "arms": [{"role": "control", "variant": evil, "bento": evil, "card": "javascript:x"}],
        "command": f"rollout report ab --flag '{evil}'",
    }
    html = context_html(context)
    assert "<script>" not in html and html.count("&lt;script&gt;") == 5
    assert "href=" not in html.split("Previous report")[0]  # javascript: is never a link


def test_command_line_lists_what_differs_and_quotes_it():
    defaults = {"flag": "", "metric": "retained", "alpha": 0.05, "guardrails": True}
    line = command_line(
        "ab",
        {"flag": "churn-model", "metric": "it's", "alpha": 0.05, "guardrails": False},
        defaults,
    )
    assert line == "rollout report ab --flag churn-model --metric 'it'\"'\"'s' --no-guardrails"


def test_unleash_flag_url_has_no_credentials():
    url = unleash_flag_url("http://admin:secret@unleash.local:4242/api/", "churn-model")
    assert url == "http://unleash.local:4242/projects/default/features/churn-model"
    assert unleash_flag_url(None, "churn-model") is None


def test_previous_report_is_the_newest_earlier_run_of_the_same_kind(tmp_path):
    for name in ("20261101T000000Z-ab", "20261102T000000Z-ab", "20261102T100000Z-validation"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.html").write_text("x")
    now = tmp_path / "20261103T000000Z-ab"
    now.mkdir()
    assert previous_report(now, "ab") == "../20261102T000000Z-ab/report.html"
    assert previous_report(tmp_path / "20261101T000000Z-ab", "ab") is None


def write_run(reports, flag, run, **fields):
    folder = reports / flag / run
    folder.mkdir(parents=True)
    (folder / "report.html").write_text("report")
    doc = {"flag": flag, "kind": "ab", "generated_at": run[:15], **fields}
    (folder / "decision.json").write_text(json.dumps(doc))


def test_index_filters_are_css_over_known_classes_and_links_each_story(tmp_path):
    write_run(tmp_path, "churn-model", "20261101T000000Z-ab", recommendation="hold")
    write_run(tmp_path, "churn-model", "20261102T000000Z-ab", recommendation="ramp")
    write_run(tmp_path, "odd<flag>", "20261103T000000Z-ab", recommendation="<b>x</b>")
    page = index_page(read_runs(tmp_path))
    rows = re.findall(r"<tr class=\"([^\"]+)\">", page)
    assert rows == [
        "kind-ab decision-other",
        "kind-ab decision-ramp",
        "kind-ab decision-hold",
    ]  # newest first; an unknown decision gets no class of its own
    assert "#decision-hold:checked ~ #runs tbody tr:not(.decision-hold)" in page
    assert "<b>x</b>" not in page and "odd&lt;flag&gt;" in page
    assert 'href="churn-model/index.html"' in page
    assert "<script" not in page


def test_story_names_who_acted_and_plots_each_ab_report(tmp_path):
    doc = document()
    for run, step in (("20261101T000000Z-ab", 10), ("20261102T000000Z-ab", 25)):
        folder = tmp_path / "churn-model" / run
        folder.mkdir(parents=True)
        (folder / "decision.json").write_text(json.dumps({**doc, "current_step": step}))
    changes = [
        Change(1.0, GUARD, "rollout-guard", "ramp", "10% -> 25%", "report said ramp"),
        Change(2.0, DECIDE, "ana", "approve", "pending promotion", "looks good"),
        Change(3.0, UNLEASH, "bob", "feature-updated", "<i>edit</i>", ""),
    ]
    page = story_page("churn-model", read_runs(tmp_path), changes, tmp_path)
    assert page.count("<circle") == 2
    for who in ("guard (rollout-guard)", "ana (approval)", "bob in Unleash"):
        assert who in page
    assert "<i>edit</i>" not in page


# --- the store: preflight and drill-down on a real SQLite file --------------------------------


@pytest.fixture
def engine(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'events.db'}")
    rng = np.random.default_rng(5)
    rows, outs = [], []
    for n in range(400):
        variant = "treatment" if n % 2 else "control"
        user = f"u{n}"
        rows.append(
            {
                "ts": 1_000.0 + n,
                "request_id": f"r{n}",
                "flag": "churn-model",
                "environment": "test",
                "user_id": user,
                "segment": ("smb", "enterprise")[n % 3 == 0],
                "region": ("eu", "us")[n % 5 == 0],
                "properties": {"plan": ("free", "pro")[n % 7 == 0]},
                "variant": variant,
                "bento": "churn:v2" if n % 2 else "churn:v1",
                "reason": "strategy_variant",
                "status": 200,
                "latency_ms": float(rng.gamma(4, 3)),
                "shadow": False,
                "fallback": False,
            }
        )
        if rng.random() < (0.4 if n % 2 else 0.3):
            outs.append(
                {"ts": 2_000.0 + n, "request_id": f"r{n}", "metric": "retained", "value": 1.0}
            )
    with engine.begin() as conn:
        conn.execute(exposures.insert(), rows)
        conn.execute(outcomes.insert(), outs)
    yield engine
    engine.dispose()


AB = {"flag": "churn-model", "control": "control", "treatment": "treatment", "metric": "retained"}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"flag": "churn-modle"}, "flag 'churn-modle' has no exposures in the event store; flags"),
        (
            {"treatment": "v3"},
            "treatment arm 'v3' was never served by flag 'churn-model'; its "
            "variants: control, treatment",
        ),
        (
            {"metric": "revnue"},
            "metric 'revnue' has no outcomes in the event store; metrics: retained",
        ),
        ({"goal_metrics": "retained, sales"}, "metric 'sales' has no outcomes"),
        (
            {"window_start": "1970-01-02T00:00:00"},
            "holds no exposure of flag 'churn-model'; "
            "its exposures span 1970-01-01T00:16:40Z to 1970-01-01T00:23:19Z",
        ),
        ({"window_start": "1970-01-02", "window_end": "1970-01-01"}, "is not before its end"),
        ({"dimensions": "plan,tier"}, "dimension 'tier' is in no exposure"),
        ({"dimensions": "a'b"}, "must be a context field name"),
        ({"flag": "../x"}, "must be letters, digits"),
    ],
    ids=lambda v: "-".join(v) if isinstance(v, dict) else None,
)
def test_preflight_refuses_what_the_store_lacks(engine, change, words):
    with pytest.raises(ReportRefused) as refused:
        check_ab_inputs(engine, {**AB, **change})
    assert words in refused.value.message
    assert refused.value.exit_code == 2


def test_preflight_passes_a_good_request_and_returns_the_inventory(engine):
    served = check_ab_inputs(engine, {**AB, "dimensions": "plan", "window_end": "1970-01-02"})
    assert {(s.variant, s.bento) for s in served} == {
        ("control", "churn:v1"),
        ("treatment", "churn:v2"),
    }
    with pytest.raises(ReportRefused, match=r"'churn:v9' never served.*churn:v1, churn:v2"):
        check_validation_inputs(engine, {"flag": "churn-model", "bento": "churn:v9"})


def test_drill_down_slices_add_up_to_the_whole_and_are_corrected(engine):
    arms = ("control", "treatment")
    drill = drill_down(
        engine,
        flag="churn-model",
        arms=arms,
        metric="retained",
        window=Window(),
        dimensions=("segment", "region", "plan"),
        alpha=0.05,
        guardrails=(GuardrailSpec("latency_ms", 0.2, relative=True),),
    )
    whole = ab_sample(engine, flag="churn-model", arms=arms, metric="retained")
    for dimension in ("segment", "region", "plan"):
        mine = [s for s in drill.slices if s.dimension == dimension]
        assert {s.value for s in mine} == {
            "segment": {"smb", "enterprise"},
            "region": {"eu", "us"},
            "plan": {"free", "pro"},
        }[dimension]
        assert sum(s.control_users for s in mine) == whole.arms["control"].users
        assert sum(s.treatment_users for s in mine) == whole.arms["treatment"].users
    tested = [s for s in drill.slices if s.p_value is not None]
    assert all(s.adjusted_p >= s.p_value for s in tested)
    assert all(
        s.guardrails["latency_ms"] in ("non-inferior", "inconclusive", "inferior") for s in tested
    )
    assert f"{len(tested)} slice comparisons" in drill.note()
    page = slices_html(drill, arms)
    assert page.count('<tr class="slice">') == 6 and "Exploratory" in page
