"""Each package declares exactly what its code imports: nothing missing, nothing declared for nothing."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = {
    "kernels": "kernels",
    "core_models": "packages/core-models",
    "data": "packages/data",
    "eval": "packages/eval",
    "tuning": "packages/tuning",
}
# Needed at run time though no module of the package imports them by name, and why.
USED_INDIRECTLY = {
    "core_models": {"pillow": "transformers' image processors read images with PIL (no torchvision)"},
    "tuning": {
        "tensorboard": "accelerate's TensorBoardTracker imports it (--report-to tensorboard)",
        "wandb": "accelerate's WandBTracker imports it (--report-to wandb)",
    },
}
TEST_EXTRAS = {"test"}  # extras for a package's own tests, not its code


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return canonical(re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0])


def declared(member: str) -> tuple[set[str], set[str]]:
    """Return (dependencies, extras' requirements) named in the member's pyproject.toml."""
    project = tomllib.loads((ROOT / MEMBERS[member] / "pyproject.toml").read_text())["project"]
    deps = {requirement_name(r) for r in project.get("dependencies", [])}
    extras = {
        requirement_name(r)
        for extra, reqs in project.get("optional-dependencies", {}).items()
        if extra not in TEST_EXTRAS
        for r in reqs
    }
    return deps, extras


def imported(member: str) -> dict[str, str]:
    """Return {distribution: first file importing it} over every import in the member's source, lazy ones too."""
    home = importlib.metadata.packages_distributions()
    found: dict[str, str] = {}
    for path in sorted((ROOT / MEMBERS[member] / "src").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                parts = module.split(".")
                if parts[0] in sys.stdlib_module_names:
                    continue
                if parts[0] == "medtune":
                    if len(parts) < 2 or parts[1] == member:
                        continue
                    dist = "medtune-" + parts[1].replace("_", "-")
                else:
                    dist = canonical(home.get(parts[0], [parts[0]])[0])
                found.setdefault(dist, str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize("member", sorted(MEMBERS))
def test_every_import_is_declared(member):
    deps, extras = declared(member)
    missing = {dist: where for dist, where in imported(member).items() if dist not in deps | extras}
    assert not missing, f"{MEMBERS[member]}/pyproject.toml does not declare {missing}"


@pytest.mark.parametrize("member", sorted(MEMBERS))
def test_nothing_is_declared_that_no_code_imports(member):
    deps, extras = declared(member)
    used = set(imported(member)) | set(USED_INDIRECTLY.get(member, {}))
    unused = sorted((deps | extras) - used)
    assert not unused, f"{MEMBERS[member]}/pyproject.toml declares {unused}, which nothing imports"
