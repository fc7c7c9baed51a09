"""Input contracts: each model family declares the JSON Schema of its `inputs`.

The schema lives beside the family's code (`bentos/<family>/input_schema.json`) and is generated
from the bento's own pydantic model (`python -m service.serving.contracts churn`), so selector and
the bento cannot disagree; a unit test fails when the checked-in file is stale. The selector
checks inputs before forwarding, so a bad record is a 422 naming the field, without a round trip
to a bento and without counting as that bento's failure.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import fastjsonschema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from service.errors import ConfigError, InputRejected

SCHEMA_FILE = "input_schema.json"
MAX_PROBLEMS = 10  # enough to fix a request; a 1,000-record batch of errors is noise


class InputContract:
    """One family's input schema, compiled once per process."""

    def __init__(self, family: str, schema: dict[str, Any]) -> None:
        Draft202012Validator.check_schema(schema)
        self.family, self.schema = family, schema
        # Compiled check on the request path (~3 us a record); the slower validator (~60 us)
        # runs only on refused inputs, because it lists every problem with its path.
        self._fast = fastjsonschema.compile(schema)
        self._validator = Draft202012Validator(schema)

    def check(self, inputs: Any) -> None:
        """Raise InputRejected naming each wrong field (`inputs[0].tenure_months: ...`)."""
        try:
            self._fast(inputs)
            return
        except fastjsonschema.JsonSchemaException:
            pass
        problems = [_describe(error) for error in self._validator.iter_errors(inputs)]
        if problems:
            shown = "; ".join(sorted(problems)[:MAX_PROBLEMS])
            more = len(problems) - MAX_PROBLEMS
            raise InputRejected(
                f"the inputs do not match the '{self.family}' input schema: {shown}"
                + (f" (and {more} more)" if more > 0 else "")
            )


def _describe(error: ValidationError) -> str:
    path = "inputs"
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return f"{path}: {error.message}"


def family_of(bento: str) -> str:
    return bento.partition(":")[0]


def load_contracts(bentos_dir: Path) -> dict[str, InputContract]:
    """Every family under bentos/ that declares an input schema, by family name."""
    contracts = {}
    for path in sorted(bentos_dir.glob(f"*/{SCHEMA_FILE}")):
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
        contracts[path.parent.name] = InputContract(path.parent.name, schema)
    return contracts


def generate(family_dir: Path) -> dict[str, Any]:
    """The JSON Schema of the family's `Inputs` type, read from its bento service module."""
    from bentoml._internal.configuration.containers import BentoMLContainer
    from pydantic import TypeAdapter

    # The module reads its bento argument at import; any version gives the same input type.
    BentoMLContainer.bento_arguments.set({"version": "schema"})
    try:
        name = f"_{family_dir.name}_bento_service_schema"
        spec = importlib.util.spec_from_file_location(name, family_dir / "service.py")
        if spec is None or spec.loader is None:
            raise ConfigError(f"{family_dir}/service.py cannot be imported")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    finally:
        BentoMLContainer.bento_arguments.reset()
    return dict(TypeAdapter(module.Inputs).json_schema())


def write(family_dirs: Iterable[Path]) -> None:
    for family_dir in family_dirs:
        text = json.dumps(generate(family_dir), indent=2) + "\n"
        (family_dir / SCHEMA_FILE).write_text(text, encoding="utf-8")


if __name__ == "__main__":  # python -m service.serving.contracts churn [...]
    from service.config import Settings

    write(Settings.load().bentos_dir / family for family in sys.argv[1:])
