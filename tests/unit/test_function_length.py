"""No function of the product over 60 lines without a reason in its docstring.

A function that long is usually several decisions in one; split it (see `builders.pod`, a base
plus patches, and `builders.resolve`, one function per decision). Where the length is the clearest
form (one manifest literal, one table), say so in the docstring with a line starting
`Long because` (the checker reads that).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRODUCT = REPO / "operator" / "modelplane"
LIMIT = 60
REASON = "Long because"


def long_functions(root: Path, limit: int = LIMIT) -> list[str]:
    """`path:line name (N lines)` of every function over `limit` lines with no stated reason."""
    found: list[str] = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > limit and REASON not in (ast.get_docstring(node) or ""):
                where = f"{path.relative_to(root)}:{node.lineno}"
                found.append(f"{where} {node.name} ({lines} lines)")
    return found


def test_no_function_over_the_limit_without_a_reason() -> None:
    found = long_functions(PRODUCT)
    assert not found, (
        f"functions over {LIMIT} lines: split them, or give the reason in the docstring "
        f"('{REASON} ...'):\n" + "\n".join(found)
    )


def test_the_checker_finds_a_long_function_and_accepts_a_reason(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(LIMIT))
    (tmp_path / "long.py").write_text(f"def long():\n{body}")
    (tmp_path / "fine.py").write_text(f'def fine():\n    """{REASON}: a table."""\n{body}')
    (tmp_path / "short.py").write_text("def short():\n    return 1\n")
    found = long_functions(tmp_path)
    assert found == [f"long.py:1 long ({LIMIT + 1} lines)"]
    (tmp_path / "adapters").mkdir()  # every package is read, none is exempt
    (tmp_path / "adapters" / "long.py").write_text(f"def long():\n{body}")
    assert long_functions(tmp_path) == ["adapters/long.py:1 long (61 lines)", *found]
