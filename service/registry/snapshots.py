"""Content-addressed training-data snapshots: `<data_dir>/snapshots/<sha256>.csv`.

A snapshot's name is the sha256 of its bytes, so a name can only ever mean one dataset: a bento
that records the name records exactly what it was trained on, and training again from that file
reproduces the model (training is seeded). CSV with a fixed float format round-trips the
generator's frames exactly (same `population.fingerprint`), and any tool can read it.
A manifest `<sha256>.json` beside it says where the data came from (rows, period, generator).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from service.errors import RolloutError
from service.files import write_atomically

FLOAT_FORMAT = "%.10g"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class SnapshotError(RolloutError):
    """A snapshot is missing, malformed, or its bytes no longer match its name."""

    code = "snapshot_error"


@dataclass(frozen=True)
class Snapshot:
    """One stored training-data snapshot and its provenance."""

    sha256: str
    path: Path
    rows: int
    columns: tuple[str, ...]
    period: str
    source: dict[str, Any]

    def manifest(self) -> dict[str, Any]:
        """The JSON-ready description stored beside the data (the path is left out)."""
        doc = asdict(self)
        del doc["path"]
        doc["columns"] = list(self.columns)
        return doc


def snapshots_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "snapshots"


def write_snapshot(
    frame: pd.DataFrame, data_dir: Path, period: str = "", source: dict[str, Any] | None = None
) -> Snapshot:
    """Store `frame` under its content hash (a no-op when that snapshot already exists)."""
    body = frame.to_csv(index=False, float_format=FLOAT_FORMAT).encode()
    sha = hashlib.sha256(body).hexdigest()
    folder = snapshots_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    snapshot = Snapshot(
        sha, folder / f"{sha}.csv", len(frame), tuple(frame.columns), period, dict(source or {})
    )
    if not snapshot.path.exists():
        write_atomically(snapshot.path, body)
    manifest = json.dumps(snapshot.manifest(), indent=2, sort_keys=True).encode()
    write_atomically(folder / f"{sha}.json", manifest)
    return snapshot


def find_snapshot(sha: str, data_dir: Path) -> Snapshot:
    """The stored snapshot named `sha` (a unique prefix of 8+ characters is enough)."""
    folder = snapshots_dir(data_dir)
    if not re.match(r"^[0-9a-f]{8,64}$", sha):
        raise SnapshotError(f"'{sha}' is not a snapshot name (8 to 64 lowercase hex digits)")
    matches = sorted(folder.glob(f"{sha}*.csv")) if folder.is_dir() else []
    if len(matches) != 1:
        found = "no snapshot" if not matches else f"{len(matches)} snapshots"
        raise SnapshotError(f"{found} named {sha}* in {folder}")
    full = matches[0].stem
    manifest = _read_manifest(folder / f"{full}.json")
    return Snapshot(
        full,
        matches[0],
        int(manifest.get("rows", 0)),
        tuple(manifest.get("columns", ())),
        str(manifest.get("period", "")),
        dict(manifest.get("source", {})),
    )


def read_snapshot(snapshot: Snapshot) -> pd.DataFrame:
    """The snapshot's rows, after checking its bytes still hash to its name."""
    body = snapshot.path.read_bytes()
    actual = hashlib.sha256(body).hexdigest()
    if actual != snapshot.sha256 or not _SHA256.match(actual):
        raise SnapshotError(f"{snapshot.path}: content hashes to {actual[:12]}, not its name")
    return pd.read_csv(snapshot.path)


def list_snapshots(data_dir: Path) -> list[Snapshot]:
    """Every stored snapshot, oldest file first."""
    folder = snapshots_dir(data_dir)
    paths = sorted(folder.glob("*.csv"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    return [find_snapshot(p.stem, data_dir) for p in paths if _SHA256.match(p.stem)]


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}
