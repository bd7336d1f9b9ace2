"""The grid sent to a cluster (``python -m tools.cluster run``, docs/many-hosts.md) and gathered
through DVC: a bare repository is the Git remote, a folder the DVC remote, and the engines are
real: a Dask scheduler and two workers as processes on 127.0.0.1, and submitit's local executor
for the Slurm path. What comes back is compared with the ``reproduced`` project's serial
``dvc repro grid/dvc.yaml`` of the same two cells."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from stages.core.errors import PipelineError
from tests.conftest import Project
from tools.cluster import connect, main, odd_fingerprints
from tools.cluster_task import cell_environment

# log.json's other fields name the machine (timings are in log.timings.json, never compared).
LOG_RESULTS = ("params_digest", "model_sha256", "fingerprint")
GRID_OUTPUTS = ("grid/runs", "grid/dvc.lock", "metrics/leaderboard.json", "metrics/leaderboard.md",
                "plots/grid_valid_accuracy.png")  # fmt: skip


def grid_results(root: Path) -> dict[str, object]:
    """Every file of the grid's runs and the leaderboard's JSON and figure, bit for bit, and each
    cell's lock entry; of log.json only the fields that are results, and of a lock entry all but the
    hash of its runs folder, since log.json's machine fields are in it."""
    found: dict[str, object] = {}
    for path in sorted((root / "grid/runs").rglob("*")):
        if path.is_file() and not path.name.endswith(".timings.json"):
            name = path.relative_to(root).as_posix()
            log = json.loads(path.read_text()) if path.name == "log.json" else None
            found[name] = {key: log[key] for key in LOG_RESULTS} if log else path.read_bytes()
    for name in ("metrics/leaderboard.json", "plots/grid_valid_accuracy.png"):
        if (root / name).exists():
            found[name] = (root / name).read_bytes()
    for name, entry in yaml.safe_load((root / "grid/dvc.lock").read_text())["stages"].items():
        if name.startswith("cell@"):
            found[name] = {key: value for key, value in entry.items() if key != "outs"}
    return found


@pytest.fixture
def to_send(project, tmp_path) -> tuple[Project, dict[str, object]]:
    return project, ready_to_send(project, tmp_path)


def ready_to_send(project: Project, tmp_path: Path) -> dict[str, object]:
    """The reproduced ``project`` made a commit without the grid's results, on a bare Git remote
    (``origin``) in ``tmp_path`` and its data in the DVC remote; returns the results the serial run gave."""
    one_machine = grid_results(project.root)
    project.run("git", "rm", "-rq", *GRID_OUTPUTS)
    project.run("git", "clean", "-qfdX", "grid/runs")  # the timings files git ignores: gone, as in a fresh clone
    project.run("git", "commit", "-qm", "the grid, to run on a cluster")
    origin = tmp_path / "origin.git"
    project.run("git", "init", "-q", "--bare", "-b", "main", str(origin))
    project.run("git", "remote", "add", "origin", str(origin))
    project.run("git", "push", "-q", "origin", "main")
    project.run("dvc", "push", "-q")  # the default remote: a folder beside the clone
    return one_machine


def workers_env(project: Project) -> dict[str, str]:
    """A worker's environment: no MNIST mirror (its data can only come from the DVC remote), one seed at a time."""
    return {key: value for key, value in project.env.items() if key != "MNIST_MIRRORS"}


@pytest.mark.slow
def test_dask_workers_give_the_serial_bits_even_when_one_dies_mid_cell(to_send, tmp_path):
    project, one_machine = to_send
    env = workers_env(project)
    address = tmp_path / "scheduler.json"
    dask = [str(Path(sys.executable).parent / "dask")]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True}
    scheduler_command = [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                         "--scheduler-file", str(address)]  # fmt: skip
    started = [subprocess.Popen(scheduler_command, env=env, cwd=tmp_path, **quiet)]
    try:
        for _ in range(300):
            if address.exists() or started[0].poll() is not None:
                break
            time.sleep(0.1)
        if not address.exists():
            pytest.skip("`dask scheduler` did not start on 127.0.0.1 within 30 s")
        scheduler = json.loads(address.read_text())["address"]
        temps = [tmp_path / f"worker-{number}" for number in (1, 2)]
        for temp in temps:  # each its own temporary folder, where its clones are
            temp.mkdir()
            worker = [*dask, "worker", scheduler, "--nthreads", "1", "--no-nanny", "--no-dashboard"]
            started.append(subprocess.Popen(worker, env={**env, "TMPDIR": str(temp)}, cwd=temp, **quiet))
        command = [sys.executable, "-m", "tools.cluster", "run", "--engine", "dask", "--scheduler", scheduler]
        running = subprocess.Popen(command, cwd=project.root, env=project.env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        # The first worker dies as its cell trains: its epoch checkpoints are written, its runs are not.
        while not list(temps[0].glob("mnist-cell-*/repo/models/checkpoints/*")):
            assert running.poll() is None, "\n".join(running.communicate())
            time.sleep(0.05)
        os.killpg(started[1].pid, signal.SIGKILL)
        out, err = running.communicate(timeout=120)
        assert running.returncode == 0, out + err
    finally:
        for process in started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    assert "2 cells of grid/dvc.yaml to run" in out and "2/2 cells done" in err
    assert "Running stage 'grid/dvc.yaml:leaderboard'" in out and "Running stage 'grid/dvc.yaml:cell" not in out
    assert project.run("dvc", "status", "grid/dvc.yaml").stdout.strip() == "Data and pipelines are up to date."
    assert grid_results(project.root) == one_machine


@pytest.mark.slow
def test_slurm_path_reports_a_failed_cell_with_its_log_keeps_the_other_and_sends_only_it_again(to_send):
    project, one_machine = to_send
    project.env = workers_env(project)  # submitit's local jobs inherit this environment
    optimizers = project.params()["optimizers"]
    optimizers["adam"]["capturable"] = True  # passes validation, fails at the first step on a CPU
    project.set_params(optimizers=optimizers)
    project.run("git", "commit", "-qam", "adam, capturable")
    project.run("git", "push", "-q", "origin", "main")

    first = project.tool("cluster", "run", "--engine", "slurm", "--slurm-local", check=False)
    assert first.returncode == 2, first.stdout + first.stderr
    assert "--- cell@mlp_20_sigmoid-adam failed on" in first.stderr and "capturable" in first.stderr
    assert first.stderr.rstrip().splitlines()[-1] == (
        "error: 1 of 2 cells not gathered: cell@mlp_20_sigmoid-adam; the 1 others are; "
        "run the same command again to send only those"
    )
    assert "Running stage 'grid/dvc.yaml:leaderboard'" not in first.stdout
    gathered = grid_results(project.root)
    # The sgd cell's files as one machine made them (its lock entry names the edited catalog.yaml).
    kept = {name: value for name, value in one_machine.items() if "sgd" in name and name.startswith("grid/runs/")}
    assert {name: value for name, value in gathered.items() if "sgd" in name and name.startswith("grid/runs/")} == kept
    assert not (project.root / "grid/runs/mlp_20_sigmoid-adam").exists()

    second = project.tool("cluster", "run", "--engine", "slurm", "--slurm-local", check=False)
    assert second.stdout.startswith("1 cells of grid/dvc.yaml to run at")  # only the one not gathered
    assert "cell@mlp_20_sigmoid-adam" in second.stdout.splitlines()[0] and second.returncode == 2

    del optimizers["adam"]["capturable"]  # catalog.yaml is every cell's dependency: both run again
    project.set_params(optimizers=optimizers)
    project.run("git", "commit", "-qam", "adam, as it was")
    project.run("git", "push", "-q", "origin", "main")
    project.tool("cluster", "run", "--engine", "slurm", "--slurm-local")
    assert grid_results(project.root) == one_machine
    assert project.run("dvc", "status", "grid/dvc.yaml").stdout.strip() == "Data and pipelines are up to date."


def test_a_cell_runs_without_what_a_dask_nanny_sets_for_its_worker():
    dask = pytest.importorskip("dask")
    pytest.importorskip("distributed")  # registers the nanny's defaults
    nanny = {key: str(value) for key, value in dask.config.get("distributed.nanny.pre-spawn-environ").items()}
    assert "MALLOC_TRIM_THRESHOLD_" in nanny
    environ = {**nanny, "PATH": "/usr/bin", "HOME": "/home/worker"}
    env = cell_environment(environ)
    assert not set(nanny) & set(env)
    assert env["HOME"] == "/home/worker" and env["PATH"].endswith(os.pathsep + "/usr/bin")


def test_a_cell_of_another_fingerprint_is_refused_with_one_line_naming_it_and_both():
    refused = odd_fingerprints({"cell@a": "cpu-portable-1", "cell@b": "cpu-portable-2", "cell@c": "cpu-portable-1"})
    assert refused == {
        "cell@b": "grid/dvc.yaml:cell@b was computed as cpu-portable-2 but the other cells as cpu-portable-1, so "
        "their figures do not compare bit for bit: run it on a worker like the others (docs/many-hosts.md)"
    }
    assert odd_fingerprints({"cell@a": "cpu-portable-1", "cell@b": "cpu-portable-1"}) == {}


def test_an_unknown_engine_is_one_line_naming_it_and_the_choices(reproduced):
    result = reproduced.tool("cluster", "run", "--engine", "ray", check=False)
    assert result.returncode == 2
    assert result.stderr == "error: --engine 'ray' is not an engine: choose one of dask, slurm\n"


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--workers", "0"], "--workers 0 is not a number of workers: give 1 or more"),
        (["--scheduler", "not a url"], "--scheduler 'not a url' is not a Dask scheduler's address: give tcp://HOST:"),
        (["--scheduler", ""], "--scheduler '' is not a Dask scheduler's address"),
        (["--scheduler", "tcp://127.0.0.1"], "--scheduler 'tcp://127.0.0.1' is not"),
        (["--scheduler", "tcp://127.0.0.1:99999"], "--scheduler 'tcp://127.0.0.1:99999' is not"),
        (["--engine", "slurm", "--slurm-minutes", "-5"], "--slurm-minutes -5 is not a time limit: give 1 or more"),
        (["--engine", "slurm"], "--engine slurm needs Slurm, and no sbatch or squeue is on PATH: run it on a Slurm"),
    ],
    ids=[
        "no-workers",
        "not-an-address",
        "empty-address",
        "no-port",
        "port-out-of-range",
        "negative-minutes",
        "no-slurm",
    ],
)
def test_a_bad_argument_is_one_line_naming_it_before_anything_is_contacted(tmp_path, monkeypatch, args, named):
    monkeypatch.chdir(tmp_path)  # no repository, and no git, dvc or Slurm on PATH: nothing to contact
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PipelineError) as error:
        main(["run", *args])
    assert str(error.value).startswith(named) and "\n" not in str(error.value)


def test_a_scheduler_that_does_not_answer_is_one_line_naming_it():
    pytest.importorskip("distributed")
    with pytest.raises(PipelineError) as error:
        connect("tcp://127.0.0.1:1", seconds=2)  # nothing listens on port 1: refused, retried until the timeout
    assert str(error.value) == (
        "no Dask scheduler answered at tcp://127.0.0.1:1 within 2 s: start one there (docs/many-hosts.md) "
        "or correct --scheduler"
    )
