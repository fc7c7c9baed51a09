"""The churn model family as a BentoML service: one bento per version (`churn:v1`, `churn:v2`).

The version is a bento argument. `bentoml build --arg version=v1 --version v1` packages the model
`churn-model:v1` and stores the argument in the bento, and `bentoml serve churn:v1` hands it back
here, so a bento always serves the model it was built with. (`rollout models build` does this.)

API (the selector depends on it exactly):
    POST /predict  {"inputs": [{feature fields}, ...]}
        -> {"predictions": [{"churn_probability": float, "offer": bool}, ...], "bento": "churn:v1"}
A record with a missing, extra, mistyped or out-of-bounds field gets a 400 naming it.

Serving knobs come from the version's `serving:` section in versions.yaml (defaults merged in),
recorded in the model's metadata:
    offer_threshold     a user scored at or above it gets the offer
    inject_error_rate   fault injection for game days and guardrail tests, in [0, 1), default 0:
                        that share of predict calls fails with a 500. Which calls is decided by
                        a hash of the request's records, so the same inputs always fail or
                        always succeed. A value outside [0, 1) stops the service at startup.

Self-contained on purpose: a bento carries only this folder, not the project's package.
"""

# No `from __future__ import annotations`: BentoML and pydantic read these annotations at
# import time, and real objects (not strings) work however the module is imported.
import hashlib
import json
from typing import Annotated, Any, Literal

import bentoml
import pandas as pd
import sklearn
from bentoml.exceptions import InternalServerError
from pydantic import BaseModel, ConfigDict, Field

FAMILY = "churn"
MODEL_NAME = "churn-model"
MAX_BATCH = 1_000


class BuildArguments(BaseModel):
    """Bento arguments: `--arg version=v1` at build (stored in the bento) or dev serve."""

    version: str = Field(pattern=r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")


ARGUMENTS = bentoml.use_arguments(BuildArguments)


class ChurnFeatures(BaseModel):
    """One user's input record. Every version takes all fields; each model uses its own subset.

    Bounds are sanity limits on the values a real account can have, not the training range.
    """

    model_config = ConfigDict(extra="forbid")

    tenure_months: int = Field(ge=0, le=600, description="Months since signup")
    monthly_spend: float = Field(ge=0, le=1_000_000, description="Average monthly spend, USD")
    support_tickets: int = Field(ge=0, le=1_000, description="Support tickets, last 90 days")
    days_since_last_login: int = Field(ge=0, le=3_650, description="Days since last login")
    sessions_per_week: float = Field(ge=0, le=1_000, description="Sessions per week, 4-week mean")
    region: Literal["eu", "us", "apac"]
    segment: Literal["consumer", "smb", "enterprise"]


FEATURES: tuple[str, ...] = tuple(ChurnFeatures.model_fields)


class ChurnPrediction(BaseModel):
    churn_probability: float
    offer: bool


class PredictResponse(BaseModel):
    predictions: list[ChurnPrediction]
    bento: str


Inputs = Annotated[list[ChurnFeatures], Field(min_length=1, max_length=MAX_BATCH)]


@bentoml.service(name=FAMILY, workers=1, traffic={"timeout": 10})
class Churn:
    """Scores churn risk; a user scored at or above the version's offer threshold gets the offer."""

    model_ref = bentoml.models.BentoModel(f"{MODEL_NAME}:{ARGUMENTS.version}")

    def __init__(self) -> None:
        self.model = bentoml.sklearn.load_model(self.model_ref)
        # The knobs belong to the version (versions.yaml), recorded in the model's metadata.
        serving = self.model_ref.info.metadata["serving"]
        self.offer_threshold = float(serving["offer_threshold"])
        self.bento = f"{FAMILY}:{ARGUMENTS.version}"
        self.inject_error_rate = error_rate(serving.get("inject_error_rate", 0), self.bento)

    @bentoml.api
    def predict(self, inputs: Inputs) -> PredictResponse:
        """Churn probability and the offer decision for each input record, in order."""
        records = [record.model_dump() for record in inputs]
        if self.inject_error_rate and fault_draw(records) < self.inject_error_rate:
            raise InternalServerError(
                f"{self.bento}: injected fault (serving.inject_error_rate={self.inject_error_rate})"
            )
        frame = pd.DataFrame(records, columns=list(FEATURES))
        # The schema's bounds already rule out NaN and infinity; skip sklearn's re-check.
        with sklearn.config_context(assume_finite=True):
            scores = self.model.predict_proba(frame)[:, 1]
        predictions = [
            ChurnPrediction(churn_probability=float(p), offer=bool(p >= self.offer_threshold))
            for p in scores
        ]
        return PredictResponse(predictions=predictions, bento=self.bento)


def error_rate(value: Any, bento: str) -> float:
    """`serving.inject_error_rate` checked at startup: a number in [0, 1), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(
            f"{bento}: serving.inject_error_rate must be a number in [0, 1), got {value!r}"
        )
    return float(value)


def fault_draw(records: list[dict[str, Any]]) -> float:
    """A number in [0, 1) fixed by the records' content: a call fails when it is below the rate."""
    canonical = json.dumps(records, sort_keys=True, separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(canonical.encode()).digest()[:8], "big") / 2**64
