"""`rollout simulate`: synthetic users through the selector over HTTP, then their outcomes.

Each user is routed and scored by whichever bento the flags pick; the outcome (retained or
not) is drawn from the population's known ground truth given whether that model made the
user an offer, so the planted difference between versions shows up in the data.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import urllib3

from service.errors import RolloutError
from service.registry import population as pop
from service.serving.keys import KeyFile
from service.store import PRIMARY_METRIC

METRIC = PRIMARY_METRIC
OUTCOME_BATCH = 500


@dataclass
class SimulationSummary:
    users: int
    seconds: float
    variants: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    errors: Counter[int] = field(default_factory=Counter)
    outcomes_posted: int = 0

    def describe(self) -> str:
        rate = self.users / self.seconds if self.seconds else 0.0
        lines = [
            f"{self.users} users in {self.seconds:.1f}s ({rate:.0f} req/s), "
            f"{self.outcomes_posted} outcomes posted"
        ]
        lines += [f"  variant {name}: {count}" for name, count in self.variants.most_common()]
        lines += [f"  reason {name}: {count}" for name, count in self.reasons.most_common()]
        lines += [f"  HTTP {status}: {count}" for status, count in self.errors.items()]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Served:
    request_id: str
    variant: str
    reason: str
    offered: bool


class _Client:
    """The simulator's HTTP client: one pool, JSON in and out."""

    def __init__(self, base_url: str, size: int, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.pool = urllib3.PoolManager(
            maxsize=size,
            retries=urllib3.Retry(3, backoff_factor=0.2),
            timeout=urllib3.Timeout(connect=2, read=10),
        )

    def check_ready(self) -> None:
        """Fail fast, with the URL, when no selector answers there."""
        try:
            status = self.pool.request("GET", f"{self.base_url}/readyz", retries=False).status
        except urllib3.exceptions.HTTPError as exc:
            raise RolloutError(f"no selector answers at {self.base_url} ({exc})") from exc
        if status != 200:
            raise RolloutError(f"the selector at {self.base_url} is not ready (/readyz {status})")

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        response = self.pool.request(
            "POST",
            self.base_url + path,
            body=json.dumps(body),
            headers=self.headers,
        )
        try:
            return response.status, json.loads(response.data)
        except ValueError:
            return response.status, None


def simulate(
    selector_url: str,
    flag: str,
    users: int,
    *,
    concurrency: int = 16,
    seed: int = 7,
    first_user: int = 0,
    progress: Callable[[str], None] = print,
    api_key: str | None = None,
) -> SimulationSummary:
    """Send `users` users through `flag`'s predict endpoint and post their outcomes.

    The users are the population's `first_user`-th onwards, so consecutive runs (one per
    rollout step, say) can send fresh users; each user's outcome is the same in any run.
    `api_key` (scopes outcomes and predict) is sent as `Authorization: Bearer`.
    """
    people = pop.population(first_user + users)[first_user:]
    p_churn = pop.churn_probabilities(pop.users_frame(people))
    client = _Client(selector_url, concurrency, api_key)
    client.check_ready()
    summary = SimulationSummary(users=users, seconds=0.0)
    started, lock = time.perf_counter(), threading.Lock()
    outcomes: list[dict[str, Any]] = []

    def one(index: int) -> None:
        served = _predict(client, flag, people[index])
        with lock:
            if isinstance(served, int):
                summary.errors[served] += 1
                return
            summary.variants[served.variant] += 1
            summary.reasons[served.reason] += 1
            outcomes.append(
                _outcome(people[index], served, p_churn[index], flag, seed, first_user + index)
            )
            done = sum(summary.variants.values())
            if done % max(users // 10, 1) == 0:
                progress(f"simulated {done}/{users} users")

    with ThreadPoolExecutor(concurrency) as executor:
        list(executor.map(one, range(users)))
    summary.outcomes_posted = _post_outcomes(client, outcomes)
    summary.seconds = time.perf_counter() - started
    return summary


@contextmanager
def temporary_key(keys_file: Path, purpose: str) -> Iterator[str]:
    """A key of scopes outcomes and predict in `keys_file`, revoked on the way out."""
    keys = KeyFile(keys_file)
    name = f"{purpose}-{os.getpid()}-{time.time_ns() % 10**9}"
    key = keys.create(name, ("outcomes", "predict"))
    try:
        yield key
    finally:
        keys.revoke(name)


def _predict(client: _Client, flag: str, user: pop.User) -> _Served | int:
    context = {
        "userId": user.user_id,
        "properties": {"region": user.region, "segment": user.segment},
    }
    status, body = client.post(
        f"/v1/models/{flag}/predict", {"context": context, "inputs": [user.features()]}
    )
    if status != 200 or not isinstance(body, dict):
        return status
    offered = bool(body["prediction"]["predictions"][0]["offer"])
    return _Served(body["request_id"], body["variant"], body["reason"], offered)


def _outcome(
    user: pop.User, served: _Served, p_churn: float, flag: str, seed: int, index: int
) -> dict[str, Any]:
    # One random stream per user, so outcomes do not depend on thread scheduling.
    rng = np.random.default_rng([seed, index])
    churn = float(pop.churn_given_offer(p_churn, served.offered))
    return {
        "metric": METRIC,
        "value": int(rng.random() >= churn),
        "flag": flag,
        "request_id": served.request_id,
        "user_id": user.user_id,
    }


def _post_outcomes(client: _Client, outcomes: list[dict[str, Any]]) -> int:
    posted = 0
    for start in range(0, len(outcomes), OUTCOME_BATCH):
        batch = outcomes[start : start + OUTCOME_BATCH]
        status, body = client.post("/v1/outcomes", {"outcomes": batch})
        if status != 202:
            raise RolloutError(f"posting outcomes failed with HTTP {status}: {body}")
        posted += len(batch)
    return posted
