"""Unit tests run on a machine where tools/build.sh never ran (no helm, no kube-apiserver)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_chart_unit_tests_pass_without_the_cluster_binaries(tmp_path: Path) -> None:
    env = {**os.environ, "MODELPLANE_CACHE": str(tmp_path / "empty-cache")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/unit/test_chart.py",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert not (tmp_path / "empty-cache").exists(), "a unit test looked for the binaries"
