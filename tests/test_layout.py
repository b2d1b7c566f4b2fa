"""The code's layout rules that a reader relies on, checked (docs/architecture.md):

- no function in ``core/`` or ``explorer/`` is longer than :data:`MAX_LINES` lines, unless a ``# long:`` comment on
  its ``def`` line or the line above says why;
- ``core`` never imports Streamlit (the library works without the app).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 80


def long_functions(root: Path, max_lines: int = MAX_LINES, base: Path = ROOT) -> list[str]:
    """``path:line name (n lines)`` of every function under ``root`` longer than ``max_lines`` without a ``# long:``
    justification."""
    found = []
    for path in sorted(root.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines), filename=str(path))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            n = node.end_lineno - first + 1
            said = any("# long:" in lines[i - 1] for i in (first - 1, first, node.lineno) if i >= 1)
            if n > max_lines and not said:
                found.append(f"{path.relative_to(base)}:{node.lineno} {node.name} ({n} lines)")
    return found


def test_no_function_in_core_or_explorer_is_over_80_lines_unless_justified():
    assert long_functions(ROOT / "core") + long_functions(ROOT / "explorer") == []


def test_the_scan_finds_a_long_function_and_accepts_a_justified_one(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(85))
    (tmp_path / "a.py").write_text("def short():\n    return 1\n\n\ndef long_one():\n" + body)
    (tmp_path / "b.py").write_text("# long: one table, read top to bottom\ndef justified():\n" + body)
    assert long_functions(tmp_path, base=tmp_path) == ["a.py:5 long_one (86 lines)"]


def test_core_never_imports_streamlit():
    offenders = []
    for path in sorted((ROOT / "core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "streamlit"]
    assert offenders == []
