"""`rollout serve`'s server choice and the worker-process pieces both servers share."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from granian.server import MPServer

from service.cli import main
from service.serving import granian_server, prefork
from service.serving.server import SERVERS, CannotListen, check_listen


def test_every_server_the_cli_offers_has_a_runner_and_the_default_is_one() -> None:
    assert set(SERVERS) == set(prefork.SERVER_NAMES)
    assert prefork.DEFAULT_SERVER in SERVERS


def test_the_granian_worker_wraps_granians_own_wsgi_worker() -> None:
    # `_worker` runs granian's WSGI worker, then closes the selector: pinned to granian 2.x.
    assert callable(MPServer._spawn_wsgi_worker)


def test_a_taken_port_is_refused_before_any_server_starts() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CannotListen, match=f"cannot listen on 127.0.0.1:{port}"):
            check_listen("127.0.0.1", port)


@pytest.mark.parametrize("server", ["granian", "gunicorn"])
def test_serve_on_a_taken_port_is_one_error_line(server: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = CliRunner().invoke(main, ["serve", "--port", port, "--server", server])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot listen on 127.0.0.1:{port}: Address already in use"]
    assert "Traceback" not in result.output


def test_an_unknown_server_is_refused_naming_the_choices(monkeypatch) -> None:
    monkeypatch.setenv("ROLLOUT_SERVER", "uwsgi")
    result = CliRunner().invoke(main, ["serve", "--port", "8"])
    assert result.exit_code == 2
    assert "'uwsgi' is not one of 'granian', 'gunicorn'" in result.output


def test_the_ready_line_is_said_by_the_first_worker_only() -> None:
    said: list[str] = []
    first = granian_server.FirstWorker(lambda: said.append("ready"))
    first()
    first()  # a second worker, or a respawned first one
    assert said == ["ready"]


def test_a_new_worker_forgets_the_gauges_of_workers_that_died(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(prefork.MULTIPROC_ENV, str(tmp_path))
    gone = _dead_pid()
    dead = tmp_path / f"gauge_livesum_{gone}.db"
    alive = tmp_path / f"gauge_livesum_{Path('/proc/self').resolve().name}.db"
    dead.write_bytes(b"")
    alive.write_bytes(b"")
    prefork.forget_dead_workers()
    assert not dead.exists()
    assert alive.exists()


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


# A process that caps its arenas, then has 8 threads allocate at once; glibc's malloc_stats()
# prints one "Arena N:" block per arena to stderr.
_ARENAS_PROBE = """
import ctypes, sys, threading
from service.serving import prefork
applied = prefork.limit_malloc_arenas(int(sys.argv[1])) if sys.argv[1] != "-" else None
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
start = threading.Barrier(8)
def churn():
    start.wait()
    for _ in range(20000):
        libc.free(libc.malloc(256))
threads = [threading.Thread(target=churn) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print(applied, flush=True)
libc.malloc_stats()
"""


def _arenas_with(cap: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    result = subprocess.run(
        [sys.executable, "-c", _ARENAS_PROBE, cap],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return result.stdout.strip(), result.stderr.count("Arena ")


def test_a_worker_caps_its_malloc_arenas():
    """Threads contending for malloc get arenas of their own unless capped (fragmentation)."""
    applied, arenas = _arenas_with("2")
    assert applied == "True" and arenas <= 2
    _, uncapped = _arenas_with("-")
    assert uncapped > 2  # the probe does make glibc create more arenas when not capped


def test_malloc_arena_max_from_the_environment_wins():
    applied, arenas = _arenas_with("2", {"MALLOC_ARENA_MAX": "1"})
    assert applied == "False" and arenas == 1
