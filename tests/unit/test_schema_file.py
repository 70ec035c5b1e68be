"""schema.graphql is the served schema, and `schema check` says so when it is not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "gateway.cli", "schema"]


def test_the_checked_in_schema_is_the_served_schema() -> None:
    result = subprocess.run([*CLI, "check"], cwd=ROOT, capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stdout


def test_check_fails_with_a_diff_when_the_file_differs(tmp_path: Path) -> None:
    stale = tmp_path / "schema.graphql"
    stale.write_text((ROOT / "schema.graphql").read_text().replace("totalCount", "count"))

    result = subprocess.run(
        [*CLI, "check", "--path", str(stale)], capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 1
    assert "+  totalCount: Int!" in result.stdout


def test_export_writes_what_check_accepts(tmp_path: Path) -> None:
    target = tmp_path / "exported.graphql"

    exported = subprocess.run([*CLI, "export", "--path", str(target)], timeout=60)
    checked = subprocess.run([*CLI, "check", "--path", str(target)], timeout=60)

    assert (exported.returncode, checked.returncode) == (0, 0)
    assert target.read_text() == (ROOT / "schema.graphql").read_text()
