"""The shape of the code: no import cycle in rag/, and each seam's base imports no implementation."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import rag
from rag.ingest import CONVERTERS
from rag.llm import BACKENDS
from rag.store import STORES

PACKAGE = Path(rag.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every rag module `path` imports, anywhere in the file (function-level imports included)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found |= {f"{target}.{a.name}" for a in node.names}  # `from . import x` names a module
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports(path) if m in modules and m != name} for name, path in modules.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle as a list of modules (first == last), or None.

    >>> find_cycle({"a": {"b"}, "b": {"a"}})
    ['a', 'b', 'a']
    >>> find_cycle({"a": {"b"}, "b": set()}) is None
    True
    """
    state: dict[str, int] = {}  # 1 = on the path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_rag_has_no_import_cycle():
    edges = graph()
    assert "rag.pipeline" in edges and "rag.llm.transformers" in edges  # the walk found the package
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges) or [])


@pytest.mark.parametrize(
    "seam, registry",
    [("rag.llm", BACKENDS), ("rag.store", STORES), ("rag.ingest", CONVERTERS)],
)
def test_a_seam_imports_no_implementation(seam, registry):
    """The base and the registry name implementations as strings, imported only when chosen."""
    edges = graph()
    implementations = {target.partition(":")[0] for target in registry.values()}
    for module in (seam, f"{seam}.base"):
        assert not edges[module] & implementations, f"{module} imports {edges[module] & implementations}"


def test_backends_do_not_import_each_other():
    edges = graph()
    backends = {target.partition(":")[0] for target in BACKENDS.values()}
    for backend in backends:
        assert not edges[backend] & (backends - {backend})


def test_every_module_of_rag_imports():
    """Every module imports in this environment, which CI builds from pyproject.toml alone in a
    new virtual environment (.ci/run): an import the code needs but pyproject does not declare
    fails here, not on a user's machine. Run in a child so the fast tier stays torch-free."""
    import subprocess
    import sys

    code = (
        "import importlib, pkgutil, rag\n"
        "names = [m.name for m in pkgutil.walk_packages(rag.__path__, 'rag.') if not m.name.endswith('__main__')]\n"
        "for name in names: importlib.import_module(name)\n"
        "print(len(names))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) == len([p for p in PACKAGE.rglob("*.py") if p.name not in ("__init__.py", "__main__.py")]) + len(list(PACKAGE.rglob("*/__init__.py")))


def test_pypdf_can_decrypt_aes():
    """pypdf reads AES only with its [crypto] extra; without it every AES PDF is rejected."""
    from pypdf._crypt_providers import crypt_provider

    assert crypt_provider[0] != "local_crypt_fallback", crypt_provider


def test_each_stage_folder_says_its_job_in_one_line():
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc, f"{init.parent.name}/ has no docstring"
        assert len(doc.splitlines()[0]) <= 120, f"{init.parent.name}/: {doc.splitlines()[0]}"


STAGES = ["env", "weights", "lexicon", "types", "text", "llm", "config", "ingest", "store", "index", "answering", "pipeline", "eval", "serve", "training"]
"""The floors, lowest first: a module imports only from its own floor or lower ones."""


def test_imports_run_downward_between_stages():
    def floor(module: str) -> int:
        parts = module.split(".")
        return STAGES.index(parts[1]) if len(parts) > 1 and parts[1] in STAGES else len(STAGES)

    upward = [
        f"{a} -> {b}"
        for a, targets in graph().items()
        for b in targets
        if floor(b) > floor(a)
    ]
    assert not upward, upward
