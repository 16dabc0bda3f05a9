"""List the functions longer than a limit (default 60 lines) in the library code.

Usage: ``python tools/long_functions.py [--limit 60] [paths ...]``. A function's length runs from its
``def`` line to its last line (docstring and comments included, decorators not). Nested functions are
listed on their own as well as counted inside their parent. Exit status 1 when any function is too long.
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

DEFAULT_PATHS = ("features", "models", "training", "serving",
                 "personalise_cli.py", "batch_cli.py", "triggers_cli.py")


def python_files(paths: list[str]) -> list[Path]:
    """Every ``.py`` file under the given files and folders, sorted."""
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return files


def long_functions(path: Path, limit: int) -> list[tuple[int, str, int]]:
    """``(line, qualified name, length)`` of each function in ``path`` longer than ``limit`` lines."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                length = (child.end_lineno or child.lineno) - child.lineno + 1
                if length > limit:
                    found.append((child.lineno, name, length))
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", default=list(DEFAULT_PATHS))
    parser.add_argument("--limit", type=int, default=60, help="longest allowed function, in lines")
    args = parser.parse_args(argv)
    count = 0
    for path in python_files(args.paths):
        for line, name, length in long_functions(path, args.limit):
            print(f"{path}:{line}: {name} is {length} lines")
            count += 1
    print(f"{count} function(s) over {args.limit} lines")
    return 1 if count else 0


if __name__ == "__main__":
    sys.exit(main())
