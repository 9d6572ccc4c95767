"""Import structure of the package (oracle: the source itself, read with ast).

- No import cycle between onnxplain modules (module-level imports, the ones that run at
  import time; a cycle hidden behind a function-level import counts too, since that import
  is an edge of the same graph).
- Function-level imports are for optional third-party dependencies only: an onnxplain
  module imported inside a function hides a layering problem.
- No module imports a private (``_name``) module of another subpackage.
"""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: folder -> package name, as pyproject maps them
PACKAGES = {"engine": "onnxplain", "kernels": "onnxplain.kernels"}


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


MODULES = _modules()


def _resolve(module: str, path: pathlib.Path, node: ast.ImportFrom | ast.Import) -> list[str]:
    """Absolute onnxplain module names an import statement loads."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "onnxplain"]
    if node.level:
        base = module.split(".")
        if path.name != "__init__.py":
            base = base[:-1]
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != "onnxplain":
        return []
    names = []
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        names.append(sub if sub in MODULES else target)
    return names


def _imports(function_level: bool) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        inner = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if node.__class__ is ast.ImportFrom and node.module == "__future__":
                continue
            if function_level != (id(node) in inner):
                continue
            for target in _resolve(module, path, node):
                if target in MODULES and target != module:
                    graph[module].add(target)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state and (found := visit(t)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def _package_of(module: str) -> str:
    """The module's parent package: onnxplain.methods.lime -> onnxplain.methods."""
    path = MODULES[module]
    return module if path.name == "__init__.py" else module.rsplit(".", 1)[0]


#: The only function-level imports of onnxplain modules, each the back edge of a cycle that the
#: public API makes real (everything else is imported at the top):
#: - ``Explanation.plot`` draws with onnxplain.render, and render reads each method's colour rule
#:   from the registry, whose methods return Explanations;
#: - ``explain_dataset(ray=...)`` runs on onnxplain.distributed, whose Ray actors run the dataset
#:   module's batch functions in the workers.
LAZY = {("onnxplain.result", "onnxplain.render"), ("onnxplain.dataset", "onnxplain.distributed")}


def test_the_module_table_sees_the_package():
    assert {"onnxplain", "onnxplain.registry", "onnxplain.runtime", "onnxplain.methods.lime",
            "onnxplain.graph.reverse", "onnxplain.kernels.lime"} <= set(MODULES)


def test_no_import_cycles():
    top = _imports(False)
    inner = _imports(True)
    both = {m: top[m] | {t for t in inner[m] if (m, t) not in LAZY} for m in MODULES}
    # a package __init__ re-exporting its children is not a cycle with them
    for m in both:
        both[m] = {t for t in both[m] if not (MODULES[t].name == "__init__.py" and m.startswith(t + "."))}
    assert _cycle(both) is None, " -> ".join(_cycle(both) or [])


def test_no_function_level_imports_of_onnxplain_modules():
    inner = _imports(True)
    found = sorted(f"{m} imports {t}" for m, targets in inner.items() for t in targets if (m, t) not in LAZY)
    assert not found, "\n".join(found)


def test_no_private_module_imported_across_packages():
    """A private module (leading underscore) is used only inside its package, subpackages included
    (graph.rules.* use graph._util); other packages go through the package's __init__."""
    top, inner = _imports(False), _imports(True)
    bad = []
    for m in MODULES:
        for t in top[m] | inner[m]:
            if t.rsplit(".", 1)[-1].startswith("_") and not t.endswith("__init__") \
                    and not (m + ".").startswith(_package_of(t) + ".") and t != "onnxplain._validation":
                bad.append(f"{m} imports {t}")
    assert not bad, "\n".join(sorted(bad))


def test_function_level_imports_are_optional_dependencies_only():
    """Inside functions only packages a user may lack, or heavy parts that few calls need
    (onnx's version converter and reference evaluator, onnxruntime's quantizer, scipy,
    scikit-image/-learn, matplotlib), or the standard library, are imported; the core
    (numpy, onnx, onnxruntime, onnxplain) belongs at the top of the module."""
    import sys

    allowed = {"onnxruntime_ep_openvino", "scipy", "skimage", "matplotlib", "mpl_toolkits", "PIL", "sklearn", "torch",
               # optional extras: `onnxplain[ray]` (Ray Data), the Parquet result store, the browser check
               "ray", "pyarrow", "playwright"}
    allowed |= set(sys.stdlib_module_names)
    heavy_parts = {"onnx.version_converter", "onnx.reference", "onnxruntime.quantization"}
    bad = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for f in ast.walk(tree):
            if not isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for n in ast.walk(f):
                if isinstance(n, ast.Import):
                    roots = [a.name for a in n.names]
                elif isinstance(n, ast.ImportFrom) and not n.level:
                    roots = [f"{n.module}.{a.name}" for a in n.names]
                else:
                    continue
                roots = [r.split(".")[0] for r in roots if not any(r.startswith(h) for h in heavy_parts)]
                bad += [f"{module}.{f.name} imports {r}" for r in roots if r not in allowed and r != "onnxplain"]
    assert not bad, "\n".join(sorted(bad))


if __name__ == "__main__":  # pragma: no cover - a quick listing while refactoring
    pytest.main([__file__, "-q"])
