"""Import directions stay as DESIGN draws them: control → environment → core ← api."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "lambdarun"


def _imports(package: str) -> dict[str, set[str]]:
    """Each module of `package` and the lambdarun modules it imports (absolute dotted names)."""
    found: dict[str, set[str]] = {}
    for path in (SRC / package).rglob("*.py"):
        module = "lambdarun." + ".".join(path.relative_to(SRC).with_suffix("").parts)
        here = module.split(".")[:-1]  # the package a relative import starts from
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - node.level + 1]
                    target = ".".join([*base, node.module] if node.module else base)
                else:
                    target = node.module or ""
                names.update(f"{target}.{alias.name}" for alias in node.names)
                names.add(target)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        found[module] = {n for n in names if n.startswith("lambdarun")}
    return found


def test_core_imports_nothing_else_of_lambdarun() -> None:
    for module, names in _imports("core").items():
        outside = {n for n in names if not n.startswith("lambdarun.core")}
        assert not outside, f"{module} imports {sorted(outside)}"


def test_environment_reaches_api_only_through_its_wiring() -> None:
    for module, names in _imports("environment").items():
        api = {
            n
            for n in names
            if n.startswith("lambdarun.api") and not n.startswith(("lambdarun.api.app", "lambdarun.api.http"))
        }
        assert not api, f"{module} imports API handlers {sorted(api)}"


def test_api_never_imports_the_environment_or_the_sandbox() -> None:
    for module, names in _imports("api").items():
        wrong = {n for n in names if n.startswith(("lambdarun.environment", "lambdarun.sandbox"))}
        assert not wrong, f"{module} imports {sorted(wrong)}"


def test_no_module_is_over_350_lines() -> None:
    # The HTTP protocol server may stay larger while it stays one concept (issue 8).
    allowed = {SRC / "api" / "http.py"}
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if p not in allowed
            if (n := len(p.read_text().splitlines())) > 350}  # fmt: skip
    assert not long
