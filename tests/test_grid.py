"""The grid as a user runs it: ``dvc repro grid/dvc.yaml``, then the committed leaderboard."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def grid_project(project):
    """Two cells: one architecture with two optimizers."""
    params = project.params()
    project.set_params(
        arch="mlp_20_sigmoid",
        architectures={"mlp_20_sigmoid": params["architectures"]["mlp_20_sigmoid"]},
        optimizers={name: params["optimizers"][name] for name in ("sgd", "adam")},
    )
    project.run("git", "commit", "-qam", "a two-cell grid")
    return project


def test_grid_runs_every_cell_and_writes_the_leaderboard(grid_project):
    grid_project.run("dvc", "repro", "grid/dvc.yaml")
    board = json.loads(grid_project.read("metrics/leaderboard.json"))
    assert list(board) == ["mlp_20_sigmoid-sgd", "mlp_20_sigmoid-adam"]
    for entry in board.values():
        assert entry["status"] == "ok"
        assert entry["test_accuracy"] > 0.5
        assert entry["num_params"] == 784 * 20 + 20 + 20 * 10 + 10
        assert 1 <= entry["best_epoch"] <= 3
        assert "seconds_per_epoch" not in entry  # timings change every run: not for dvc metrics diff
    table = grid_project.read("metrics/leaderboard.md").splitlines()
    assert table[0].startswith("| arch | optimizer | status | test_accuracy")
    assert table[0].endswith("| seconds_per_epoch |") and float(table[2].split("|")[-2]) > 0
    assert len(table) == 4
    figure = grid_project.root / "plots/grid_valid_accuracy.png"
    assert figure.read_bytes().startswith(b"\x89PNG")
    # The single configuration is untouched, and a second run has nothing to do.
    assert not (grid_project.root / "metrics/train.json").exists()
    assert "Running stage" not in grid_project.run("dvc", "repro", "grid/dvc.yaml").stdout
    # Bytes are reproducible: the leaderboard again from the same files is identical.
    before = figure.read_bytes()
    grid_project.run("python", "-m", "tools.leaderboard")
    assert figure.read_bytes() == before
    assert "metrics/leaderboard.json" in grid_project.run("dvc", "metrics", "show", "--md").stdout


def test_a_failing_cell_fails_the_grid_and_is_reported_as_failed(grid_project):
    # capturable Adam passes validation but fails at the first step on a CPU.
    params = grid_project.params()
    params["optimizers"]["adam"]["capturable"] = True
    grid_project.set_params(optimizers=params["optimizers"])
    result = grid_project.run("dvc", "repro", "--keep-going", "grid/dvc.yaml", check=False)
    assert result.returncode != 0
    assert "train@mlp_20_sigmoid-adam" in result.stderr + result.stdout
    assert not (grid_project.root / "metrics/leaderboard.json").exists()

    report = grid_project.run("python", "-m", "tools.leaderboard", check=False)
    assert report.returncode == 2
    assert report.stderr.startswith("error: 1 of 2 configurations failed: mlp_20_sigmoid-adam (")
    board = json.loads(grid_project.read("metrics/leaderboard.json"))
    assert board["mlp_20_sigmoid-sgd"]["status"] == "ok"
    assert board["mlp_20_sigmoid-adam"]["status"] == "failed"
    assert "test_accuracy" not in board["mlp_20_sigmoid-adam"]
    failed_row = grid_project.read("metrics/leaderboard.md").splitlines()[-1]
    assert failed_row.startswith("| mlp_20_sigmoid | adam | **FAILED**") and "0." not in failed_row
