"""Building model versions into bentos (`rollout models build`) and retraining (`models train`).

Building runs BentoML in subprocesses with `BENTOML_HOME` set: the store location is fixed per
process once BentoML has used it, and the bento's own `service.py` must be imported by a clean
interpreter, where the module name `service` is not already this package.

Every version trains on a content-addressed snapshot (`registry.snapshots`) recorded in its
labels; every build writes the model card (`registry.cards`) and runs the quality gates
(`registry.gates`), and a version that fails them is removed. `retrain` declares and builds a
new version on newer data.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from service.config import Settings
from service.errors import RolloutError
from service.registry import cards, gates, population
from service.registry import snapshots as data_snapshots
from service.registry.bento_process import bentoml_env, bentoml_executable
from service.registry.bentos import _read_store_yaml, discard, stored_bento
from service.registry.lock import write_pinned_bentofile
from service.registry.versions import (
    GATES_FILE,
    VERSIONS_FILE,
    UnknownBento,
    VersionSpec,
    _check_tag_part,
    _sha256_json,
    declared_bentos,
    load_versions,
)

# Family files that describe or check a build without changing what it produces.
_NOT_RECIPE = {VERSIONS_FILE, GATES_FILE}
# Packages whose version changes what a build produces.
_BUILD_PACKAGES = ("bentoml", "scikit-learn", "numpy", "pandas")


class BuildError(RolloutError):
    """Training a version or building its bento failed; the message carries the output's tail."""

    code = "bento_build_failed"


@dataclass(frozen=True)
class BuiltBento:
    """The outcome of building one version (or finding it already built)."""

    tag: str
    model_tag: str
    data_fingerprint: str
    model_hash: str
    recipe: str
    skipped: bool
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)


Progress = Callable[[str], None]


# ---------------------------------------------------------------- building


def build_all(
    settings: Settings,
    progress: Progress = lambda _: None,
    force: bool = False,
    *,
    versions: Iterable[str] = (),
    snapshot: str | None = None,
    gate: bool = True,
) -> list[BuiltBento]:
    """Train, save, build and gate every declared version (or the tags/versions named).

    A version is unchanged when its bento exists and carries the same recipe (spec, training
    snapshot, family code, package versions) and the same model hash as its model; it is
    skipped. Gates run once every bento is built (the flag's default first, since the others
    are compared with it); a bento that fails them is removed and GateFailed is raised.
    """
    specs = select_versions(settings.bentos_dir, versions)
    for spec in specs:
        # A broken gates.yaml must stop the build before anything is trained or stored.
        gates.load_gates(spec.family_dir)
    built = [build_version(spec, settings, progress, force, snapshot=snapshot) for spec in specs]
    if gate:
        gates.gate_builds([b.tag for b in built], settings, progress)
    return built


def select_versions(bentos_dir: Path, names: Iterable[str] = ()) -> list[VersionSpec]:
    """The declared versions named by tag (`churn:v2`) or version (`v2`); all when none named.

    Raises UnknownBento naming the declared tags when a name matches none.
    """
    declared = declared_bentos(bentos_dir)
    wanted = list(names)
    if not wanted:
        return list(declared.values())
    chosen = [s for s in declared.values() if s.bento_tag in wanted or s.version in wanted]
    unknown = [n for n in wanted if not any(n in (s.bento_tag, s.version) for s in chosen)]
    if unknown:
        raise UnknownBento(
            f"unknown version {', '.join(unknown)}; declared: {', '.join(declared) or 'none'}"
        )
    return chosen


def build_version(
    spec: VersionSpec,
    settings: Settings,
    progress: Progress = lambda _: None,
    force: bool = False,
    *,
    snapshot: str | None = None,
) -> BuiltBento:
    """Build one version into the store at `settings.bentoml_home` (replacing a stale build).

    `snapshot` (a stored snapshot's sha256) trains on that data instead of the version's own.
    Raises BuildError if training or `bentoml build` fails, with the tail of their output;
    whatever was stored for the version by then is removed.
    """

    started = time.perf_counter()
    data = training_snapshot(spec, settings, snapshot)
    data_fingerprint = population.fingerprint(data_snapshots.read_snapshot(data))
    recipe = _recipe(spec, data_fingerprint, data.sha256)
    current = None if force else _current_build(settings.bentoml_home, spec, recipe)
    if current is not None:
        progress(f"{spec.bento_tag}: up to date (model hash {current['model_hash'][:12]})")
        cards.write_card(spec.bento_tag, settings)
        return _built(spec, current, recipe, skipped=True, started=started)
    progress(f"{spec.bento_tag}: training {spec.kind} on snapshot {data.sha256[:12]}")
    try:
        trained = _train(spec, settings, recipe, data)
        progress(f"{spec.bento_tag}: building bento (model hash {trained['model_hash'][:12]})")
        _bento_build(spec, settings, trained, recipe, data.sha256)
        cards.write_card(spec.bento_tag, settings)
    except BaseException:
        discard(spec, settings)
        raise
    progress(f"{spec.bento_tag}: built in {time.perf_counter() - started:.1f}s")
    return _built(spec, trained, recipe, skipped=False, started=started)


def training_snapshot(
    spec: VersionSpec, settings: Settings, snapshot: str | None = None
) -> data_snapshots.Snapshot:
    """The snapshot `spec` trains on: the one named, else its generated data, stored by hash.

    A version that pins `training.snapshot` gets it from the store, or regenerates it (the
    generator is seeded) and stops with BuildError when the bytes do not hash to the pin.
    """

    if snapshot:
        return data_snapshots.find_snapshot(snapshot, settings.data_dir)
    if spec.snapshot:
        with contextlib.suppress(data_snapshots.SnapshotError):
            return data_snapshots.find_snapshot(spec.snapshot, settings.data_dir)
    frame = training_module(spec.family_dir).training_frame(spec)
    source = {
        "generator": "population.drifted_training_data",
        "rows": spec.training_rows,
        "seed": spec.training_seed,
        "drift": spec.drift,
    }
    made = data_snapshots.write_snapshot(frame, settings.data_dir, spec.period, source)
    if spec.snapshot and not made.sha256.startswith(spec.snapshot):
        raise BuildError(
            f"{spec.bento_tag}: pinned snapshot {spec.snapshot[:12]} is not in "
            f"{data_snapshots.snapshots_dir(settings.data_dir)} and the generator settings "
            f"produce {made.sha256[:12]} instead"
        )
    return made


def _built(
    spec: VersionSpec, info: Mapping[str, Any], recipe: str, skipped: bool, started: float
) -> BuiltBento:
    return BuiltBento(
        tag=spec.bento_tag,
        model_tag=spec.model_tag,
        data_fingerprint=info["data_fingerprint"],
        model_hash=info["model_hash"],
        recipe=recipe,
        skipped=skipped,
        seconds=time.perf_counter() - started,
        metrics=dict(info.get("metrics", {})),
    )


def training_module(family_dir: Path) -> ModuleType:
    """The family's `train.py`, imported by path (bentos/ is not a package); cached per family."""
    path = family_dir / "train.py"
    name = f"_rollout_train_{family_dir.name}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise BuildError(f"{path}: cannot import the family's training module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    return module


def _recipe(spec: VersionSpec, data_fingerprint: str, snapshot: str) -> str:
    """What determines the build's output: same recipe, same bento (training is seeded).

    Gates are not part of it: changing a threshold re-gates a bento, it does not rebuild it.
    """
    code = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(spec.family_dir.iterdir())
        if p.is_file() and p.suffix in {".py", ".yaml", ".yml"} and p.name not in _NOT_RECIPE
    }
    packages = {name: importlib.metadata.version(name) for name in _BUILD_PACKAGES}
    described = spec.to_dict()
    described["training"]["snapshot"] = snapshot
    return _sha256_json(
        {"spec": described, "data": data_fingerprint, "code": code, "packages": packages}
    )


def _current_build(home: Path, spec: VersionSpec, recipe: str) -> dict[str, Any] | None:
    """The stored model's labels and metrics if bento and model are there and up to date.

    Reads the store's YAML files directly (`<home>/bentos/<name>/<version>/bento.yaml`) so a
    no-op build does not pay for importing BentoML; an unreadable store just means a rebuild.
    """
    bento = _read_store_yaml(home / "bentos" / spec.family / spec.version / "bento.yaml")
    model = _read_store_yaml(home / "models" / spec.model_name / spec.version / "model.yaml")
    if not bento or not model:
        return None
    bento_labels, model_labels = bento.get("labels") or {}, model.get("labels") or {}
    if bento_labels.get("recipe") != recipe or model_labels.get("recipe") != recipe:
        return None
    if not bento_labels.get("model_hash") or bento_labels.get("model_hash") != model_labels.get(
        "model_hash"
    ):
        return None
    metrics = (model.get("metadata") or {}).get("metrics", {}).get("overall", {})
    return {**model_labels, "metrics": metrics}


def _train(
    spec: VersionSpec, settings: Settings, recipe: str, data: data_snapshots.Snapshot
) -> dict[str, Any]:
    """Run the family's `train.py` for one version; returns its JSON summary."""
    with tempfile.TemporaryDirectory(prefix="rollout-train-") as tmp:
        result = Path(tmp) / "result.json"
        command = [
            sys.executable,
            str(spec.family_dir / "train.py"),
            spec.version,
            "--label",
            f"recipe={recipe}",
            "--label",
            f"snapshot={data.sha256}",
            "--snapshot",
            str(data.path),
            "--result-file",
            str(result),
            *[arg for tag in _baselines(spec, settings) for arg in ("--baseline", tag)],
        ]
        env = bentoml_env(settings.bentoml_home)
        # train.py imports this package: make it this checkout's, whatever is installed.
        paths = [str(settings.root), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        _run(command, env, cwd=spec.family_dir, what=f"training {spec.bento_tag}")
        summary: dict[str, Any] = json.loads(result.read_text(encoding="utf-8"))
    return summary


def _baselines(spec: VersionSpec, settings: Settings) -> list[str]:
    """The built defaults of the flags serving this family, other than the version itself.

    Training evaluates them on the new version's holdout, so the gate "no worse than the
    default" compares two models on the same rows, even when the new data has drifted.
    """
    defaults = set(gates.flag_defaults(spec.family, settings).values()) - {spec.bento_tag}
    return sorted(t for t in defaults if _is_built(t, settings))


def _is_built(tag: str, settings: Settings) -> bool:
    try:
        stored_bento(tag, settings)
    except UnknownBento:
        return False
    return True


def _bento_build(
    spec: VersionSpec, settings: Settings, trained: Mapping[str, Any], recipe: str, snapshot: str
) -> None:
    """`bentoml build` the family folder as `family:version`, packaging `model_name:version`.

    Built from a pinned copy of the family's bentofile: every package it names at the version
    installed here, where the model was trained, and the rest locked by BentoML.

    The version travels as a bento argument: BentoML stores it in the bento and hands it back to
    `service.py` at serve time, so the served model is the one packaged at build time.
    """
    labels = {
        "family": spec.family,
        "version": spec.version,
        "recipe": recipe,
        "data_fingerprint": trained["data_fingerprint"],
        "model_hash": trained["model_hash"],
        "snapshot": snapshot,
    }
    with tempfile.TemporaryDirectory(prefix="rollout-bentofile-") as tmp:
        # The packages the bento installs pinned to those it was trained with (registry.lock).
        bentofile = Path(tmp) / "bentofile.yaml"
        write_pinned_bentofile(spec.family_dir / "bentofile.yaml", bentofile)
        command = [
            str(bentoml_executable()),
            "build",
            str(spec.family_dir),
            "--bentofile",
            str(bentofile),
            "--version",
            spec.version,
            "--arg",
            f"version={spec.version}",
            *[arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")],
            "--output",
            "tag",
        ]
        env = bentoml_env(settings.bentoml_home)
        output = _run(command, env, cwd=spec.family_dir, what="bentoml build")
    if f"__tag__:{spec.bento_tag}" not in output:
        raise BuildError(f"bentoml build did not report {spec.bento_tag}:\n{_tail(output)}")


def _run(command: list[str], env: dict[str, str], cwd: Path, what: str) -> str:
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise BuildError(f"{what} failed (exit {done.returncode}):\n{_tail(output)}")
    return output


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# ---------------------------------------------------------------- retraining


@dataclass(frozen=True)
class Retraining:
    """`rollout models train`: a new version of `family` on a newer (possibly drifted) snapshot."""

    family: str
    version: str
    drift: float = 0.2
    seed: int | None = None
    period: str = ""
    base: str | None = None
    change: str | None = None


@dataclass(frozen=True)
class Retrained:
    built: BuiltBento
    base: str
    snapshot: str
    gates: list[str]

    def summary(self) -> str:
        """What the engineer reads before starting a canary."""
        lines = [
            f"{self.built.tag}: trained on snapshot {self.snapshot[:12]} (recipe of {self.base}),"
            f" model {self.built.model_hash[:12]}, gates passed; ready for a canary",
            *self.gates,
        ]
        return "\n".join(lines)


def retrain(plan: Retraining, settings: Settings, progress: Progress = lambda _: None) -> Retrained:
    """Declare, train, package and gate a new version; undo everything if any step fails.

    The new entry copies the base version's model recipe, draws newer users (`seed`, `drift`)
    and pins the resulting snapshot, so `rollout models build --version` reproduces it later.
    """

    versions_path = settings.bentos_dir / plan.family / VERSIONS_FILE
    if not versions_path.is_file():
        raise UnknownBento(f"no model family '{plan.family}' ({versions_path} not found)")
    base = _base_spec(load_versions(versions_path), plan)
    spec = _retrained_spec(base, plan)
    data = training_snapshot(spec, settings)
    original = versions_path.read_text(encoding="utf-8")
    try:
        _append_version(versions_path, original, spec, data.sha256)
        built = build_all(settings, progress, versions=[spec.version])[0]
    except BaseException:
        versions_path.write_text(original, encoding="utf-8")
        discard(spec, settings)
        raise
    report = gates.read_report(stored_bento(spec.bento_tag, settings))
    lines = [
        f"  {r.name}: {r.detail}"
        for r in (report.results if report else [])
        if r.name.startswith(("vs-default", "schema"))
    ]
    return Retrained(built, base.bento_tag, data.sha256, lines)


def _base_spec(specs: list[VersionSpec], plan: Retraining) -> VersionSpec:
    if any(s.version == plan.version for s in specs):
        raise BuildError(
            f"{plan.family}:{plan.version} is already declared; "
            f"`rollout models build --version {plan.version}` rebuilds it"
        )
    if plan.base is None:
        return specs[-1]
    for spec in specs:
        if plan.base in (spec.version, spec.bento_tag):
            return spec
    raise UnknownBento(f"unknown base version '{plan.base}' in family {plan.family}")


def _retrained_spec(base: VersionSpec, plan: Retraining) -> VersionSpec:

    _check_tag_part(base.family_dir / VERSIONS_FILE, "version", plan.version)
    seed = plan.seed if plan.seed is not None else base.training_seed + 1
    change = plan.change or (
        f"{base.version}'s recipe retrained on newer users (seed {seed}, drift {plan.drift:g}"
        + (f", period {plan.period}" if plan.period else "")
        + ")."
    )
    return replace(
        base,
        version=plan.version,
        training_seed=seed,
        drift=plan.drift,
        period=plan.period,
        change=change,
        snapshot=None,
    )


def _append_version(path: Path, original: str, spec: VersionSpec, snapshot: str) -> None:
    """Append the entry as text (comments and layout of the file stay), then re-read it."""
    training = {"seed": spec.training_seed, "drift": spec.drift, "snapshot": snapshot}
    if spec.period:
        training["period"] = spec.period
    entry = {
        "version": spec.version,
        "change": spec.change,
        "model": {"kind": spec.kind, "params": spec.params},
        "features": list(spec.features),
        "training": training,
    }
    block = yaml.safe_dump([entry], sort_keys=False, default_flow_style=None, width=96)
    indented = "".join(f"  {line}" if line.strip() else line for line in block.splitlines(True))
    text = original.rstrip("\n") + "\n\n" + indented
    path.write_text(text, encoding="utf-8")
    declared = [s.version for s in load_versions(path)]
    if declared[-1:] != [spec.version]:
        raise BuildError(f"{path}: `versions:` must be the file's last key to append a version")
