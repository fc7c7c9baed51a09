"""Content-addressed training snapshots: same data, same name; changed bytes are caught."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from service.registry import population
from service.registry import snapshots as data_snapshots
from service.registry.snapshots import SnapshotError


def test_a_snapshot_is_named_by_the_hash_of_its_bytes(tmp_path: Path) -> None:
    frame = population.training_data(500, 3)
    snapshot = data_snapshots.write_snapshot(frame, tmp_path, "2026-Q3", {"seed": 3})
    assert snapshot.path == tmp_path / "snapshots" / f"{snapshot.sha256}.csv"
    assert hashlib.sha256(snapshot.path.read_bytes()).hexdigest() == snapshot.sha256
    again = data_snapshots.write_snapshot(frame, tmp_path, "2026-Q3", {"seed": 3})
    assert again.sha256 == snapshot.sha256
    assert len(list((tmp_path / "snapshots").glob("*.csv"))) == 1


def test_reading_it_back_gives_the_same_data_fingerprint(tmp_path: Path) -> None:
    # The model trained from the file must be the model trained from the generator.
    frame = population.drifted_training_data(2_000, 5, 0.4)
    snapshot = data_snapshots.write_snapshot(frame, tmp_path)
    found = data_snapshots.find_snapshot(snapshot.sha256[:10], tmp_path)
    assert found.sha256 == snapshot.sha256 and found.rows == 2_000
    assert population.fingerprint(data_snapshots.read_snapshot(found)) == population.fingerprint(
        frame
    )


def test_a_changed_file_is_refused(tmp_path: Path) -> None:
    snapshot = data_snapshots.write_snapshot(population.training_data(100, 1), tmp_path)
    snapshot.path.write_text(snapshot.path.read_text().replace("eu", "us", 1))
    with pytest.raises(SnapshotError, match="not its name"):
        data_snapshots.read_snapshot(snapshot)


@pytest.mark.parametrize("name", ["deadbeef00", "xyz", "abc"])
def test_unknown_or_malformed_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(SnapshotError):
        data_snapshots.find_snapshot(name, tmp_path)


def test_manifests_list_every_snapshot(tmp_path: Path) -> None:
    first = data_snapshots.write_snapshot(population.training_data(100, 1), tmp_path, "2026-Q1")
    second = data_snapshots.write_snapshot(population.training_data(100, 2), tmp_path, "2026-Q2")
    listed = {s.sha256: s.period for s in data_snapshots.list_snapshots(tmp_path)}
    assert listed == {first.sha256: "2026-Q1", second.sha256: "2026-Q2"}
