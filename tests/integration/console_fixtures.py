"""What the console's browser tests share: Chromium, a project folder, the console process."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Page

from service.flags.audit import AuditStore
from service.processes import ManagedProcess, free_port, venv_executable
from service.rollout.decisions import PENDING
from service.serving.keys import KeyFile
from service.store.events import create_engine

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "docs" / "console"


def start_console(folder: Path, env: dict[str, str], selector_url: str) -> ManagedProcess:
    """`rollout console` on a free port, as a person would start it."""
    port = free_port()
    command = [venv_executable("rollout"), "console", "--port", str(port)]
    env = {
        "ROLLOUT_CONSOLE_SELECTOR_URL": selector_url,
        "ROLLOUT_CONSOLE_LIVE_SAMPLE_SECONDS": "2",
        **env,
    }
    process = ManagedProcess(
        "console", command, f"http://127.0.0.1:{port}/healthz", folder / "console.log", env
    )
    process.start().wait_ready(60)
    return process


def console_url(process: ManagedProcess) -> str:
    return process.ready_url.removesuffix("/healthz")


def operator_key(path: Path, name: str) -> str:
    return KeyFile(path).create(name, ("operate",))


def propose_promotion(
    database_url: str, server: str, flag: str, from_step: float, to_step: float
) -> None:
    """The row the guard writes in approval mode when a step's report says ramp."""
    proposal = {"action": "ramp", "from_step": from_step, "to_step": to_step, "changes": []}
    AuditStore(create_engine(database_url)).record(
        server,
        flag,
        source="guard",
        actor="rollout-guard",
        action=PENDING,
        what=f"ramp {flag}: {from_step:g}% -> {to_step:g}%",
        why="report reports/x/decision.json: treatment is significantly better",
        evidence={"proposal": proposal},
    )


def sign_in(page: Page, url: str, key: str, refused: bool = False) -> None:
    page.goto(f"{url}/login")
    page.locator("input[name=key]").fill(key)
    page.locator("form button[type=submit]").click()
    if refused:
        page.locator("#refused").wait_for()
    else:
        page.wait_for_url(lambda address: "/login" not in address)


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def current_step(page: Page, flag: str) -> str:
    return page.locator(f"#current-step-{re.escape(flag)}").inner_text().strip()
