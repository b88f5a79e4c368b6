"""The import contracts of the builders and of the side packages break when a cycle comes back."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.unit.test_one_code_path import PRODUCT, _lint

BUILDERS = "Builders point one way"
SIDE = "Side packages import no operator layer"


def status(report: str, contract: str) -> str:
    """KEPT or BROKEN for the contract whose name starts with `contract` (names may wrap)."""
    found = re.search(re.escape(contract) + r"[^\n]*(?:\n[^\n]*?)?\b(KEPT|BROKEN)\b", report)
    assert found, f"{contract!r} is not in the report:\n{report}"
    return found.group(1)


@pytest.mark.timeout(300)
def test_the_builders_and_side_package_contracts_break_on_an_upward_import(
    tmp_path: Path,
) -> None:
    copy = tmp_path / "operator"
    shutil.copytree(PRODUCT, copy / "modelplane", ignore=shutil.ignore_patterns("__pycache__"))
    clean = _lint(tmp_path, copy)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert status(clean.stdout, BUILDERS) == status(clean.stdout, SIDE) == "KEPT"

    # preload importing objects again (the old cycle), and the catalog importing a builder.
    for path, line in [
        (
            copy / "modelplane" / "builders" / "preload.py",
            "from modelplane.builders import objects",
        ),
        (copy / "modelplane" / "catalog" / "sizing.py", "import modelplane.builders.resolve"),
    ]:
        path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    broken = _lint(tmp_path, copy)
    assert broken.returncode != 0
    assert status(broken.stdout, BUILDERS) == status(broken.stdout, SIDE) == "BROKEN"
    assert "modelplane.builders.preload -> modelplane.builders.objects" in broken.stdout
    assert "modelplane.catalog.sizing -> modelplane.builders.resolve" in broken.stdout
