"""Files written atomically: a reader sees the old content or the new, never half of either.

Flag files (an embedded selector reloads flags/ while `rollout` edits them), the flag snapshot,
data snapshots and key files all go through `write_atomically`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path: Path, content: str | bytes, mode: int | None = None) -> None:
    """Write `content` to a temporary file beside `path`, then rename it over `path`.

    `mode` (e.g. 0o600 for a file holding secrets) is set before the file gets its name.
    """
    data = content.encode("utf-8") if isinstance(content, str) else content
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
