"""One flag document checked field by field into a FlagDefinition: every problem is noted with
the file, the flag and the field, and reading goes on, so one run names them all.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from service.errors import FlagProblem
from service.flags.model import (
    BENTO_TAG,
    CONTEXT_FILE,
    DEFAULT_RAMP_STEPS,
    ENVIRONMENTS,
    FLAG_NAME,
    GUARDRAIL_RANGES,
    MAX_BAKE_SECONDS,
    MAX_MIN_USERS,
    MULTI_VALUE_OPERATORS,
    RAMP_ENGINES,
    SINGLE_VALUE_OPERATORS,
    STICKINESS,
    Constraint,
    ContextField,
    Environment,
    FlagDefinition,
    Guardrails,
    RampSchedule,
    Segment,
    Strategy,
)
from service.store import PRIMARY_METRIC


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; a flag file must not."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}'", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(path: Path, problems: list[FlagProblem]) -> Any:
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
        problems.append(FlagProblem(str(path), "-", "yaml", str(exc).replace("\n", " ")))
        return None


def _is_number(value: Any) -> bool:
    """A finite int or float: YAML's `.nan` and `.inf` are floats no limit can be checked with."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class FlagReader:
    """Turns one YAML document into a FlagDefinition, noting every problem on the way."""

    FLAG_KEYS = {"flag", "description", "default", "variants", "environments", "shadows", "ramp"}
    RAMP_KEYS = {
        "environment",
        "strategy",
        "control",
        "treatment",
        "steps",
        "bake_seconds",
        "min_users",
        "approval",
        "metric",
        "guardrails",
        "engine",
        "owner",
        "hypothesis",
    }
    STRATEGY_KEYS = {"name", "rollout", "stickiness", "constraints", "variants", "segments"}
    CONSTRAINT_KEYS = {"field", "operator", "values", "inverted", "case_insensitive"}

    def __init__(
        self,
        context_fields: dict[str, ContextField],
        known_bentos: set[str] | None,
        problems: list[FlagProblem],
    ) -> None:
        self.context_fields = context_fields
        self.known_bentos = known_bentos
        self.problems = problems
        self.file = ""
        self.flag = "-"
        self.segments: dict[str, Segment] = {}

    def problem(self, where: str, message: str) -> None:
        self.problems.append(FlagProblem(self.file, self.flag, where, message))

    def read_file(self, path: Path) -> list[FlagDefinition]:
        self.file, self.flag = str(path), "-"
        doc = read_yaml(path, self.problems)
        if doc is None:
            return []
        if not isinstance(doc, dict):
            self.problem("-", "the file must hold one mapping describing one flag")
            return []
        before = len(self.problems)
        flag = self.read_flag(doc)
        return [flag] if flag and len(self.problems) == before else []

    def read_flag(self, doc: dict[str, Any]) -> FlagDefinition | None:
        name = doc.get("flag")
        if not isinstance(name, str) or not FLAG_NAME.match(name):
            self.problem("flag", "missing or invalid flag name (letters, digits, '-', '_', '.')")
            return None
        self.flag = name
        self.unknown_keys(doc, self.FLAG_KEYS, "")
        # No `default`: the family's stable version (the registry's fact) serves.
        default = self.bento(doc["default"], "default") if doc.get("default") else None
        # A flag may serve its default to everyone it is on for (e.g. one bento live, another
        # shadowing it); without a default, the variants are all it serves.
        variants = self.read_variants(doc.get("variants"), required=not doc.get("default"))
        environments = self.read_environments(doc.get("environments"), variants)
        ramp = self.read_ramp(doc["ramp"], variants, environments) if "ramp" in doc else None
        if default is None and doc.get("default"):
            return None
        return FlagDefinition(
            name=name,
            file=self.file,
            default_bento=default,
            variants=variants,
            environments=environments,
            description=str(doc.get("description", "")),
            shadows=self.read_shadows(doc.get("shadows", [])),
            ramp=ramp,
        )

    def read_ramp(
        self, raw: Any, variants: dict[str, str], environments: dict[str, Environment]
    ) -> RampSchedule | None:
        """The `ramp:` section; its strategy must exist and serve the treatment variant."""
        if not isinstance(raw, dict):
            self.problem("ramp", "must be a mapping (environment, strategy, control, treatment)")
            return None
        before = len(self.problems)
        self.unknown_keys(raw, self.RAMP_KEYS, "ramp.")
        env_name, strategy_name = raw.get("environment"), raw.get("strategy")
        env = environments.get(str(env_name))
        if env is None:
            self.problem("ramp.environment", f"'{env_name}' is not an environment of this flag")
        strategy = (
            next((s for s in env.strategies if s.name == strategy_name), None) if env else None
        )
        if env is not None and strategy is None:
            self.problem("ramp.strategy", f"no strategy '{strategy_name}' in {env_name}")
        treatment, control = raw.get("treatment"), raw.get("control", "default")
        if strategy is not None and treatment not in strategy.variants:
            self.problem(
                "ramp.treatment", f"'{treatment}' is not a variant of strategy '{strategy_name}'"
            )
        if control != "default" and control not in variants:
            self.problem("ramp.control", f"unknown variant '{control}' (or use 'default')")
        if control == treatment:
            self.problem("ramp.control", "control and treatment must differ")
        steps = self.read_steps(raw.get("steps", list(DEFAULT_RAMP_STEPS)))
        numbers = {
            key: self.positive(raw, key, default, limit)
            for key, default, limit in (
                ("bake_seconds", 600.0, MAX_BAKE_SECONDS),
                ("min_users", 200, MAX_MIN_USERS),
            )
        }
        if numbers["min_users"] != int(numbers["min_users"]):
            self.problem("ramp.min_users", f"must be a whole number, not {raw['min_users']!r}")
        approval = raw.get("approval", False)
        if not isinstance(approval, bool):
            self.problem("ramp.approval", f"must be true or false, not {approval!r}")
        guardrails = self.read_guardrails(raw.get("guardrails", {}))
        engine = raw.get("engine", "")
        if engine not in ("", *RAMP_ENGINES):
            self.problem("ramp.engine", f"must be one of {', '.join(RAMP_ENGINES)}, not {engine!r}")
        texts = {key: raw.get(key, "") for key in ("owner", "hypothesis")}
        for key, text in texts.items():
            if not isinstance(text, str):
                self.problem(f"ramp.{key}", f"must be text, not {text!r}")
        if len(self.problems) > before:
            return None
        return RampSchedule(
            environment=str(env_name),
            strategy=str(strategy_name),
            control=str(control),
            treatment=str(treatment),
            steps=steps,
            bake_seconds=float(numbers["bake_seconds"]),
            min_users=int(numbers["min_users"]),
            approval=approval,
            metric=str(raw.get("metric", PRIMARY_METRIC)),
            guardrails=guardrails,
            engine=str(engine),
            owner=str(texts["owner"]),
            hypothesis=str(texts["hypothesis"]),
        )

    def read_steps(self, raw: Any) -> tuple[float, ...]:
        ok = isinstance(raw, list) and raw and all(_is_number(s) and 0 < s <= 100 for s in raw)
        if not ok or sorted(set(raw)) != raw or raw[-1] != 100:
            self.problem("ramp.steps", f"must be increasing percentages ending at 100, not {raw!r}")
            return ()
        return tuple(float(s) for s in raw)

    def positive(self, raw: dict[str, Any], key: str, default: float, limit: float) -> float:
        value = raw.get(key, default)
        if not _is_number(value) or not 0 <= value <= limit:
            self.problem(f"ramp.{key}", f"must be a number from 0 to {limit:,.0f}, not {value!r}")
            return default
        return float(value)

    def read_guardrails(self, raw: Any) -> Guardrails:
        if not isinstance(raw, dict):
            self.problem("ramp.guardrails", "must be a mapping of guardrail -> limit")
            return Guardrails()
        known = {f.name for f in fields(Guardrails)}
        self.unknown_keys(raw, known, "ramp.guardrails.")
        values: dict[str, Any] = {}
        for key in sorted(known & set(raw)):
            value = raw[key]
            low, high, words, nullable = GUARDRAIL_RANGES.get(
                key, (0.0, math.inf, "a number >= 0", True)
            )
            if value is None and nullable:
                values[key] = value  # null: this guardrail is not checked
                continue
            whole = key == "min_requests" and _is_number(value) and value != int(value)
            if not _is_number(value) or not low <= value <= high or whole:
                off = " or null" if nullable else ""
                self.problem(f"ramp.guardrails.{key}", f"must be {words}{off}, not {value!r}")
            else:
                values[key] = int(value) if key == "min_requests" else value
        return Guardrails(**values)

    def read_shadows(self, raw: Any) -> tuple[str, ...]:
        """`shadows: [churn:v3]`: known bento tags, each at most once."""
        if not isinstance(raw, list):
            self.problem("shadows", "must be a list of bento tags")
            return ()
        tags = [self.bento(tag, f"shadows[{i}]") for i, tag in enumerate(raw)]
        if len({str(tag) for tag in raw}) < len(raw):
            self.problem("shadows", "a bento is listed more than once")
        return tuple(tag for tag in tags if tag)

    def unknown_keys(self, mapping: dict[str, Any], allowed: set[str], where: str) -> None:
        for key in sorted(set(mapping) - allowed):
            self.problem(f"{where}{key}", f"unknown field (allowed: {', '.join(sorted(allowed))})")

    def bento(self, tag: Any, where: str) -> str | None:
        if tag is None:
            self.problem(where, "missing: a bento tag of the form family:version")
            return None
        if not isinstance(tag, str) or not BENTO_TAG.match(tag):
            self.problem(where, f"'{tag}' is not a bento tag of the form family:version")
            return None
        if tag.endswith(":latest"):
            self.problem(where, f"'{tag}': name an explicit version, never 'latest'")
            return None
        if self.known_bentos is not None and tag not in self.known_bentos:
            known = ", ".join(sorted(self.known_bentos)) or "none"
            self.problem(where, f"unknown bento '{tag}' (declared bentos: {known})")
            return None
        return tag

    def read_variants(self, raw: Any, *, required: bool) -> dict[str, str]:
        if not required and (raw is None or raw == {}):
            return {}
        if not isinstance(raw, dict) or not raw:
            needs = " (a flag without a default needs at least one)" if required else ""
            self.problem("variants", f"must map each variant name to its bento tag{needs}")
            return {}
        variants = {}
        for name, tag in raw.items():
            if str(name) == "default":
                self.problem(f"variants.{name}", "'default' is reserved for the default bento")
            else:
                # Keep the name even when the tag is bad, so strategies that use this
                # variant are not reported again for the same mistake.
                self.bento(tag, f"variants.{name}")
                variants[str(name)] = str(tag)
        return variants

    def read_environments(self, raw: Any, variants: dict[str, str]) -> dict[str, Environment]:
        if not isinstance(raw, dict) or not raw:
            self.problem("environments", f"must define at least one of {', '.join(ENVIRONMENTS)}")
            return {}
        envs = {}
        for name, spec in raw.items():
            where = f"environments.{name}"
            if name not in ENVIRONMENTS:
                self.problem(where, f"unknown environment (use {', '.join(ENVIRONMENTS)})")
                continue
            if not isinstance(spec, dict):
                self.problem(where, "must be a mapping with 'enabled' and 'strategies'")
                continue
            self.unknown_keys(spec, {"enabled", "strategies"}, f"{where}.")
            envs[name] = Environment(
                name,
                self.boolean(spec.get("enabled", False), where),
                self.read_strategies(spec.get("strategies", []), where, variants),
            )
        return envs

    def boolean(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            self.problem(f"{where}.enabled", f"must be true or false, not {value!r}")
            return False
        return value

    def read_strategies(
        self, raw: Any, where: str, variants: dict[str, str]
    ) -> tuple[Strategy, ...]:
        if not isinstance(raw, list):
            self.problem(f"{where}.strategies", "must be a list")
            return ()
        strategies: list[Strategy] = []
        for index, spec in enumerate(raw):
            at = f"{where}.strategies[{index}]"
            if not isinstance(spec, dict):
                self.problem(at, "must be a mapping")
                continue
            strategy = self.read_strategy(spec, at, variants)
            if strategy.name in {s.name for s in strategies}:
                self.problem(f"{at}.name", f"duplicate strategy name '{strategy.name}'")
            strategies.append(strategy)
        return tuple(strategies)

    def read_strategy(self, spec: dict[str, Any], at: str, variants: dict[str, str]) -> Strategy:
        self.unknown_keys(spec, self.STRATEGY_KEYS, f"{at}.")
        name = spec.get("name")
        if not isinstance(name, str) or not name:
            self.problem(f"{at}.name", "every strategy needs a name")
            name = f"strategy-{at}"
        at = f"{at[: at.rindex('[')]}.{name}"
        rollout = spec.get("rollout", 100)
        if not isinstance(rollout, int) or isinstance(rollout, bool) or not 0 <= rollout <= 100:
            self.problem(f"{at}.rollout", f"must be a whole percentage 0-100, not {rollout!r}")
            rollout = 0
        stickiness = spec.get("stickiness", "userId")
        if stickiness not in STICKINESS and stickiness not in self.context_fields:
            self.problem(f"{at}.stickiness", f"unknown stickiness '{stickiness}'")
        constraints = tuple(self.read_constraints(spec.get("constraints", []), at))
        weights = self.read_weights(spec.get("variants", {}), at, variants)
        segments = self.read_segment_names(spec.get("segments", []), at)
        return Strategy(name, rollout, str(stickiness), constraints, weights, segments)

    def read_segment_names(self, raw: Any, at: str) -> tuple[str, ...]:
        if not isinstance(raw, list):
            self.problem(f"{at}.segments", "must be a list of segment names")
            return ()
        for name in raw:
            if name not in self.segments:
                known = ", ".join(sorted(self.segments)) or "none"
                self.problem(
                    f"{at}.segments",
                    f"unknown segment '{name}' (declared in {CONTEXT_FILE}: {known})",
                )
        return tuple(str(name) for name in raw)

    def read_constraints(self, raw: Any, at: str) -> Iterable[Constraint]:
        if not isinstance(raw, list):
            self.problem(f"{at}.constraints", "must be a list")
            return
        for index, spec in enumerate(raw):
            where = f"{at}.constraints[{index}]"
            if not isinstance(spec, dict):
                self.problem(where, "must be a mapping with field, operator, values")
                continue
            self.unknown_keys(spec, self.CONSTRAINT_KEYS, f"{where}.")
            constraint = self.read_constraint(spec, where)
            if constraint is not None:
                yield constraint

    def read_constraint(self, spec: dict[str, Any], where: str) -> Constraint | None:
        name, operator, values = spec.get("field"), spec.get("operator"), spec.get("values")
        context = self.context_fields.get(str(name))
        if context is None:
            known = ", ".join(sorted(self.context_fields))
            self.problem(
                f"{where}.field",
                f"unknown context field '{name}' (known: {known}; "
                f"declare new ones in {CONTEXT_FILE})",
            )
            return None
        if operator not in MULTI_VALUE_OPERATORS + SINGLE_VALUE_OPERATORS:
            self.problem(
                f"{where}.operator",
                f"unknown operator '{operator}' (Unleash has: "
                f"{', '.join(MULTI_VALUE_OPERATORS + SINGLE_VALUE_OPERATORS)})",
            )
            return None
        if not isinstance(values, list) or not values:
            self.problem(f"{where}.values", "must be a non-empty list")
            return None
        if operator in SINGLE_VALUE_OPERATORS and len(values) != 1:
            self.problem(f"{where}.values", f"{operator} compares against exactly one value")
            return None
        illegal = [
            str(v) for v in values if context.legal_values and str(v) not in context.legal_values
        ]
        if illegal and operator in ("IN", "NOT_IN"):
            self.problem(
                f"{where}.values",
                f"{', '.join(illegal)} not legal for '{name}' "
                f"(legal: {', '.join(context.legal_values)})",
            )
            return None
        return Constraint(
            str(name),
            operator,
            tuple(str(v) for v in values),
            bool(spec.get("inverted", False)),
            bool(spec.get("case_insensitive", False)),
        )

    def read_weights(self, raw: Any, at: str, variants: dict[str, str]) -> dict[str, float]:
        if raw in ({}, None):
            return {}
        if not isinstance(raw, dict):
            self.problem(f"{at}.variants", "must map variant names to percentages")
            return {}
        weights: dict[str, float] = {}
        for name, weight in raw.items():
            if name not in variants:
                self.problem(
                    f"{at}.variants.{name}",
                    f"unknown variant (the flag declares: {', '.join(variants)})",
                )
            elif not _is_number(weight) or not 0 <= weight <= 100:
                self.problem(
                    f"{at}.variants.{name}", f"weight must be a percentage 0-100, not {weight!r}"
                )
            elif round(weight * 10) != weight * 10:
                self.problem(f"{at}.variants.{name}", "weights have at most one decimal place")
            else:
                weights[str(name)] = float(weight)
        if weights and abs(sum(weights.values()) - 100) > 1e-9:
            self.problem(f"{at}.variants", f"weights add up to {sum(weights.values()):g}, not 100")
        return weights
