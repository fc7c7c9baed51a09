"""The `rollout` command line: build models, check flags, serve, simulate, report, demo.

One module per command group; each registers its commands on `main`. Heavy modules
(bentoml, papermill, pandas) are imported inside the commands that need them, so
`rollout --help` and `rollout flags validate` start quickly.
"""

from service.cli import (
    audit,
    console,
    decide,
    deploy,
    events,
    flags,
    keys,
    models,
    reports,
    rollback,
    serving,
    unleash,
)
from service.cli.base import main

__all__ = [
    "audit",
    "console",
    "decide",
    "deploy",
    "events",
    "flags",
    "keys",
    "main",
    "models",
    "reports",
    "rollback",
    "serving",
    "unleash",
]
