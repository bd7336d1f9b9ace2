"""Shared fixtures: a synthetic MNIST mirror and a throwaway copy of the project as a git + DVC repo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.synthetic import mirror_params, write_mirror

ROOT = Path(__file__).resolve().parent.parent
PROJECT_FILES = (
    "dvc.yaml",
    "params.yaml",
    "stages",
    "tools",
    "grid/dvc.yaml",
    ".dvc/config",
    ".dvcignore",
    ".gitignore",
)


@pytest.fixture(scope="session")
def mirror(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A folder served as a ``file://`` mirror of synthetic MNIST, and its content checksums."""
    folder = tmp_path_factory.mktemp("mirror")
    return folder, write_mirror(folder)


def small_params(checksums: dict[str, str]) -> dict:
    """The project's params.yaml, scaled down to the synthetic data: seconds, not minutes."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.update(mirror_params(checksums))
    params["split"] = {"train_size": 800, "valid_size": 200}
    params["train"] = {"epochs": 3, "batch_size": 50}
    params["device"] = "cpu"
    return params


def project_env(mirror_folder: Path) -> dict[str, str]:
    """The environment a user's shell would have: this venv's python first on PATH, no analytics."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["DVC_NO_ANALYTICS"] = "1"
    env["MNIST_MIRRORS"] = mirror_folder.as_uri()
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "test"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "test@example.com"
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture
def project(tmp_path, mirror) -> "Project":
    """A fresh git repository holding the project's pipeline with small params, committed."""
    return make_project(tmp_path / "repo", mirror)


@pytest.fixture
def reproduced(project) -> "Project":
    """The project after ``dvc repro``, its results committed as the baseline."""
    project.run("dvc", "repro")
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "baseline results")
    return project


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory, mirror) -> "Project":
    """One project with every stage run by hand, shared by the tests that only read its outputs
    or run commands that change nothing: training once keeps the suite fast."""
    project = make_project(tmp_path_factory.mktemp("trained") / "repo", mirror)
    for stage in ("download", "split", "train", "evaluate"):
        project.stage(stage)
    return project


def make_project(repo: Path, mirror: tuple[Path, dict[str, str]]) -> "Project":
    folder, checksums = mirror
    for name in PROJECT_FILES:
        source, target = ROOT / name, repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target)
    (repo / "params.yaml").write_text(yaml.safe_dump(small_params(checksums), sort_keys=False))
    project = Project(repo, project_env(folder))
    project.run("git", "init", "-q", "-b", "main")
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "project under test")
    return project


class Project:
    def __init__(self, root: Path, env: dict[str, str]):
        self.root, self.env = root, env

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(command, cwd=self.root, env=self.env, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def stage(self, name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", f"stages.{name}", *args, check=check)

    def read(self, path: str) -> str:
        return (self.root / path).read_text()

    def params(self) -> dict:
        return yaml.safe_load(self.read("params.yaml"))

    def set_params(self, **sections) -> None:
        params = self.params()
        params.update(sections)
        (self.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
