"""Shared fixtures: a synthetic MNIST mirror, and the project as a git + DVC repo on it.

``dvc repro`` of the whole pipeline runs once per test run, shared by the parallel workers
(``reproduced``); tests that only read its results share it, and tests that change something work
on a copy of it (``project``), which takes a fraction of a second, not a pipeline run.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

from stages.cell import JOBS_ENV
from stages.core.errors import run_stage
from stages.core.params import load_raw, write_raw
from testing.synthetic import shell_env, write_mirror, write_source

ROOT = Path(__file__).resolve().parent.parent
PROJECT_FILES = (
    "dvc.yaml",
    "params.yaml",
    "catalog.yaml",
    "data/.gitignore",
    "stages",
    "tools",
    "grid/dvc.yaml",
    ".dvc/config",
    ".dvcignore",
    ".gitignore",
)
TWO_RECIPES = ("mlp_20_sigmoid-sgd", "mlp_20_sigmoid-adam")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests on the reproduced pipeline first: the worker that takes them starts the one
    pipeline run at once, while the other works through the tests that need none."""
    items.sort(key=lambda item: "reproduced" not in item.fixturenames)


@pytest.fixture(scope="session")
def mirror(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A folder served as a ``file://`` mirror of synthetic MNIST, and its content checksums."""
    folder = tmp_path_factory.mktemp("mirror")
    return folder, write_mirror(folder)


def small_params() -> dict:
    """The project's params.yaml and catalog.yaml, scaled down to the synthetic data
    (seconds, not minutes), with a grid of two recipes and two seeds."""
    params = load_raw(ROOT / "params.yaml")
    params["split"].update(train_size=800, valid_size=200)
    params["train"].update(epochs=3, batch_size=50)
    params["evaluate"]["batch_size"] = 100
    params["grid"] = {"seeds": 2, "recipes": {name: params["grid"]["recipes"][name] for name in TWO_RECIPES}}
    return params


@pytest.fixture(scope="session")
def fresh(tmp_path_factory, mirror) -> Project:
    """The project as cloned, committed, nothing run: copy it (``.copy``) before changing it."""
    return new_project(tmp_path_factory.mktemp("fresh") / "repo", *mirror)


def new_project(repo: Path, folder: Path, checksums: dict[str, str]) -> Project:
    """The project in ``repo`` on the synthetic mirror in ``folder``, with ``small_params``, committed."""
    for name in PROJECT_FILES:
        source, target = ROOT / name, repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target)
    project = Project(repo, {**shell_env(folder), JOBS_ENV: "1"})  # a grid seed's pool would cost more than it saves
    write_raw(small_params(), repo / "params.yaml")
    write_source(repo, checksums)
    project.run("git", "init", "-q", "-b", "main")
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "project under test")
    return project


@pytest.fixture(scope="session")
def reproduced(fresh, tmp_path_factory) -> Project:
    """The project after ``dvc repro`` of the pipeline and of the grid, its results committed as main
    is; made by the first worker that needs it, in the folder all workers share. Read it, never
    change it: tests that change something take ``project``. Its 30 s are the suite's one real run
    of both pipelines end to end, paid once."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if "PYTEST_XDIST_WORKER" in os.environ else base  # this run's, above each worker's own
    root, done = shared / "reproduced" / "repo", shared / "reproduced.done"
    with FileLock(shared / "reproduced.lock"):
        if not done.exists():
            shutil.rmtree(root, ignore_errors=True)  # a worker that failed half-way
            reproduce(fresh.copy(root))
            done.touch()
    return Project(root, fresh.env)


def reproduce(project: Project) -> None:
    """``dvc repro`` of the pipeline and of the grid, its results committed as main is."""
    project.run("dvc", "repro")
    project.run("dvc", "repro", "grid/dvc.yaml")
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "baseline results")


@pytest.fixture
def project(reproduced, tmp_path) -> Project:
    """A private copy of ``reproduced``: results committed, DVC cache filled."""
    return reproduced.copy(tmp_path / "repo")


@pytest.fixture
def in_process(monkeypatch, capsys):
    """``python -m stages NAME ARGS`` in a project, run in this process: the same entry point and
    exit (``run_stage``), without a second interpreter importing torch, for the runs that end in an
    error line. Returns the exit code, stdout and stderr."""

    def run(project: Project, name: str, *args: str) -> tuple[int, str, str]:
        monkeypatch.chdir(project.root)
        monkeypatch.setattr(sys, "argv", [name, *args])
        for key, value in project.env.items():
            monkeypatch.setenv(key, value)
        with pytest.raises(SystemExit) as exit_:
            run_stage(importlib.import_module(f"stages.{name}").main)
            raise SystemExit(0)
        out, err = capsys.readouterr()
        return exit_.value.code, out, err

    return run


class Project:
    def __init__(self, root: Path, env: dict[str, str]):
        self.root, self.env = root, env

    def copy(self, root: Path) -> Project:
        shutil.copytree(self.root, root, symlinks=True)
        return Project(root, dict(self.env))

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(command, cwd=self.root, env=self.env, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def stage(self, name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "stages", name, *args, check=check)

    def tool(self, name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", f"tools.{name}", *args, check=check)

    def read(self, path: str) -> str:
        return (self.root / path).read_text()

    def params(self) -> dict:
        """params.yaml and catalog.yaml as one mapping."""
        return load_raw(self.root / "params.yaml")

    def set_params(self, **sections) -> None:
        """Sets top-level keys of either file, each in the file it belongs in."""
        write_raw({**self.params(), **sections}, self.root / "params.yaml")
