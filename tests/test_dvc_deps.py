"""Every stage's deps name each module of this repository that its command imports, transitively.

A module missing from ``deps`` goes stale silently: after an edit to it, ``dvc repro`` finds the stage
up to date and keeps results the new code would not give. The stages are DVC's own, ``matrix`` cells
expanded, from ``dvc.yaml`` and ``grid/dvc.yaml``; the imports are read with ``ast``, nothing is run.
"""

from __future__ import annotations

import ast
import itertools
import os
import shlex
from pathlib import Path

import pytest
from dvc.repo import Repo

ROOT = Path(__file__).resolve().parent.parent

with Repo(ROOT) as repo:
    STAGES = {stage.addressing: stage for stage in repo.index.stages}


def module_file(root: Path, name: str) -> Path | None:
    """``a.b`` -> ``a/b.py`` or ``a/b/__init__.py`` under root; None for a module from elsewhere."""
    base = root.joinpath(*name.split("."))
    return next((path for path in (base.with_suffix(".py"), base / "__init__.py") if path.is_file()), None)


def imported_names(root: Path, path: Path) -> set[str]:
    """Modules a file imports anywhere (function bodies too); ``from x import y`` gives x and x.y, as y may
    be a submodule (names that are no module's are dropped by ``module_file``)."""
    package = path.relative_to(root).parent.parts
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            # level 1 is the file's own package, each further level the package above
            parts = [*package[: len(package) + 1 - node.level]] if node.level else []
            base = ".".join(parts + (node.module.split(".") if node.module else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def imported_files(root: Path, module: str) -> set[Path]:
    """Files under root (relative to it) that ``python -m module`` run in root loads: the module, what it
    imports, transitively, and the ``__init__.py`` of every package on the way (``import a.b`` runs a's)."""
    files: set[Path] = set()
    pending = [module]
    while pending:
        parts = pending.pop().split(".")
        for depth in range(1, len(parts) + 1):
            path = module_file(root, ".".join(parts[:depth]))
            if path is not None and path not in files:  # each file is read once, so a cycle ends
                files.add(path)
                pending.extend(imported_names(root, path))
    return {path.relative_to(root) for path in files}


def command_modules(cmd: str | list[str]) -> list[str]:
    """The modules a stage's command (one line or a list of them) runs as ``python -m <module>``."""
    words = [word for line in ([cmd] if isinstance(cmd, str) else cmd) for word in shlex.split(line)]
    return [module for flag, module in itertools.pairwise(words) if flag == "-m"]


def uncovered(files: set[Path], deps: list[Path]) -> list[Path]:
    """The files that no dep names, as itself or as a folder above it."""
    return sorted(path for path in files if not any(path.is_relative_to(dep) for dep in deps))


@pytest.mark.parametrize("stage", list(STAGES.values()), ids=list(STAGES))
def test_deps_name_every_module_the_command_imports(stage):
    modules = command_modules(stage.cmd)
    assert modules, f"{stage.addressing}: its command runs no `python -m` module, so its imports are unknown"
    wdir = Path(stage.wdir)
    deps = [Path(os.path.relpath(dep.fs_path, wdir)) for dep in stage.deps]  # as dvc.yaml writes them
    imported = set().union(*(imported_files(wdir, module) for module in modules))
    missing = uncovered(imported, deps)
    assert not missing, "\n".join(f"{stage.addressing}: {path} is imported but not in deps" for path in missing)
