"""The grid as a user runs it: ``dvc repro grid/dvc.yaml``, then the committed leaderboard.

The project's params hold two recipes (mlp_20_sigmoid with sgd and with adam), two seeds, 3 epochs;
the ``reproduced`` project ran them once, and ``project`` is a copy of it.
The leaderboard's figures, ranking, ties and refusals are tested on hand-made runs in test_reports.py.
"""

from __future__ import annotations

import json
import shutil

import pytest

from stages.core.errors import PipelineError
from tools import leaderboard
from tools.grid import RUN_FILES


@pytest.mark.slow  # two grid runs: 20 s
def test_a_failing_recipe_is_reported_as_failed_and_the_grid_completes_once_it_is_fixed(project, monkeypatch):
    kept = {path: path.read_bytes() for path in (project.root / "grid/runs/mlp_20_sigmoid-adam").rglob("*.*")}
    sgd = {path: path.read_bytes() for path in (project.root / "grid/runs/mlp_20_sigmoid-sgd").rglob("*.csv")}
    # capturable Adam passes validation but fails at the first step on a CPU.
    optimizers = project.params()["optimizers"]
    optimizers["adam"]["capturable"] = True
    project.set_params(optimizers=optimizers)
    result = project.run("dvc", "repro", "--keep-going", "grid/dvc.yaml", check=False)
    assert result.returncode != 0
    assert "cell@mlp_20_sigmoid-adam" in result.stderr
    # catalog.yaml is every cell's dependency: the sgd cell runs again, to the same bits.
    assert "Running stage 'grid/dvc.yaml:cell@mlp_20_sigmoid-sgd'" in result.stdout
    assert {path: path.read_bytes() for path in sgd} == sgd
    assert "Running stage 'grid/dvc.yaml:leaderboard'" not in result.stdout  # DVC runs no stage after a failed one

    assert {path: path.read_bytes() for path in kept} == kept  # the last runs, kept (persist), never a mix of seeds
    monkeypatch.chdir(project.root)  # as `python -m tools.leaderboard` there, without importing torch again
    with pytest.raises(PipelineError) as error:
        leaderboard.main([])
    assert str(error.value) == (
        "grid/runs/mlp_20_sigmoid-adam/seed-42 was made with other params than catalog.yaml's "
        "grid.recipes.mlp_20_sigmoid-adam: run `dvc repro grid/dvc.yaml`"
    )  # never ranked beside the new params

    shutil.rmtree(project.root / "grid/runs/mlp_20_sigmoid-adam")  # as a recipe whose first run failed
    with pytest.raises(PipelineError) as error:
        leaderboard.main([])
    assert str(error.value) == (
        "1 of 2 recipes failed: mlp_20_sigmoid-adam (grid/runs/mlp_20_sigmoid-adam/seed-42/log.json not found); "
        "see `dvc repro grid/dvc.yaml`"
    )
    board = json.loads(project.read("metrics/leaderboard.json"))
    assert board["mlp_20_sigmoid-sgd"]["status"] == "ok"
    assert board["mlp_20_sigmoid-adam"]["status"] == "failed" and "test_accuracy" not in board["mlp_20_sigmoid-adam"]
    failed_row = project.read("metrics/leaderboard.md").splitlines()[3]
    assert failed_row.startswith("| - | mlp_20_sigmoid-adam | mlp_20_sigmoid | adam | none | **FAILED**: grid/runs/")
    assert "0." not in failed_row

    # Fixed: the cells run again (catalog.yaml changed once more), then the leaderboard.
    del optimizers["adam"]["capturable"]
    project.set_params(optimizers=optimizers)
    rerun = project.run("dvc", "repro", "grid/dvc.yaml").stdout
    assert "Running stage 'grid/dvc.yaml:cell@mlp_20_sigmoid-adam'" in rerun
    assert "Running stage 'grid/dvc.yaml:leaderboard'" in rerun
    for recipe in ("mlp_20_sigmoid-sgd", "mlp_20_sigmoid-adam"):
        for seed in (42, 43):
            assert sorted(path.name for path in (project.root / f"grid/runs/{recipe}/seed-{seed}").iterdir()) == sorted(
                (*RUN_FILES, "log.timings.json")  # the timings, beside the log: neither git's nor DVC's
            )

    board = json.loads(project.read("metrics/leaderboard.json"))
    assert list(board) == ["mlp_20_sigmoid-sgd", "mlp_20_sigmoid-adam"]
    assert sorted(entry["rank"] for entry in board.values()) == [1, 2]
    for entry in board.values():
        assert entry["status"] == "ok" and entry["seeds"] == 2
        assert entry["num_params"] == 784 * 20 + 20 + 20 * 10 + 10
        assert 0.5 < entry["best_valid_accuracy"]["mean"] <= 1 and entry["best_valid_accuracy"]["std"] >= 0
        assert 0.5 < entry["test_accuracy"]["mean"] <= 1
        assert entry["versus_best"] in ("best", "tied", "worse")
        assert not any("seconds" in key for key in entry)  # timings change every run: not for dvc metrics diff
    table = project.read("metrics/leaderboard.md").splitlines()
    assert table[0].startswith("| rank | recipe | arch | optimizer | schedule | best valid accuracy |")
    assert [row.split(" | ")[0] for row in table[2:4]] == ["| 1", "| 2"]
    assert "s/epoch" not in table[0]  # timings: in the printed table, never in a file git or DVC tracks
    assert "seeds 42, 43" in project.read("metrics/leaderboard.md")
    assert (project.root / "plots/grid_valid_accuracy.png").read_bytes().startswith(b"\x89PNG")

    assert "Running stage" not in project.run("dvc", "repro", "grid/dvc.yaml").stdout  # nothing left to do
    # Not a DVC metric (it would crowd `dvc exp show`), but `dvc metrics` reads it when named (README).
    assert "leaderboard" not in project.run("dvc", "metrics", "show", "--md").stdout
    shown = project.run("dvc", "metrics", "show", "--md", "metrics/leaderboard.json").stdout
    assert "mlp_20_sigmoid-adam.test_accuracy.mean" in shown
