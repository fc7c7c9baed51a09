"""The churn model family as a BentoML service: one bento per version (`churn:v1`, `churn:v2`).

The version is a bento argument. `bentoml build --arg version=v1 --version v1` packages the model
`churn-model:v1` and stores the argument in the bento, and `bentoml serve churn:v1` hands it back
here, so a bento always serves the model it was built with. (`rollout models build` does this.)

API (the selector depends on it exactly):
    POST /predict  {"inputs": [{feature fields}, ...]}
        -> {"predictions": [{"churn_probability": float, "offer": bool}, ...], "bento": "churn:v1"}
A record with a missing, extra, mistyped or out-of-bounds field gets a 400 naming it.

Self-contained on purpose: a bento carries only this folder, not the project's package.
"""

# No `from __future__ import annotations`: BentoML and pydantic read these annotations at
# import time, and real objects (not strings) work however the module is imported.
from typing import Annotated, Literal

import bentoml
import pandas as pd
import sklearn
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
        # The threshold belongs to the version (versions.yaml), recorded in the model's metadata.
        self.offer_threshold = float(self.model_ref.info.metadata["serving"]["offer_threshold"])
        self.bento = f"{FAMILY}:{ARGUMENTS.version}"

    @bentoml.api
    def predict(self, inputs: Inputs) -> PredictResponse:
        """Churn probability and the offer decision for each input record, in order."""
        frame = pd.DataFrame([record.model_dump() for record in inputs], columns=list(FEATURES))
        # The schema's bounds already rule out NaN and infinity; skip sklearn's re-check.
        with sklearn.config_context(assume_finite=True):
            scores = self.model.predict_proba(frame)[:, 1]
        predictions = [
            ChurnPrediction(churn_probability=float(p), offer=bool(p >= self.offer_threshold))
            for p in scores
        ]
        return PredictResponse(predictions=predictions, bento=self.bento)
