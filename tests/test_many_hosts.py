"""The grid split across hosts, as docs/many-hosts.md runs it: each host runs its recipes as DVC
experiments and pushes them to the shared Git remote (a bare repository here) and the shared DVC
remote; a third clone pulls them and builds the leaderboard. Two clones stand in for two hosts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from tests.conftest import TWO_RECIPES, Project

# log.json's other fields are timings and the machine's name.
LOG_RESULTS = ("params_digest", "model_sha256", "fingerprint")
GRID_OUTPUTS = ("grid/runs", "grid/dvc.lock", "metrics/leaderboard.json", "metrics/leaderboard.md",
                "plots/grid_valid_accuracy.png")  # fmt: skip


def grid_results(root: Path) -> dict[str, object]:
    """Every file of the grid's runs and the leaderboard's JSON, bit for bit; of log.json, only
    the fields that are results."""
    found: dict[str, object] = {}
    for path in sorted((root / "grid/runs").rglob("*")):
        if path.is_file():
            name = path.relative_to(root).as_posix()
            log = json.loads(path.read_text()) if path.name == "log.json" else None
            found[name] = {key: log[key] for key in LOG_RESULTS} if log else path.read_bytes()
    found["metrics/leaderboard.json"] = (root / "metrics/leaderboard.json").read_bytes()
    return found


def test_a_grid_split_across_two_hosts_gives_the_bits_of_one_machine(project, tmp_path):
    one_machine = grid_results(project.root)  # the fixture ran `dvc repro grid/dvc.yaml` here
    assert len(one_machine) == len(TWO_RECIPES) * 2 * 5 + 1  # 2 seeds, 5 files each

    # The commit to run: the same code and params, the grid's results gone.
    project.run("git", "rm", "-rq", *GRID_OUTPUTS)
    project.run("git", "commit", "-qm", "the grid, to run on two hosts")
    origin = tmp_path / "origin.git"
    project.run("git", "init", "-q", "--bare", "-b", "main", str(origin))
    project.run("git", "push", "-q", str(origin), "main")
    project.run("dvc", "push", "-q")  # the default remote: a folder beside the clones

    no_mirror = {key: value for key, value in project.env.items() if key != "MNIST_MIRRORS"}

    def clone(name: str) -> Project:
        """A clone with no MNIST mirror: its data can only come from the DVC remote."""
        project.run("git", "clone", "-q", str(origin), str(tmp_path / name))
        host = Project(tmp_path / name, no_mirror)
        # An absolute URL: DVC 3.67 resolves the relative default against / in `dvc exp push/pull`.
        host.run("dvc", "remote", "modify", "--local", "shared", "url", str(tmp_path / "mnist-dvc-remote"))
        return host

    hosts = {recipe: clone(f"host-{number}") for number, recipe in enumerate(TWO_RECIPES, start=1)}
    running = {}
    for recipe, host in hosts.items():  # at the same time, as hosts would
        command = ["dvc", "exp", "run", "--pull", "--allow-missing", "-n", recipe, f"grid/dvc.yaml:cell@{recipe}"]
        with open(tmp_path / f"{recipe}.log", "w") as log:
            running[recipe] = subprocess.Popen(command, cwd=host.root, env=host.env, stdout=log, stderr=log)
    for recipe, process in running.items():
        assert process.wait() == 0, (tmp_path / f"{recipe}.log").read_text()
    for recipe, host in hosts.items():
        host.run("dvc", "exp", "push", "origin", recipe)

    base = project.run("git", "rev-parse", "HEAD").stdout.strip()
    refs = {recipe: f"refs/exps/{base[:2]}/{base[2:]}/{recipe}" for recipe in TWO_RECIPES}
    for recipe, ref in refs.items():  # each host ran its part of the grid, and only that
        changed = project.run("git", "--git-dir", str(origin), "diff", "--name-only", "main", ref).stdout.split()
        assert changed and all(
            path == "grid/dvc.lock" or path.startswith(f"grid/runs/{recipe}/") for path in changed
        ), changed

    lab = clone("lab")
    lab.run("dvc", "exp", "pull", "origin")  # every experiment on HEAD, with the data it names
    lab.run("dvc", "checkout", "dvc.yaml")  # no mirror, no `dvc pull`: the data came with the experiments
    cells = [f"grid/dvc.yaml:cell@{recipe}" for recipe in TWO_RECIPES]
    for recipe, ref in refs.items():
        lab.run("git", "checkout", ref, "--", f"grid/runs/{recipe}")
    lab.run("dvc", "commit", "-f", *cells)
    built = lab.run("dvc", "repro", "grid/dvc.yaml").stdout
    assert "Running stage 'grid/dvc.yaml:leaderboard'" in built and "Running stage 'grid/dvc.yaml:cell" not in built
    assert lab.run("dvc", "status", "grid/dvc.yaml").stdout.strip() == "Data and pipelines are up to date."
    lock = yaml.safe_load(lab.read("grid/dvc.lock"))["stages"]
    for recipe, ref in refs.items():  # `dvc commit` wrote what the host's experiment recorded
        ran = yaml.safe_load(lab.run("git", "show", f"{ref}:grid/dvc.lock").stdout)["stages"]
        assert lock[f"cell@{recipe}"] == ran[f"cell@{recipe}"]

    assert grid_results(lab.root) == one_machine
