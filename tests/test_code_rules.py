"""House rules of the source, checked on every `.py` file under `videohpm/` and `tools/`.

- No function (or method) longer than `MAX_FUNCTION_LINES` lines, counted with `ast` from the
  `def` line to the function's last line (decorators excluded, docstring and nested functions
  included): long functions are split at their phase boundaries into named helpers.
- No history in the code: no "issue N" / "issue #N" and no word "session" anywhere in a file
  (comments, docstrings, strings, printed output). History lives in git, measurements in
  docs/*.md with the command that produced them.
- Module docstrings of at most `MAX_MODULE_DOCSTRING_LINES` lines: what the module holds and why;
  longer design notes belong in docs/ARCHITECTURE.md.

Each test names every offending file:line at once, so one run lists the whole work left.
"""
from __future__ import annotations

import ast
import pathlib
import re
from typing import Iterator, List, Tuple

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHECKED_DIRS = ("videohpm", "tools")
MAX_FUNCTION_LINES = 60
MAX_MODULE_DOCSTRING_LINES = 20
HISTORY = re.compile(r"\bissue\s*#?\s*\d+|\bsessions?\b", re.IGNORECASE)


def _sources() -> List[pathlib.Path]:
    """Every `.py` file under the checked directories (build and cache folders skipped)."""
    files = []
    for name in CHECKED_DIRS:
        for path in sorted((ROOT / name).rglob("*.py")):
            if not {"__pycache__", "build", ".venv"} & set(path.parts):
                files.append(path)
    return files


def _parsed() -> Iterator[Tuple[str, str, ast.Module]]:
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        yield str(path.relative_to(ROOT)), text, ast.parse(text, filename=str(path))


def long_functions(tree: ast.AST, limit: int = MAX_FUNCTION_LINES) -> List[Tuple[int, str, int]]:
    """(line, name, length) of every function in `tree` whose `def`-to-end span exceeds `limit`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > limit:
                found.append((node.lineno, node.name, length))
    return sorted(found)


def history_lines(text: str) -> List[Tuple[int, str]]:
    """(line number, line) of every line of `text` that names an issue number or a session."""
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1)
            if HISTORY.search(line)]


def module_docstring_lines(tree: ast.Module) -> int:
    """Line count of the module docstring as written (0 when there is none)."""
    doc = ast.get_docstring(tree, clean=False)
    return len(doc.splitlines()) if doc else 0


def test_sources_found():
    files = _sources()
    assert any(p.name == "trainer.py" for p in files)
    assert any(p.parts[-2:] == ("tools", "train.py") for p in files)


def test_rules_detect_what_they_should():
    tree = ast.parse("def short():\n    return 1\n\n\ndef long():\n" + "    x = 1\n" * 60)
    assert long_functions(tree) == [(5, "long", 61)]
    assert long_functions(ast.parse("def f():\n" + "    x = 1\n" * 59)) == []
    text = "a = 1\n# see Issue 12\nb = 'issue #3'\nc = 'the sessions'\nd = 'an issue with 2 parts'\n"
    assert [n for n, _ in history_lines(text)] == [2, 3, 4]
    assert history_lines("obsession = 'sessional'\n") == []
    assert module_docstring_lines(ast.parse('"""one\ntwo\nthree"""\n')) == 3
    assert module_docstring_lines(ast.parse("x = 1\n")) == 0


def test_no_function_over_the_limit():
    offenders = [f"{name}:{line} {func} ({length} lines)"
                 for name, _, tree in _parsed() for line, func, length in long_functions(tree)]
    if offenders:
        pytest.fail(f"functions over {MAX_FUNCTION_LINES} lines — split them at phase "
                    "boundaries into named helpers:\n  " + "\n  ".join(offenders))


def test_no_history_in_code():
    offenders = [f"{name}:{number}: {line}"
                 for name, text, _ in _parsed() for number, line in history_lines(text)]
    if offenders:
        pytest.fail("issue numbers or session words in code (history belongs in git):\n  "
                    + "\n  ".join(offenders))


def test_module_docstrings_are_short():
    offenders = [f"{name} ({count} lines)" for name, _, tree in _parsed()
                 if (count := module_docstring_lines(tree)) > MAX_MODULE_DOCSTRING_LINES]
    if offenders:
        pytest.fail(f"module docstrings over {MAX_MODULE_DOCSTRING_LINES} lines — keep what "
                    "and why, move design notes to docs/ARCHITECTURE.md:\n  "
                    + "\n  ".join(offenders))
