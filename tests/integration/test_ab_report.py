"""The A/B report end to end: a real event store, papermill, the `model-rollout` kernel, nbconvert.

Synthetic traffic with a planted effect goes into a temporary SQLite event store; the report
must find the effect (ramp), find nothing where nothing was planted (hold), and still render
for a flag without events. Needs the kernel from `make .venv/.installed`.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import nbformat
import pytest
import scrapbook as sb

from service.analysis.decision import numbers
from service.analysis.reports import KERNEL_NAME, ReportFailed, run_ab_report
from service.config import Settings
from service.store.events import create_engine, exposures, outcomes

pytestmark = pytest.mark.integration

T0 = 1_793_577_600.0  # 2026-11-02T00:00:00Z
DAY = 86_400
USERS = 4_000


def populate(url: str, flag: str, rates: dict[str, float], *, users: int, seed: int) -> None:
    """Users split 50:50 with 1-3 exposures over three days; converters get one outcome.

    Half the outcomes carry the request id, half only user and flag, so both joins are used.
    Shadow exposures and default-bento users are mixed in and must not change the result.
    """
    rng = random.Random(seed)
    exposure_rows, outcome_rows = [], []
    for n in range(users):
        user, variant = f"{flag}-u{n}", rng.choice(list(rates))
        first = T0 + rng.uniform(0, 3 * DAY)
        for visit in range(rng.randint(1, 3)):
            exposure_rows.append(_exposure(flag, user, variant, f"{user}-r{visit}", first + visit))
        exposure_rows.append(_exposure(flag, user, "shadow-v3", f"{user}-s", first, shadow=True))
        if rng.random() < rates[variant]:
            by_request = rng.random() < 0.5
            outcome_rows.append(
                {
                    "ts": first + 3_600,
                    "request_id": f"{user}-r0" if by_request else None,
                    "user_id": None if by_request else user,
                    "flag": None if by_request else flag,
                    "metric": "retained",
                    "value": 1.0,
                }
            )
    for n in range(users // 10):
        exposure_rows.append(_exposure(flag, f"{flag}-d{n}", "default", f"{flag}-d{n}", T0))
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(exposures.insert(), exposure_rows)
        conn.execute(outcomes.insert(), outcome_rows)
    engine.dispose()


def _exposure(flag, user, variant, request_id, ts, *, shadow=False):
    return {
        "ts": ts,
        "request_id": request_id,
        "flag": flag,
        "environment": "test",
        "user_id": user,
        "variant": variant,
        "bento": f"churn:{variant}",
        "reason": "strategy_variant",
        "status": 200,
        "latency_ms": 3.0,
        "shadow": shadow,
        "fallback": False,
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('events') / 'events.db'}"
    populate(url, "churn-model", {"control": 0.30, "treatment": 0.40}, users=USERS, seed=1)
    populate(url, "search-model", {"control": 0.30, "treatment": 0.30}, users=USERS, seed=2)
    return url


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    root = tmp_path_factory.mktemp("rollout")
    return Settings.load({"reports_dir": root / "reports", "data_dir": root / "data"})


@pytest.fixture(autouse=True, scope="module")
def kernel_installed():
    from jupyter_client.kernelspec import KernelSpecManager

    if KERNEL_NAME not in KernelSpecManager().find_kernel_specs():
        pytest.fail(
            f"Jupyter kernel '{KERNEL_NAME}' missing: run `make .venv/.installed` or "
            f"`.venv/bin/python -m ipykernel install --sys-prefix --name {KERNEL_NAME}`"
        )


def report(settings, store, flag, **kwargs):
    messages: list[str] = []
    result = run_ab_report(
        settings,
        flag=flag,
        control="control",
        treatment="treatment",
        event_store_url=store,
        progress=messages.append,
        **kwargs,
    )
    assert messages, "progress was never reported"
    return result


def assert_rendered(result, flag: str) -> str:
    """The files exist, the HTML has outputs but no code, and the summary comes first."""
    assert result.output_dir == result.notebook_path.parent
    assert result.output_dir.parent.name == flag
    assert re.fullmatch(r"\d{8}T\d{6}Z-ab(-\d+)?", result.output_dir.name)
    for path in (result.notebook_path, result.html_path, result.output_dir / "decision.json"):
        assert path.is_file(), path
    page = result.html_path.read_text(encoding="utf-8")
    notebook = nbformat.read(result.notebook_path, as_version=4)
    assert notebook.metadata.kernelspec.name == KERNEL_NAME
    for cell in notebook.cells:
        if cell.cell_type == "code":
            first_line = cell.source.strip().splitlines()[0]
            assert first_line not in page, f"code leaked into the HTML: {first_line!r}"
    for code in ("import ", "def ", "decide_ab(", "sb.glue("):
        assert code not in _visible_text(page), code
    headline = f"<strong>{result.decision['recommendation'].upper()}</strong>"
    assert headline in page
    assert page.index(headline) < page.index(">Results<")  # the summary is at the top
    return page


def _visible_text(page: str) -> str:
    """The page without <script>/<style> blocks (the nbconvert template's own JavaScript)."""
    return re.sub(r"<(script|style)\b.*?</\1>", "", page, flags=re.DOTALL)


def assert_scraps_match(result) -> None:
    scraps = sb.read_notebook(str(result.notebook_path)).scraps
    document = json.loads((result.output_dir / "decision.json").read_text())
    assert document == result.decision
    assert scraps["decision"].data == document
    assert scraps["recommendation"].data == document["recommendation"]
    expected = numbers(document)
    assert expected, "decision.json has numbers"
    for name, value in expected.items():
        assert scraps[name].data == value, name


def test_clear_win_ramps(settings, store):
    result = report(settings, store, "churn-model", current_step=25, expected_split="50:50")
    decision = result.decision
    assert decision["recommendation"] == "ramp", decision["reasons"]
    assert (decision["current_step"], decision["next_step"]) == (25, 50)
    arms = {arm["role"]: arm for arm in decision["arms"]}
    assert arms["control"]["users"] + arms["treatment"]["users"] == USERS
    assert arms["control"]["rate"] == pytest.approx(0.30, abs=0.03)
    assert arms["treatment"]["rate"] == pytest.approx(0.40, abs=0.03)
    checks = {check["name"]: check for check in decision["checks"]}
    assert checks["sample_ratio_mismatch"]["passed"]
    assert checks["difference"]["interval"][0] > 0
    for guardrail in ("error_rate", "fallback_rate", "latency_ms"):
        assert checks[f"guardrail_{guardrail}"]["details"]["outcome"] == "non_inferior"
    page = assert_rendered(result, "churn-model")
    assert "churn-model" in page
    assert_scraps_match(result)
    index = (settings.reports_dir / "index.html").read_text()
    assert f"churn-model/{result.output_dir.name}/report.html" in index


def test_no_effect_holds(settings, store):
    result = report(settings, store, "search-model", current_step=5)
    decision = result.decision
    assert decision["recommendation"] == "hold", decision["reasons"]
    assert decision["next_step"] == 5
    assert "inconclusive" in " ".join(decision["reasons"])
    assert_rendered(result, "search-model")
    assert_scraps_match(result)


def test_a_flag_the_store_never_saw_is_refused_before_any_notebook_runs(settings, store):
    from service.errors import ReportRefused

    before = sorted(settings.reports_dir.rglob("*")) if settings.reports_dir.exists() else []
    with pytest.raises(ReportRefused) as refused:
        report(settings, store, "no-such-flag")
    message = refused.value.message
    assert "'no-such-flag' has no exposures" in message and "churn-model" in message
    with pytest.raises(ReportRefused, match=r"metric 'revenue' has no outcomes.*retained"):
        report(settings, store, "churn-model", metric="revenue")
    with pytest.raises(ReportRefused, match="treatment arm 'v9' was never served"):
        run_ab_report(settings, flag="churn-model", treatment="v9", event_store_url=store)
    with pytest.raises(ReportRefused, match="holds no exposure of flag 'churn-model'"):
        report(settings, store, "churn-model", window_start="2030-01-01T00:00:00")
    after = sorted(settings.reports_dir.rglob("*")) if settings.reports_dir.exists() else []
    assert after == before  # no run folder, no index row


def test_bad_input_still_renders_and_holds_saying_what_is_missing(settings, store):
    # A wrong-typed parameter through the Python API (the command line refuses it earlier):
    # the notebook still renders and holds, naming the value (more cases, without a kernel, in
    # tests/unit/test_decision_inputs.py).
    result = report(settings, store, "churn-model", alpha="abc")
    decision = result.decision
    assert decision["recommendation"] == "hold"
    missing = " ".join(decision["missing"])
    assert "alpha='abc'" in missing
    assert decision["checks"][0]["name"] == "inputs" and not decision["checks"][0]["passed"]
    page = assert_rendered(result, "churn-model")
    assert "Missing:" in page
    assert_scraps_match(result)


def test_unreachable_store_is_named_without_its_password_and_writes_nothing(settings):
    from service.errors import StoreUnavailable

    before = sorted(settings.reports_dir.rglob("*")) if settings.reports_dir.exists() else []
    with pytest.raises(StoreUnavailable) as failure:
        report(settings, "postgresql+psycopg://nobody:s3cret@127.0.0.1:1/none", "churn-model")
    assert "127.0.0.1:1" in failure.value.message and "s3cret" not in failure.value.message
    after = sorted(settings.reports_dir.rglob("*")) if settings.reports_dir.exists() else []
    assert after == before


def test_a_notebook_that_fails_keeps_the_partial_notebook(settings, store):
    with pytest.raises(ReportFailed) as failure:
        # The imports cell alone takes longer than half a second on a fresh kernel.
        run_ab_report(
            settings,
            flag="churn-model",
            event_store_url=store,
            timeout=0.5,
            progress=lambda _m: None,
        )
    notebook_path = failure.value.notebook_path
    assert isinstance(notebook_path, Path) and notebook_path.is_file()
    assert str(notebook_path) in failure.value.message
    assert not (notebook_path.parent / "decision.json").exists()


def test_unsafe_flag_name_is_refused(settings, store):
    from service.errors import BadRequest

    with pytest.raises(BadRequest, match="flag name"):
        report(settings, store, "../escape")
