"""The `rollout` command line: build models, check flags, serve, simulate, report, demo.

One module per command group; each registers its commands on `main`. Heavy modules
(bentoml, papermill, pandas) are imported inside the commands that need them, so
`rollout --help` and `rollout flags validate` start quickly.
"""

from service.cli import audit, decide, flags, keys, models, reports, rollback, serving
from service.cli.base import main

__all__ = [
    "audit",
    "decide",
    "flags",
    "keys",
    "main",
    "models",
    "reports",
    "rollback",
    "serving",
]
