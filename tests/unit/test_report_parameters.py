"""The reports' parameters are declared once (service.analysis.parameters); all else agrees.

Papermill learns a notebook's parameters from its `parameters` cell, so that cell must list the
declared names with the declared defaults; the CLI's options are generated from the same table.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from service.analysis.parameters import (
    AB_PARAMETERS,
    VALIDATION_PARAMETERS,
    Parameter,
    coerce_parameters,
    with_defaults,
)
from service.cli import main
from service.config import Settings

NOTEBOOKS = Settings.load().notebooks_dir
CASES = [
    ("ab_test.ipynb", AB_PARAMETERS, "ab"),
    ("post_rollout_validation.ipynb", VALIDATION_PARAMETERS, "validation"),
]


def _parameters_cell(notebook: Path) -> dict[str, object]:
    cells = json.loads(notebook.read_text())["cells"]
    cell = next(c for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))
    tree = ast.parse("".join(cell["source"]))
    return {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }


@pytest.mark.parametrize(("notebook", "spec", "_command"), CASES, ids=[c[0] for c in CASES])
def test_notebook_declares_exactly_the_declared_parameters(notebook, spec, _command) -> None:
    cell = _parameters_cell(NOTEBOOKS / notebook)
    assert cell.pop("output_dir") == "."  # set by the runner, not a report parameter
    assert set(cell) == {p.name for p in spec}
    # A required parameter's cell value is an example for running the notebook by hand.
    assert {k: v for k, v in cell.items() if k in _optional(spec)} == _optional(spec)


def _optional(spec: tuple[Parameter, ...]) -> dict[str, object]:
    return {p.name: p.default for p in spec if not p.required}


@pytest.mark.parametrize(("_notebook", "spec", "command"), CASES, ids=[c[2] for c in CASES])
def test_cli_options_are_the_declared_ones(_notebook, spec, command) -> None:
    click_command = main.commands["report"].commands[command]
    options = {p.name for p in click_command.params}
    assert options == {p.name for p in spec if p.option} | {"window", "timeout", "event_store_url"}


def test_an_unknown_parameter_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match="ramp_stpes"):
        with_defaults({"flag": "f", "ramp_stpes": "5,50"}, AB_PARAMETERS)


def test_every_declared_parameter_gets_its_default() -> None:
    values = with_defaults({"flag": "churn-model"}, AB_PARAMETERS)
    assert values["flag"] == "churn-model"
    assert values["ramp_steps"] == "5,25,50,100"
    assert set(values) == {p.name for p in AB_PARAMETERS}


def test_a_value_of_the_wrong_type_falls_back_to_the_default_and_is_named() -> None:
    values, problems = coerce_parameters({"flag": "f", "alpha": "abc"}, AB_PARAMETERS)
    assert values["alpha"] == 0.05
    assert problems == ["parameter alpha='abc' is not a valid float; used 0.05 instead"]


@pytest.mark.parametrize("command", ["ab", "validation"])
def test_a_required_parameter_left_out_is_a_usage_error(command) -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(main, ["report", command])
    assert result.exit_code == 2
    assert "Missing option '--flag'" in result.output
