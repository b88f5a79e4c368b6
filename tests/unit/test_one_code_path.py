"""One code path: the product knows nothing of the test bed that emulates the world beneath it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRODUCT = REPO / "operator" / "modelplane"

#: What only a simulation would put in the product: test-bed imports, KWOK hand-offs, the old
#: simulated fleet and provider, start-up hints for KWOK.
FORBIDDEN = [
    r"modelplane_testbed",
    r"kwok",
    r"simulated-startup",
    r"fleet:",
    r"\bsimulat",
]


def test_no_simulation_in_the_product() -> None:
    hits = []
    for path in sorted(PRODUCT.rglob("*")):
        if path.suffix not in {".py", ".yaml", ".json", ".txt"}:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for pat in FORBIDDEN:
                if re.search(pat, line, re.IGNORECASE):
                    hits.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not hits, "\n".join(hits)


def _contract_config(tmp: Path) -> Path:
    """The project's own import-linter contracts, as an INI file lint-imports can read."""
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    lines = ["[importlinter]", "root_packages =", *(f"    {p}" for p in cfg["root_packages"])]
    lines.append(f"include_external_packages = {cfg.get('include_external_packages', False)}")
    for i, c in enumerate(cfg["contracts"]):
        lines.append(f"\n[importlinter:contract:{i}]")
        for k, v in c.items():
            if isinstance(v, list):
                lines.append(f"{k} =")
                lines += [f"    {x}" for x in v]
            else:
                lines.append(f"{k} = {v}")
    out = tmp / "importlinter.ini"
    out.write_text("\n".join(lines) + "\n")
    return out


def _lint(tmp: Path, operator_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(operator_dir), str(REPO / "testbed")]),
    }
    exe = Path(sys.executable).parent / "lint-imports"
    return subprocess.run(
        [str(exe), "--config", str(_contract_config(tmp)), "--no-cache"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp,
        check=False,
    )


@pytest.mark.timeout(300)
def test_the_contract_fails_when_the_product_imports_the_test_bed(tmp_path: Path) -> None:
    copy = tmp_path / "operator"
    shutil.copytree(PRODUCT, copy / "modelplane", ignore=shutil.ignore_patterns("__pycache__"))
    clean = _lint(tmp_path, copy)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "One code path: the product never imports the test bed KEPT" in clean.stdout

    # Add one simulation import to the product: the contract breaks and names it.
    probe = copy / "modelplane" / "builders" / "sneaky.py"
    probe.write_text("from modelplane_testbed.simulator import ColdStartModel  # noqa\n")
    broken = _lint(tmp_path, copy)
    assert broken.returncode != 0
    assert "One code path: the product never imports the test bed BROKEN" in broken.stdout
    assert "modelplane.builders.sneaky -> modelplane_testbed.simulator" in broken.stdout
