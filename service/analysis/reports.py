"""Run the analysis notebooks with papermill and file their output under `reports/`.

Each run gets its own folder, `reports/<flag>/<run-id>/`, holding the executed notebook
(`report.ipynb`), an HTML rendering without code (`report.html`) and the `decision.json` the
notebook wrote. `reports/index.html` lists every run found on disk, newest first. The notebooks
stay thin; this module only parameterizes, executes, renders and files them.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from service.analysis.page_text import CONTENT_POLICY
from service.analysis.parameters import AB_PARAMETERS, VALIDATION_PARAMETERS, with_defaults
from service.analysis.preflight import Served, check_ab_inputs, check_validation_inputs
from service.analysis.report_context import build_context, context_json
from service.analysis.report_index import update_index
from service.config import Settings
from service.errors import BadRequest, RolloutError, StoreUnavailable
from service.store.events import create_engine

KERNEL_NAME = "model-rollout"
AB_NOTEBOOK = "ab_test.ipynb"
DEFAULT_TIMEOUT = 600.0  # seconds per cell; a million exposures aggregate in well under that
KERNEL_START_TIMEOUT = 120.0  # a cold kernel on a busy 2-core machine can take a while
_SAFE_FLAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # Unleash flag names, and safe paths


class ReportFailed(RolloutError):
    """The notebook did not run to the end; `notebook_path` holds what it did execute."""

    code = "report_failed"

    def __init__(self, message: str, notebook_path: Path | None = None) -> None:
        super().__init__(message)
        self.notebook_path = notebook_path


@dataclass(frozen=True)
class ReportResult:
    """Where a finished report's files are, and the decision it reached."""

    output_dir: Path
    notebook_path: Path
    html_path: Path
    decision: dict[str, Any]


# Exit codes of `rollout report ...`, for automation (documented in the README).
EXIT_DECIDED = 0  # the report ran and decided (ramp, ship, hold, rollback, keep, ...)
EXIT_FAILED = 1  # the notebook failed or timed out; the partial notebook is kept
EXIT_USAGE = 2  # bad command line (click's own code)
EXIT_MISSING_DATA = 3  # the report ran but data or inputs were missing: decision is hold


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_window_option(
    window: str | None, options: dict[str, Any], now: datetime | None = None
) -> dict[str, str | None]:
    """`--window`: `START/END` (ISO, either side may be empty) or a trailing duration (`2h`).

    Returns the `window_start` / `window_end` to use (the explicit options when no window).
    """
    if not window:
        return {
            "window_start": options.get("window_start"),
            "window_end": options.get("window_end"),
        }
    text = window.strip()
    duration = _DURATION.match(text)
    if duration:
        seconds = float(duration.group(1)) * _UNIT_SECONDS[duration.group(2)]
        end = now or datetime.now(UTC)
        start = end - timedelta(seconds=seconds)
        return {"window_start": start.isoformat(), "window_end": None}
    if "/" in text:
        start_text, _, end_text = text.partition("/")
        return {"window_start": start_text or None, "window_end": end_text or None}
    raise BadRequest(f"--window {window!r}: expected START/END or a duration such as 2h or 7d")


def exit_code(decision: dict[str, Any]) -> int:
    """`EXIT_MISSING_DATA` when the decision is a hold for missing inputs, else `EXIT_DECIDED`."""
    missing = decision.get("missing") and decision.get("recommendation") == "hold"
    return EXIT_MISSING_DATA if missing else EXIT_DECIDED


VALIDATION_NOTEBOOK = "post_rollout_validation.ipynb"


def run_ab_report(
    settings: Settings,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Callable[[str], Any] = print,
    event_store_url: str | None = None,
    **values: Any,
) -> ReportResult:
    """Run `notebooks/ab_test.ipynb` for one flag and two of its variants.

    `values` are the parameters of `analysis.parameters.AB_PARAMETERS` (a TypeError names an
    unknown one); the rest take their declared defaults. Raises `ReportFailed` (pointing at the
    partial executed notebook) when the notebook fails, times out (`timeout` seconds per cell)
    or writes no decision.
    """
    parameters = with_defaults(values, AB_PARAMETERS)
    return run_report(
        settings,
        notebook=AB_NOTEBOOK,
        kind="ab",
        flag=parameters["flag"],
        parameters=parameters,
        timeout=timeout,
        progress=progress,
        event_store_url=event_store_url,
        check=check_ab_inputs,
    )


def run_validation_report(
    settings: Settings,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Callable[[str], Any] = print,
    event_store_url: str | None = None,
    **values: Any,
) -> ReportResult:
    """Run `notebooks/post_rollout_validation.ipynb` for one bento serving a flag.

    `values` are the parameters of `analysis.parameters.VALIDATION_PARAMETERS`.
    """
    parameters = with_defaults(values, VALIDATION_PARAMETERS)
    # The kernel is another process: it must read the caller's model store and snapshots.
    parameters["data_dir"] = str(settings.data_dir)
    return run_report(
        settings,
        notebook=VALIDATION_NOTEBOOK,
        kind="validation",
        flag=parameters["flag"],
        parameters=parameters,
        timeout=timeout,
        progress=progress,
        event_store_url=event_store_url,
        check=check_validation_inputs,
    )


def run_report(
    settings: Settings,
    *,
    notebook: str,
    kind: str,
    flag: str,
    parameters: dict[str, Any],
    timeout: float = DEFAULT_TIMEOUT,
    progress: Callable[[str], Any] = print,
    event_store_url: str | None = None,
    check: InputCheck | None = None,
) -> ReportResult:
    """Execute `notebook` (under settings.notebooks_dir) into a new run folder and file it.

    `check` (service.analysis.preflight) first refuses inputs the event store cannot answer,
    raising ReportRefused before anything is written. The notebook receives `parameters` plus
    `output_dir` and the report's `context` (links, the flag's words, the command), and must
    write `decision.json` there. The event store's URL (`event_store_url`, else the settings')
    reaches the kernel through its environment, named by the `event_store_env` parameter:
    never as a value in the notebook.
    """
    url = event_store_url or settings.event_store_url
    started = datetime.now(UTC)
    served = _checked(url, parameters, check) if check is not None else []
    output_dir = new_run_dir(settings.reports_dir, flag, kind)
    notebook_path = output_dir / "report.ipynb"
    if "context" in parameters:
        defaults = {p.name: p.default for p in _SPECS[kind] if p.option}
        context = build_context(
            settings,
            kind=kind,
            parameters=parameters,
            defaults=defaults,
            served=served,
            output_dir=output_dir,
            policy=with_policy,
        )
        parameters = {**parameters, "context": context_json(context)}
        # Beside decision.json for the flag's story page (its description, owner, hypothesis).
        (output_dir / "context.json").write_text(context_json(context), encoding="utf-8")
    progress(f"running {notebook} for flag '{flag}' (kernel {KERNEL_NAME}) into {output_dir}")
    with _environment(parameters["event_store_env"], url):
        _execute(
            settings.notebooks_dir / notebook,
            notebook_path,
            {**parameters, "output_dir": str(output_dir)},
            cwd=settings.root,
            timeout=timeout,
        )
    decision = _read_decision(output_dir, notebook_path)
    html_path = render_html(notebook_path)
    engine = create_engine(url)
    try:
        index = update_index(settings.reports_dir, engine)
    finally:
        engine.dispose()
    seconds = (datetime.now(UTC) - started).total_seconds()
    progress(
        f"{decision['recommendation']} (next step: {decision.get('next_step')}) in {seconds:.1f}s; "
        f"report {html_path}; index {index}"
    )
    return ReportResult(output_dir, notebook_path, html_path, decision)


InputCheck = Callable[[sa.Engine, dict[str, Any]], list[Served]]
_SPECS = {"ab": AB_PARAMETERS, "validation": VALIDATION_PARAMETERS}


def _checked(url: str, parameters: dict[str, Any], check: InputCheck) -> list[Served]:
    """`check` on the store at `url`; StoreUnavailable (its password hidden) if it does not
    answer, before any report folder exists."""
    try:
        engine = create_engine(url)
    except sa.exc.DBAPIError as exc:
        where = sa.engine.make_url(url).render_as_string(hide_password=True)
        raise StoreUnavailable(
            f"the event store {where} did not answer ({type(exc.orig).__name__}); "
            "no report was written"
        ) from exc
    try:
        return check(engine, parameters)
    finally:
        engine.dispose()


_ENVIRONMENT_LOCK = threading.Lock()


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """`name=value` in this process's environment (inherited by the kernel) while it runs."""
    with _ENVIRONMENT_LOCK:
        before = os.environ.get(name)
        os.environ[name] = value
        try:
            yield
        finally:
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before


def new_run_dir(reports_dir: Path, flag: str, kind: str, now: datetime | None = None) -> Path:
    """Create `reports_dir/<flag>/<run-id>/`, run-id like `20261125T130102Z-ab`."""
    if not _SAFE_FLAG.match(flag):
        raise BadRequest(f"flag name {flag!r} must be letters, digits, '.', '_' or '-'")
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    base = reports_dir / flag / f"{stamp}-{kind}"
    # Two runs for the same flag within one second get a suffix instead of sharing a folder.
    for attempt in range(1, 100):
        candidate = base if attempt == 1 else base.with_name(f"{base.name}-{attempt}")
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            continue
    raise ReportFailed(f"could not create a run folder under {base.parent}")


def _execute(
    source: Path, target: Path, parameters: dict[str, Any], *, cwd: Path, timeout: float
) -> None:
    # Imported here: papermill and nbclient take about a second to import, and only report
    # runs need them (not the selector or the CLI's other commands).
    import papermill
    from jupyter_client.kernelspec import NoSuchKernel

    try:
        with tempfile.TemporaryDirectory(prefix="rollout-kernel-") as sockets:
            papermill.execute_notebook(
                str(source),
                str(target),
                parameters=parameters,
                kernel_name=KERNEL_NAME,
                cwd=str(cwd),
                progress_bar=False,
                start_timeout=KERNEL_START_TIMEOUT,
                execution_timeout=timeout,
                kernel_manager_class=_ipc_kernel_manager(Path(sockets)),
            )
    except NoSuchKernel as exc:
        raise ReportFailed(
            f"the Jupyter kernel '{KERNEL_NAME}' is not installed; install it with "
            f"`python -m ipykernel install --sys-prefix --name {KERNEL_NAME}` "
            "(part of `make .venv/.installed`)"
        ) from exc
    except Exception as exc:  # cell errors, timeouts, a dead kernel: all end the same way
        raise ReportFailed(_failure_message(source, target, exc), _existing(target)) from exc


def _ipc_kernel_manager(folder: Path) -> type:
    """A kernel manager whose kernel talks over Unix sockets in `folder` (private to this
    user), not over plaintext TCP on localhost, which any local process could connect to
    (ipykernel warns about it on every start)."""
    from jupyter_client import AsyncKernelManager
    from traitlets import default

    class IpcKernelManager(AsyncKernelManager):
        @default("transport")
        def _transport_default(self) -> str:
            return "ipc"

        @default("ip")
        def _ip_default(self) -> str:
            return str(folder / "kernel")

    return IpcKernelManager


def _failure_message(source: Path, target: Path, exc: Exception) -> str:
    cause = getattr(exc, "ename", None) or type(exc).__name__
    lines = str(exc).strip().splitlines()
    detail = getattr(exc, "evalue", None) or (lines[-1] if lines else "no message")
    where = (
        f"the partial executed notebook is {target}"
        if target.exists()
        else f"no executed notebook was written (expected at {target})"
    )
    return f"report notebook {source.name} failed: {cause}: {detail}; {where}"


def _existing(path: Path) -> Path | None:
    return path if path.exists() else None


def _read_decision(output_dir: Path, notebook_path: Path) -> dict[str, Any]:
    path = output_dir / "decision.json"
    try:
        decision: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportFailed(
            f"the notebook ran but left no readable {path} ({exc}); see {notebook_path}",
            notebook_path,
        ) from exc
    return decision


def render_html(notebook_path: Path) -> Path:
    """Write `<notebook>.html` beside the notebook: outputs only, no code cells."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True
    )
    notebook = nbformat.read(notebook_path, as_version=4)
    body, _resources = exporter.from_notebook_node(_without_scraps(notebook))
    html_path = notebook_path.with_suffix(".html")
    html_path.write_text(with_policy(body), encoding="utf-8")
    return html_path


def with_policy(page: str) -> str:
    """`page` with CONTENT_POLICY first in its <head> (before anything it could govern)."""
    head = page.find("<head>")
    if head < 0:
        return CONTENT_POLICY + page
    at = head + len("<head>")
    return page[:at] + "\n" + CONTENT_POLICY + page[at:]


def _without_scraps(notebook: Any) -> Any:
    """Drop scrapbook's glue outputs: machine-readable copies of numbers shown elsewhere,
    which HTML cannot represent (nbconvert would warn once per scrap)."""
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [out for out in cell.get("outputs", []) if not _is_scrap(out)]
    return notebook


def _is_scrap(output: Any) -> bool:
    data = output.get("data", {})
    return bool(data) and all(mime.startswith("application/scrapbook.scrap.") for mime in data)
