"""The import arrows of the package and of tools/ against docs/ARCHITECTURE.md ("Layering").

Every module under `videohpm/` (whatever is there when the test runs) is read with `ast`: every
`import` / `from … import` node, at the top of the file or inside a function, relative imports
resolved. Each own-package import is mapped to its layer-package (`videohpm.<first name>`), and
the test fails, naming the file:line of the import, on

- an arrow the layering table does not allow (a package imports only its own layer-package or
  layers below it; arrows inside a layer only as listed in `SAME_LAYER`);
- a layer-package the table does not know (add it to the table and to the document);
- an import cycle between layer-packages;
- an own-package import inside a function (it hides an arrow) unless listed in
  `LAZY_OWN_ALLOWED` with its reason;
- a third-party import inside a function of a module not in `HEAVY_LAZY`, or without a comment
  saying why (on its line, or above its group of imports).

`tools/` (entry points and `tools/lib/**`) sits above the whole package: it may import any of
`videohpm` (at the top or, to keep `--help` fast, inside a function), `videohpm` never imports it,
no two `tools` modules import each other in a cycle (lazy imports included), and no module imports
another module's `_private` name.
"""
from __future__ import annotations

import ast
import pathlib
import sys
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = "videohpm"
PKG_DIR = ROOT / PKG
TOOLS = "tools"  # the applications: tools/*.py (entry points) and tools/lib/** (their orchestration)

# docs/ARCHITECTURE.md, "Layering": bottom (1) to top (6). "" is `videohpm/__init__.py`.
LAYERS: Dict[str, int] = {
    "": 0,
    "distributed": 1, "precision": 1, "accuracy": 1, "schedules": 1, "constants": 1, "hardware": 1, "kernels": 1,
    "data": 2, "models": 2, "masking": 2, "objectives": 2,
    "methods": 3,
    "config": 4,
    "engine": 5, "evaluation": 5,  # no arrow between them: the k-NN hook is handed over by `tasks`
    "tasks": 6,
}
# Arrows between two layer-packages of the same layer: the CPU capability probe is the bottom of layer 1.
SAME_LAYER: Set[Tuple[str, str]] = {("precision", "hardware"), ("kernels", "hardware")}

# Own-package imports allowed inside a function: {(file relative to the repo, imported module): why}.
LAZY_OWN_ALLOWED: Dict[Tuple[str, str], str] = {}

# Third-party modules that may be imported inside a function (top-level name: why).
HEAVY_LAZY: Dict[str, str] = {
    "deepspeed": "slow to import (probes the accelerator, builds ops); only the engine's run needs it",
    "transformers": "heavy and a dev extra only (Hugging Face export / benchmarks)",
    "decord": "load order: PyAV must be imported before decord (see videohpm/data/video.py)",
    "av": "load order with decord (see videohpm/data/video.py); only the PyAV backend needs it",
    "matplotlib": "the Agg backend is chosen right before pyplot is imported; only drawing needs it",
    "fvcore": "only FLOP counting needs it (pulls in iopath and friends)",
    "sklearn": "heavy; only the demo data set's bundled digits/photos need it",
    "skvideo": "a dev extra only",
    "safetensors": "only .safetensors files need it",
    "pytorchvideo": "heavy; only its UCF101/HMDB51 split parsers are used",
}
# `torch.utils.tensorboard` pulls in tensorboard: allowed lazily as well.
HEAVY_LAZY_SUBMODULES: Dict[str, str] = {
    "torch.utils.tensorboard": "pulls in tensorboard; only runs with train.tensorboard write it",
}

@dataclass(frozen=True)
class Import:
    file: str  # relative to the repo root
    line: int
    target: str  # absolute module name
    lazy: bool  # inside a function
    commented: bool  # a comment on its line or above its group of imports

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    p = ROOT.joinpath(*name.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def _commented(lines: List[str], lineno: int) -> bool:
    """A `#` comment on the import's line, or on the line above its run of import lines."""
    i = lineno - 1
    if "#" in lines[i]:
        return True
    while i > 0 and lines[i - 1].strip().startswith(("import ", "from ")):
        i -= 1
        if "#" in lines[i]:
            return True
    return i > 0 and lines[i - 1].strip().startswith("#")


def _imports(path: pathlib.Path) -> Iterator[Import]:
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source, filename=str(path))
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    rel = str(path.relative_to(ROOT))

    def visit(node: ast.AST, in_function: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(rel, child.lineno, alias.name, in_function, _commented(lines, child.lineno))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[:len(base) - (child.level - 1)]
                    name = ".".join(base + ([child.module] if child.module else []))
                else:
                    name = child.module or ""
                for alias in child.names:
                    full = f"{name}.{alias.name}"
                    target = full if name.split(".")[0] in (PKG, TOOLS) and _is_module(full) else name
                    yield Import(rel, child.lineno, target, in_function, _commented(lines, child.lineno))
            yield from visit(child, inner)

    yield from visit(tree, False)


def _all_imports() -> List[Import]:
    files = sorted(PKG_DIR.rglob("*.py"))
    assert files, f"no modules under {PKG_DIR}"
    return list(dict.fromkeys(imp for f in files for imp in _imports(f)))  # one per (file, line, module)


def _layer_package(module: str) -> Optional[str]:
    """`videohpm.engine.build` -> "engine"; `videohpm` -> ""; a third-party module -> None."""
    parts = module.split(".")
    if parts[0] != PKG:
        return None
    return parts[1] if len(parts) > 1 else ""


def _arrows(imports: List[Import]) -> Dict[Tuple[str, str], List[Import]]:
    arrows: Dict[Tuple[str, str], List[Import]] = {}
    for imp in imports:
        dst = _layer_package(imp.target)
        src = _layer_package(_module_name(ROOT / imp.file))
        if dst is not None and src != dst:
            arrows.setdefault((src, dst), []).append(imp)
    return arrows


def _allowed(src: str, dst: str) -> bool:
    if LAYERS[src] > LAYERS[dst]:
        return True
    return LAYERS[src] == LAYERS[dst] and (src, dst) in SAME_LAYER


@pytest.fixture(scope="module")
def imports() -> List[Import]:
    return _all_imports()


def test_every_layer_package_is_in_the_table(imports):
    names = {_layer_package(_module_name(p)) for p in PKG_DIR.rglob("*.py")}
    unknown = sorted(n for n in names if n not in LAYERS)
    assert not unknown, (f"{PKG}.{{{', '.join(unknown)}}} not in the layering table (docs/ARCHITECTURE.md and "
                         f"tests/test_layering.py LAYERS): applications belong in tools/lib/")


def test_arrows_follow_the_layering(imports):
    bad = []
    for (src, dst), sites in sorted(_arrows(imports).items()):
        if src not in LAYERS or dst not in LAYERS or _allowed(src, dst):
            continue
        bad += [f"{imp.where}: {PKG}.{src} (layer {LAYERS[src]}) imports {imp.target} (layer {LAYERS[dst]})"
                for imp in sites]
    assert not bad, "arrows docs/ARCHITECTURE.md does not allow:\n" + "\n".join(bad)


def _find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    state: Dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: List[str] = []

    def dfs(node: str) -> Optional[List[str]]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = dfs(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = dfs(node)
            if found:
                return found
    return None


def test_no_import_cycle_between_layer_packages(imports):
    arrows = _arrows(imports)
    graph: Dict[str, Set[str]] = {}
    for src, dst in arrows:
        graph.setdefault(src, set()).add(dst)
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle " + " -> ".join(f"{PKG}.{n}" if n else PKG for n in cycle) + ":\n" + "\n".join(
        f"{imp.where}: imports {imp.target}" for a, b in zip(cycle, cycle[1:]) for imp in arrows[(a, b)])


def test_own_imports_sit_at_the_top_of_the_file(imports):
    bad = [f"{imp.where}: {imp.target} imported inside a function" for imp in imports
           if imp.lazy and _layer_package(imp.target) is not None
           and (imp.file, imp.target) not in LAZY_OWN_ALLOWED]
    assert not bad, "own-package imports inside functions hide arrows; move them to the top:\n" + "\n".join(bad)


def _heavy(target: str) -> bool:
    return target.split(".")[0] in HEAVY_LAZY or any(
        target == m or target.startswith(m + ".") for m in HEAVY_LAZY_SUBMODULES)


def test_lazy_third_party_imports_are_heavy_and_explained(imports):
    lazy = [imp for imp in imports if imp.lazy and _layer_package(imp.target) is None]
    not_heavy = [f"{imp.where}: {imp.target}" for imp in lazy if not _heavy(imp.target)]
    unexplained = [f"{imp.where}: {imp.target}" for imp in lazy if _heavy(imp.target) and not imp.commented]
    assert not not_heavy, ("imports inside functions of modules that are not heavy optional dependencies "
                           "(tests/test_layering.py HEAVY_LAZY); move them to the top:\n" + "\n".join(not_heavy))
    assert not unexplained, ("lazy imports of heavy modules need a one-line comment saying why (on the line or "
                             "above the group):\n" + "\n".join(unexplained))


# ------------------------------------------------------------------ the checker itself
def _write(tmp: pathlib.Path, rel: str, text: str) -> pathlib.Path:
    p = tmp / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_checker_resolves_relative_and_lazy_imports(tmp_path, monkeypatch):
    """The reader itself: relative imports resolved against the package, `from pkg import module`
    named as the module, imports inside functions marked lazy, comments found above a group."""
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    _write(tmp_path, "videohpm/__init__.py", "")
    _write(tmp_path, "videohpm/distributed.py", "")
    _write(tmp_path, "videohpm/engine/__init__.py", "from .build import x\n")
    _write(tmp_path, "videohpm/engine/build.py", "")
    f = _write(tmp_path, "videohpm/config.py",
               "from videohpm import distributed\n"
               "def f():\n"
               "    # heavy\n"
               "    import deepspeed\n"
               "    from deepspeed import utils\n"
               "    x = 1\n"
               "    from .engine.build import y\n")
    got = [(i.line, i.target, i.lazy, i.commented) for i in _imports(f)]
    assert got == [(1, "videohpm.distributed", False, False), (4, "deepspeed", True, True),
                   (5, "deepspeed", True, True), (7, "videohpm.engine.build", True, False)]
    init = [(i.target, i.lazy) for i in _imports(tmp_path / "videohpm/engine/__init__.py")]
    assert init == [("videohpm.engine.build", False)]


def test_checker_flags_a_backward_arrow_and_a_cycle():
    imps = [Import("videohpm/config.py", 3, "videohpm.engine.build", False, False),
            Import("videohpm/engine/build.py", 7, "videohpm.config", False, False)]
    arrows = {(_layer_package(_module_name(ROOT / i.file)), _layer_package(i.target)) for i in imps}
    assert arrows == {("config", "engine"), ("engine", "config")}
    assert not _allowed("config", "engine") and _allowed("engine", "config")
    assert _find_cycle({"config": {"engine"}, "engine": {"config"}}) == ["config", "engine", "config"]
    assert _find_cycle({"engine": {"config"}, "config": {"data"}}) is None


# ------------------------------------------------------------------ tools/
def _tools_files() -> List[pathlib.Path]:
    files = sorted((ROOT / TOOLS).rglob("*.py"))
    assert files, f"no modules under {ROOT / TOOLS}"
    return files


def _tools_graph(files: List[pathlib.Path]) -> Tuple[Dict[str, Set[str]], Dict[Tuple[str, str], List[Import]]]:
    """Module-to-module arrows between `tools` modules (lazy imports included), with their sites."""
    graph: Dict[str, Set[str]] = {}
    sites: Dict[Tuple[str, str], List[Import]] = {}
    for f in files:
        src = _module_name(f)
        for imp in _imports(f):
            if imp.target.split(".")[0] == TOOLS and imp.target != src and _is_module(imp.target):
                graph.setdefault(src, set()).add(imp.target)
                sites.setdefault((src, imp.target), []).append(imp)
    return graph, sites


def _private_imports(path: pathlib.Path) -> List[str]:
    """`from M import _name` of another module's private name (dunders and `__future__` aside)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    rel = str(path.relative_to(ROOT))
    return [f"{rel}:{node.lineno}: imports {alias.name} from {node.module or '.' * node.level}"
            for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module != "__future__"
            for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__")]


def test_the_package_never_imports_tools(imports):
    bad = [f"{imp.where}: imports {imp.target}" for imp in imports if imp.target.split(".")[0] == TOOLS]
    assert not bad, f"{PKG} is a library below tools/; it may not import the applications:\n" + "\n".join(bad)


def test_no_import_cycle_between_tools_modules():
    graph, sites = _tools_graph(_tools_files())
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle " + " -> ".join(cycle) + ":\n" + "\n".join(
        f"{imp.where}: imports {imp.target}" for a, b in zip(cycle, cycle[1:]) for imp in sites[(a, b)])


def test_no_private_name_imported_across_tools_modules():
    bad = [line for f in _tools_files() for line in _private_imports(f)]
    assert not bad, "private names imported from another module (make them public or move them):\n" + "\n".join(bad)


def test_tools_checker_finds_a_lazy_cycle_and_a_private_import(tmp_path, monkeypatch):
    """The tools reader: `from tools.lib import x` named as the module, a cycle closed by an import
    inside a function found, a private name imported from another module reported."""
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    _write(tmp_path, "tools/__init__.py", "")
    _write(tmp_path, "tools/lib/__init__.py", "")
    a = _write(tmp_path, "tools/lib/a.py", "from tools.lib import b\nfrom tools.lib.b import _helper, __doc__\n")
    b = _write(tmp_path, "tools/lib/b.py", "def f():\n    from tools.lib.a import g\n")
    tool = _write(tmp_path, "tools/run.py", "from tools.lib import a\nfrom videohpm.x import y\n")
    graph, _ = _tools_graph([a, b, tool])
    assert graph == {"tools.lib.a": {"tools.lib.b"}, "tools.lib.b": {"tools.lib.a"}, "tools.run": {"tools.lib.a"}}
    assert _find_cycle(graph) == ["tools.lib.a", "tools.lib.b", "tools.lib.a"]
    assert _private_imports(a) == ["tools/lib/a.py:2: imports _helper from tools.lib.b"]
    assert _private_imports(b) == [] and _private_imports(tool) == []
