"""Train one churn model version deterministically and save it as `churn-model:<version>`.

    python bentos/churn/train.py v1 [--label key=value ...] [--result-file summary.json]

The version's recipe comes from `versions.yaml`. Everything is seeded, so training the same
version twice gives the same model: the `model_hash` (sha256 of the predictions on a fixed probe
set) recorded in the model's labels proves it. Saving replaces an existing model of that tag and
deletes the bento built on it, which `rollout models build` then rebuilds.

sklearn is imported inside the functions that need it: `rollout models build` imports this
module to fingerprint the training data, and a no-op build should not pay for sklearn.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# Run as a script, this folder comes first on sys.path and its service.py (the bento) would
# shadow the project's `service` package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from service.registry import population  # noqa: E402
from service.registry.versions import VersionSpec, load_versions  # noqa: E402

VERSIONS_PATH = Path(__file__).with_name("versions.yaml")
PROBE_ROWS = 2_000
PROBE_SEED = 4_242
# Rounded before hashing so the hash names the model, not the last bits of float noise.
PROBE_DECIMALS = 10

PipelineBuilder = Callable[[dict[str, Any], list[str], list[str], int], Any]


@dataclass(frozen=True)
class TrainedVersion:
    """A trained version with its provenance and offline evaluation."""

    spec: VersionSpec
    pipeline: Any
    data_fingerprint: str
    model_hash: str
    metrics: dict[str, Any]
    expected_retention: float

    def summary(self) -> dict[str, Any]:
        """What `rollout models build` needs back (JSON-ready)."""
        return {
            "tag": self.spec.model_tag,
            "data_fingerprint": self.data_fingerprint,
            "model_hash": self.model_hash,
            "metrics": self.metrics["overall"],
            "expected_retention": self.expected_retention,
        }


def training_frame(spec: VersionSpec) -> pd.DataFrame:
    """The version's training data: historical users with the drawn `churned` label.

    A version from a later period trains on drifted users (`training.drift` in versions.yaml).
    """
    return population.drifted_training_data(spec.training_rows, spec.training_seed, spec.drift)


def data_fingerprint(spec: VersionSpec) -> str:
    """sha256 of the version's training data."""
    return population.fingerprint(training_frame(spec))


def _logistic_regression(
    params: dict[str, Any], numeric: list[str], categorical: list[str], seed: int
) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    return _pipeline(StandardScaler(), numeric, categorical, LogisticRegression(**params))


def _gradient_boosting(
    params: dict[str, Any], numeric: list[str], categorical: list[str], seed: int
) -> Any:
    from sklearn.ensemble import GradientBoostingClassifier

    # The classic trees predict one record in ~0.2 ms; the histogram variant pays ~2 ms of
    # OpenMP and validation overhead per call, which a request-at-a-time service would feel.
    model = GradientBoostingClassifier(**{**params, "random_state": seed})
    return _pipeline("passthrough", numeric, categorical, model)


def _hist_gradient_boosting(
    params: dict[str, Any], numeric: list[str], categorical: list[str], seed: int
) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    # Early stopping would carve its own validation split out of the training rows; a fixed
    # number of iterations keeps the recipe in versions.yaml the whole story.
    options = {"early_stopping": False, **params, "random_state": seed}
    return _pipeline("passthrough", numeric, categorical, HistGradientBoostingClassifier(**options))


def _pipeline(numeric_step: Any, numeric: list[str], categorical: list[str], model: Any) -> Any:
    """Select the version's features from the full input record, encode them, then `model`."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    columns = ColumnTransformer(
        [("numeric", numeric_step, numeric), ("categorical", encoder, categorical)],
        remainder="drop",
    )
    return Pipeline([("features", columns), ("model", model)])


MODEL_KINDS: dict[str, PipelineBuilder] = {
    "logistic_regression": _logistic_regression,
    "gradient_boosting": _gradient_boosting,
    "hist_gradient_boosting": _hist_gradient_boosting,
}


def build_pipeline(spec: VersionSpec) -> Any:
    """The untrained sklearn pipeline for the version's model kind and features."""
    unknown = sorted(set(spec.features) - set(population.FEATURES))
    if unknown:
        known = ", ".join(population.FEATURES)
        raise ValueError(f"{spec.bento_tag}: unknown features {unknown}; known: {known}")
    if spec.kind not in MODEL_KINDS:
        known = ", ".join(sorted(MODEL_KINDS))
        raise ValueError(f"{spec.bento_tag}: unknown model kind '{spec.kind}'; known: {known}")
    numeric = [f for f in spec.features if f in population.NUMERIC_FEATURES]
    categorical = [f for f in spec.features if f in population.CATEGORICAL_FEATURES]
    return MODEL_KINDS[spec.kind](dict(spec.params), numeric, categorical, spec.training_seed)


def split(spec: VersionSpec, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The version's training rows and its holdout (seeded, stratified on the label)."""
    from sklearn.model_selection import train_test_split

    fit_rows, holdout = train_test_split(
        frame,
        test_size=spec.holdout,
        random_state=spec.training_seed,
        stratify=frame[population.LABEL],
    )
    return fit_rows, holdout


def baseline_metrics(spec: VersionSpec, frame: pd.DataFrame, bento_tag: str) -> dict[str, Any]:
    """Another version of the family (a flag's default) evaluated on this version's holdout.

    Metrics recorded by each version on its own holdout do not compare once the data has
    drifted; this does: the same rows, scored by both models.
    """
    import bentoml

    model_tag = f"{spec.model_name}:{bento_tag.partition(':')[2]}"
    stored = bentoml.models.get(model_tag)
    pipeline = bentoml.sklearn.load_model(stored)
    threshold = float(stored.info.metadata["serving"]["offer_threshold"])
    metrics = evaluate(pipeline, split(spec, frame)[1], threshold)
    model_hash = stored.info.labels.get("model_hash", "")
    return {"bento": bento_tag, "model": model_tag, "model_hash": model_hash, "metrics": metrics}


def train(spec: VersionSpec, frame: pd.DataFrame | None = None) -> TrainedVersion:
    """Train `spec` on `frame` (default: its generated training data); evaluate on a holdout."""
    frame = training_frame(spec) if frame is None else frame
    fit_rows, holdout = split(spec, frame)
    pipeline = build_pipeline(spec)
    pipeline.fit(fit_rows[list(population.FEATURES)], fit_rows[population.LABEL])
    threshold = float(spec.serving.get("offer_threshold", population.OFFER_THRESHOLD))
    return TrainedVersion(
        spec=spec,
        pipeline=pipeline,
        data_fingerprint=population.fingerprint(frame),
        model_hash=model_hash(pipeline),
        metrics=evaluate(pipeline, holdout, threshold),
        expected_retention=population.expected_retention(
            lambda x: pipeline.predict_proba(x)[:, 1], population.population(), threshold
        ),
    )


def evaluate(pipeline: Any, holdout: pd.DataFrame, threshold: float) -> dict[str, Any]:
    """AUC, accuracy, log loss, Brier and offer rate overall and per segment and region."""
    scores = pipeline.predict_proba(holdout[list(population.FEATURES)])[:, 1]
    labels = holdout[population.LABEL].to_numpy()
    by = {
        group: {
            str(value): _scores(labels[mask], scores[mask], threshold)
            for value, mask in _masks(holdout[group])
        }
        for group in ("segment", "region")
    }
    return {"overall": _scores(labels, scores, threshold), **{f"by_{g}": m for g, m in by.items()}}


def _masks(column: pd.Series) -> list[tuple[Any, np.ndarray]]:
    return [(value, (column == value).to_numpy()) for value in sorted(column.unique())]


def _scores(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, roc_auc_score

    # AUC is undefined when a slice holds one class only; say so rather than fail the build.
    auc = roc_auc_score(labels, scores) if len(set(labels)) == 2 else None
    metrics = {
        "auc": auc,
        "accuracy": accuracy_score(labels, scores >= 0.5),
        "log_loss": log_loss(labels, scores, labels=[0, 1]),
        "brier": brier_score_loss(labels, scores),
        "offer_rate": float(np.mean(scores >= threshold)),
        "churn_rate": float(np.mean(labels)),
    }
    rounded = {k: None if v is None else round(float(v), 6) for k, v in metrics.items()}
    return {**rounded, "rows": len(labels)}


def probe_frame() -> pd.DataFrame:
    """The fixed inputs a model's hash is computed on (features only, no labels)."""
    return population.training_data(PROBE_ROWS, PROBE_SEED)[list(population.FEATURES)]


def scores_hash(scores: Any) -> str:
    """sha256 of churn scores rounded to PROBE_DECIMALS: same model, same hash."""
    rounded = np.round(np.asarray(scores, dtype=float), PROBE_DECIMALS)
    return hashlib.sha256(rounded.astype("<f8").tobytes()).hexdigest()


def model_hash(pipeline: Any) -> str:
    """The hash of the model's churn scores on the probe set: equal hashes, equal models."""
    return scores_hash(pipeline.predict_proba(probe_frame())[:, 1])


def save(
    trained: TrainedVersion,
    labels: dict[str, str] | None = None,
    baselines: list[dict[str, Any]] | None = None,
) -> str:
    """Save the model as `<model_name>:<version>`, replacing it and any bento built on it."""
    import bentoml
    from bentoml.exceptions import NotFound

    spec = trained.spec
    for store, tag in ((bentoml.bentos, spec.bento_tag), (bentoml.models, spec.model_tag)):
        with contextlib.suppress(NotFound):
            store.delete(tag)
    model = bentoml.sklearn.save_model(
        spec.model_tag,
        trained.pipeline,
        signatures={"predict_proba": {"batchable": False}},
        labels={**_labels(trained), **(labels or {})},
        metadata={**_metadata(trained), "baselines": baselines or []},
    )
    return str(model.tag)


def _labels(trained: TrainedVersion) -> dict[str, str]:
    spec = trained.spec
    return {
        "family": spec.family,
        "version": spec.version,
        "data_fingerprint": trained.data_fingerprint,
        "model_hash": trained.model_hash,
    }


def _metadata(trained: TrainedVersion) -> dict[str, Any]:
    spec = trained.spec
    return {
        **spec.to_dict(),
        "data_fingerprint": trained.data_fingerprint,
        "model_hash": trained.model_hash,
        "probe": {"rows": PROBE_ROWS, "seed": PROBE_SEED, "decimals": PROBE_DECIMALS},
        "metrics": trained.metrics,
        # Known only because the population is synthetic: the true retention of this
        # version's offer policy over the population, to check the A/B reports against.
        "ground_truth": {
            "expected_retention": round(trained.expected_retention, 6),
            "population_size": population.POPULATION_SIZE,
            "population_seed": population.POPULATION_SEED,
        },
    }


def spec_for(version: str) -> VersionSpec:
    """The declared spec of `version` in this family's `versions.yaml`."""
    specs = {spec.version: spec for spec in load_versions(VERSIONS_PATH)}
    if version not in specs:
        raise SystemExit(f"unknown version '{version}'; declared: {', '.join(specs)}")
    return specs[version]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version", help="a version declared in versions.yaml, e.g. v1")
    parser.add_argument("--label", action="append", default=[], help="extra model label k=v")
    parser.add_argument("--result-file", type=Path, help="write the JSON summary here")
    parser.add_argument("--snapshot", type=Path, help="train on this snapshot CSV (data_snapshots)")
    parser.add_argument(
        "--baseline", action="append", default=[], help="also evaluate this bento (a flag default)"
    )
    args = parser.parse_args(argv)
    spec = spec_for(args.version)
    frame = training_frame(spec) if args.snapshot is None else pd.read_csv(args.snapshot)
    trained = train(spec, frame)
    baselines = [baseline_metrics(spec, frame, tag) for tag in args.baseline]
    tag = save(trained, dict(item.split("=", 1) for item in args.label), baselines)
    summary = json.dumps({**trained.summary(), "tag": tag}, indent=2)
    if args.result_file:
        args.result_file.write_text(summary, encoding="utf-8")
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
