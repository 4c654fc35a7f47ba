"""The package's dependency rules, read from its imports (module- and function-level), so a break fails here.

- rules/ imports nothing of the package but itself;
- an engine never imports another engine;
- data/ and stimuli/ know no engine;
- plots.py reads saved results only (results.py, and evaluate/ for the arrays' statistics);
- protocol.py imports no engine (the registry and the rules' declarations are allowed).
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "neuroplastic"
ENGINES = ("neuroplastic.engines.numpy", "neuroplastic.engines.brian")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every neuroplastic module ``path`` imports, at any depth of the file, relative imports resolved."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found |= {f"{target}.{a.name}" for a in node.names}      # "from . import data" imports a module
    return {name for name in found if name == "neuroplastic" or name.startswith("neuroplastic.")}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(files: dict[str, set[str]]) -> list[str]:
    """The broken rules, one line each, for ``{module: imported modules}``."""
    out = []
    for module, imported in sorted(files.items()):
        for name in sorted(imported):
            if _within(module, "neuroplastic.rules") and not _within(name, "neuroplastic.rules"):
                out.append(f"{module} imports {name}: rules/ imports nothing of the package but itself")
            for engine in ENGINES:
                other = [e for e in ENGINES if e != engine]
                if _within(module, engine) and any(_within(name, o) for o in other):
                    out.append(f"{module} imports {name}: engines never import each other")
            if (_within(module, "neuroplastic.data") or _within(module, "neuroplastic.stimuli")) \
                    and _within(name, "neuroplastic.engines"):
                out.append(f"{module} imports {name}: data/ and stimuli/ know no engine")
            if module == "neuroplastic.plots" and not any(_within(name, f"neuroplastic.{ok}")
                                                           for ok in ("results", "errors", "evaluate")):
                out.append(f"{module} imports {name}: plots read saved results only")
            if module == "neuroplastic.protocol" and _within(name, "neuroplastic.engines") \
                    and name != "neuroplastic.engines" and not _within(name, "neuroplastic.engines.registry"):
                out.append(f"{module} imports {name}: protocol.py imports no engine")
    return out


def package_imports() -> dict[str, set[str]]:
    return {_module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def test_the_package_keeps_its_dependency_rules():
    assert violations(package_imports()) == []


@pytest.mark.parametrize("module,imported", [
    ("neuroplastic.rules.conv_clapp", "neuroplastic.engines.numpy.conv_stack"),
    ("neuroplastic.engines.brian.engine", "neuroplastic.engines.numpy.clapp_stack"),
    ("neuroplastic.engines.numpy.engine", "neuroplastic.engines.brian.device"),
    ("neuroplastic.stimuli.glimpses", "neuroplastic.engines.prepare"),
    ("neuroplastic.plots", "neuroplastic.compare"),
    ("neuroplastic.protocol", "neuroplastic.engines.numpy.conv_stack"),
])
def test_a_broken_rule_is_caught(module, imported):
    files = package_imports()
    files[module] = files[module] | {imported}
    assert len(violations(files)) == 1


def test_function_level_and_relative_imports_are_read(tmp_path):
    path = PACKAGE / "rules" / "_probe_for_test.py"
    path.write_text("def f():\n    from ..engines.numpy import clapp_stack\n    return clapp_stack\n")
    try:
        found = imports_of(path)
    finally:
        path.unlink()
    assert "neuroplastic.engines.numpy" in found
    assert violations({"neuroplastic.rules._probe_for_test": found})
