"""The benchmarks' flags: the repo's context definitions and one flag, `bench` (everyone on
churn:v1), as local flag files."""

from __future__ import annotations

from pathlib import Path

from service.config import Settings

FLAG = """
flag: bench
default: churn:v1
variants: {control: churn:v1}
environments:
  development:
    enabled: true
    strategies:
      - name: everyone
        rollout: 100
        variants: {control: 100}
"""


def flag_folder(work: Path) -> Path:
    """The benchmark's flags: the repo's context definitions and one flag, `bench`."""
    flags_dir = work / "flags"
    flags_dir.mkdir()
    context = Settings.load().flags_dir / "context.yaml"
    (flags_dir / "context.yaml").write_text(context.read_text())
    (flags_dir / "bench.yaml").write_text(FLAG)
    return flags_dir
