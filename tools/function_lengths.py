"""Print the longest functions of a source tree (lines from `def` to the function's last line).

uv run python tools/function_lengths.py [ROOT] [--top N] [--over LINES]
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path


def function_lengths(root: Path) -> list[tuple[int, str, str]]:
    """(lines, "path:line", qualified name) of every function and method under root."""
    rows: list[tuple[int, str, str]] = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        _walk(tree, path, "", rows)
    rows.sort(key=lambda row: (-row[0], row[1]))
    return rows


def _walk(node: ast.AST, path: Path, prefix: str, rows: list[tuple[int, str, str]]) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            name = f"{prefix}{child.name}"
            lines = (child.end_lineno or child.lineno) - child.lineno + 1
            rows.append((lines, f"{path}:{child.lineno}", name))
            _walk(child, path, f"{name}.", rows)
        elif isinstance(child, ast.ClassDef):
            _walk(child, path, f"{prefix}{child.name}.", rows)
        else:
            _walk(child, path, prefix, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default="operator/modelplane")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--over", type=int, default=60)
    args = parser.parse_args()
    rows = function_lengths(Path(args.root))
    over = [row for row in rows if row[0] > args.over]
    print(
        f"{len(rows)} functions, {len(over)} over {args.over} lines, longest {rows[0][0] if rows else 0}"
    )
    for lines, where, name in rows[: args.top]:
        print(f"{lines:5d}  {name:50s} {where}")


if __name__ == "__main__":
    main()
