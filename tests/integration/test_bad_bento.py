"""The deliberately bad `churn:v3` (tests/integration/bad_bento.py) is bad the way it should be.

300 distinct requests (the first 5,000 users of the population, 16-17 per request) go to the
served bad bento. About 15% of them fail with a 500; on the users of the others, the offers v3
made retain clearly fewer users than the offers the served v2 makes to the same users. Retention
is the population's ground truth (`retention_rate`), not drawn outcomes, and both versions are
judged on exactly the same users, so the comparison has no sampling noise of its own.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import requests
from integration.bad_bento import INJECTED_ERROR_RATE

from service.registry import population

if TYPE_CHECKING:
    from bad_bento import BadBento

    from service.registry.bento_process import BentoProcess

pytestmark = pytest.mark.integration

USERS = population.population(5_000)
REQUESTS = 300
# v2's planted lead over a policy without offers is about 4 pp; half of it must show.
MIN_RETENTION_GAP = 0.02

Answer = tuple[list[population.User], requests.Response]


def post(http: requests.Session, url: str, users: list[population.User]) -> requests.Response:
    return http.post(f"{url}/predict", json={"inputs": [u.features() for u in users]}, timeout=30)


@pytest.fixture(scope="module")
def answers(bad_bento: BadBento) -> list[Answer]:
    """Each request's users and the bad bento's response."""
    batches = [[USERS[i] for i in part] for part in np.array_split(range(len(USERS)), REQUESTS)]
    with requests.Session() as http:
        return [(batch, post(http, bad_bento.url, batch)) for batch in batches]


def test_the_bad_bento_fails_its_share_of_calls_with_a_500(answers: list[Answer]) -> None:
    statuses = Counter(response.status_code for _, response in answers)
    assert set(statuses) <= {200, 500}, statuses
    share = statuses[500] / len(answers)
    print(f"churn:v3 failed {statuses[500]} of {len(answers)} calls ({share:.1%})")
    # Four binomial standard errors; the failing calls are a hash of the inputs, so fixed.
    tolerance = 4 * math.sqrt(INJECTED_ERROR_RATE * (1 - INJECTED_ERROR_RATE) / len(answers))
    assert share == pytest.approx(INJECTED_ERROR_RATE, abs=tolerance)


def test_its_offers_retain_fewer_users_than_v2s(
    answers: list[Answer], bento_servers: dict[str, BentoProcess]
) -> None:
    served = [(batch, r.json()) for batch, r in answers if r.status_code == 200]
    assert {body["bento"] for _, body in served} == {"churn:v3"}
    users = [user for batch, _ in served for user in batch]
    v3_offers = np.array([p["offer"] for _, body in served for p in body["predictions"]])
    frame = population.users_frame(users)
    retention = {"v3": population.retention_rate(frame, v3_offers)}
    with requests.Session() as http:
        for version in ("v1", "v2"):
            url = bento_servers[f"churn:{version}"].url
            offered = [p["offer"] for b in _chunks(users) for p in _predictions(http, url, b)]
            retention[version] = population.retention_rate(frame, np.array(offered))
    figures = ", ".join(f"{v} {value:.2%}" for v, value in retention.items())
    print(f"expected retention on the {len(users)} users v3 served: {figures}")
    print(f"churn:v3 offer rate: {v3_offers.mean():.2%}")
    assert retention["v3"] < retention["v2"] - MIN_RETENTION_GAP, retention
    # Offers only ever help here and v3 makes (next to) none: no better than v1 either.
    assert retention["v3"] <= retention["v1"], retention


def _chunks(users: list[population.User], size: int = 1_000) -> list[list[population.User]]:
    return [users[i : i + size] for i in range(0, len(users), size)]


def _predictions(
    http: requests.Session, url: str, users: list[population.User]
) -> list[dict[str, Any]]:
    response = post(http, url, users)
    response.raise_for_status()
    predictions: list[dict[str, Any]] = response.json()["predictions"]
    return predictions
