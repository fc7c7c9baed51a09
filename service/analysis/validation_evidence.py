"""Post-rollout validation's evidence: live performance per arm and slice, serving, drift, shadows.

The offline reference (the metrics and training sample the bento's model card is built from) is
rebuilt deterministically from the model's training seed, so live data is compared with what
the model saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from service.analysis.drift import DriftResult
from service.analysis.model_quality import (
    Performance,
    ShadowAgreement,
    feature_drift,
    performance,
    shadow_agreement,
)
from service.analysis.queries import Window
from service.analysis.validation_queries import (
    DEFAULT_MAX_ROWS,
    Serving,
    live_features,
    live_rows,
    serving_stats,
    shadow_rows,
)
from service.registry.bentos import stored_bento
from service.registry.population import (
    FEATURES,
    training_data,
)


@dataclass(frozen=True)
class ValidationPolicy:
    """Thresholds of the keep / investigate / rollback rule."""

    max_error_rate: float = 0.05  # above this: roll back
    auc_drop_vs_previous: float = 0.02  # significant AUC drop beyond this: roll back
    auc_drop_vs_offline: float = 0.05  # live AUC this far below the card's: investigate
    max_calibration_error: float = 0.05  # expected calibration error above this: investigate
    min_shadow_agreement: float = 0.9  # share of requests on the same side of 0.5
    min_labelled: int = 200  # fewer labelled requests: performance is not judged
    alpha: float = 0.05
    # The label (1 - retained) is drawn after the model's own retention offers changed who
    # churns, so live metrics cannot be held to the card's offline ones: the previous version,
    # scored in the same window on the same kind of labels, is the comparison that decides.
    labels_affected_by_treatment: bool = True
    calibration_margin: float = 0.02  # worse than the previous version by more: investigate
    # Scores at or above this got the product's action (the churn family's retention offer,
    # `serving.offer_threshold` in bentos/churn/versions.yaml), which changes their outcome:
    # calibration is judged on the requests scored below it (model_quality.performance).
    # None: on every request, for a model whose score triggers nothing.
    action_threshold: float | None = 0.5
    # PSI of a small sample is large by chance (about (bins - 1) / n): below this many live
    # values, drift is reported but triggers nothing.
    min_drift_sample: int = 1_000


@dataclass(frozen=True)
class ValidationEvidence:
    """Everything the validation rule looks at."""

    bento: str
    previous: str | None
    live: Performance | None
    previous_live: Performance | None
    offline: dict[str, Any]  # the model card's metrics: overall, by_segment, by_region
    by_group: dict[str, dict[str, Performance]]  # "segment"/"region" -> value -> performance
    serving: Serving
    drift: list[DriftResult]
    shadows: list[ShadowAgreement]
    missing: list[str] = field(default_factory=list)


# --- the reference: the model card and the training data --------------------------------------


@dataclass(frozen=True)
class OfflineReference:
    """What the validation compares a bento against: its offline metrics and training data."""

    bento: str
    offline: dict[str, Any]
    reference: pd.DataFrame  # training features plus the model's `score` on them
    problems: list[str]


def offline_reference(bento: str, settings: Any, max_rows: int = 20_000) -> OfflineReference:
    """Offline metrics from the BentoML model's metadata and the training reference, rebuilt
    deterministically from its training seed and rows (scores from the saved pipeline)."""
    try:
        stored = stored_bento(bento, settings)
    except Exception as exc:  # unknown or unbuilt bento: validate without a reference
        return OfflineReference(bento, {}, pd.DataFrame(), [f"model card of {bento}: {exc}"])
    meta = stored.model_metadata
    training = meta.get("training") or {}
    reference = training_data(
        min(int(training.get("rows", max_rows)), max_rows), int(training.get("seed", 0))
    )[list(FEATURES)]
    problems: list[str] = []
    try:
        reference = reference.assign(score=_scores(stored.model_path, reference))
    except Exception as exc:  # a missing or unreadable model: drift of inputs only
        problems.append(f"training scores of {bento} unavailable ({exc})")
    return OfflineReference(bento, dict(meta.get("metrics") or {}), reference, problems)


def _scores(model_path: Path | None, frame: pd.DataFrame) -> np.ndarray:
    import joblib  # what bentoml.sklearn writes saved_model.pkl with

    if model_path is None:
        raise FileNotFoundError("the bento's model is not in the store")
    pipeline = joblib.load(model_path / "saved_model.pkl")
    return np.asarray(pipeline.predict_proba(frame)[:, 1], float)


# --- gathering and deciding -------------------------------------------------------------------


def gather(
    engine: sa.Engine,
    *,
    flag: str,
    bento: str,
    previous: str | None,
    window: Window,
    card: OfflineReference,
    max_rows: int = DEFAULT_MAX_ROWS,
    action_threshold: float | None = ValidationPolicy.action_threshold,
) -> ValidationEvidence:
    """Read the store and compute every metric the validation rule needs (calibration on the
    requests scored below `action_threshold`, see ValidationPolicy)."""
    query: dict[str, Any] = {"flag": flag, "window": window, "max_rows": max_rows}
    rows = live_rows(engine, bento=bento, **query)
    labelled = rows[rows["label"].notna()]
    missing = list(card.problems)
    if rows.empty:
        missing.append(f"no successful predictions of {bento} for flag '{flag}' in the window")
    elif labelled.empty:
        missing.append(f"no outcomes (labels) joined to the predictions of {bento}")
    previous_labelled = pd.DataFrame()
    if previous:
        prev = live_rows(engine, bento=previous, **query)
        previous_labelled = prev[prev["label"].notna()]
        if previous_labelled.empty:
            missing.append(f"no labelled predictions of the previous version {previous}")
    live = live_features(rows)
    return ValidationEvidence(
        bento=bento,
        previous=previous,
        live=_performance_of(labelled, action_threshold),
        previous_live=_performance_of(previous_labelled, action_threshold),
        offline=card.offline,
        by_group={g: _by(labelled, g, action_threshold) for g in ("segment", "region")},
        serving=serving_stats(engine, bento=bento, **query),
        drift=feature_drift(card.reference, live) if len(live) and len(card.reference) else [],
        shadows=[
            shadow_agreement(tag, frame)
            for tag, frame in shadow_rows(engine, bento=bento, **query).items()
        ],
        missing=missing,
    )


def _performance_of(rows: pd.DataFrame, action_threshold: float | None) -> Performance | None:
    if rows.empty:
        return None
    scores, labels = rows["prediction"].to_numpy(float), rows["label"].to_numpy(int)
    return performance(scores, labels, calibrate_below=action_threshold)


def _by(rows: pd.DataFrame, group: str, action_threshold: float | None) -> dict[str, Performance]:
    found = {}
    for value, part in rows.groupby(group):
        result = _performance_of(part, action_threshold)
        if result is not None:
            found[str(value)] = result
    return found
