"""The everyday DVC loop as a user meets it: a rerun that gives the same bits leaves git and DVC clean,
and a typo in `dvc exp run -S` is the project's line naming the choices, then how to get back."""

from __future__ import annotations

import json

import pytest

from stages.core.params import load_raw

TYPOS = {"arch": ("lenet6", "architectures"), "optimizer": ("rmsprp", "optimizers"), "schedule": ("cosin", "schedules")}


def test_timings_are_files_neither_git_nor_dvc_tracks(project):
    """What keeps a rerun clean, without one (the rerun itself is the slow test below): new timings
    beside a log, in a grid cell's runs folder too, change neither `git status` nor `dvc status`."""
    for log in ("logs/train.json", "logs/evaluate.json", "grid/runs/mlp_20_sigmoid-sgd/seed-42/log.json"):
        assert "seconds" not in project.read(log)
        timings = project.root / log.replace(".json", ".timings.json")
        timings.write_text(json.dumps({**json.loads(timings.read_text()), "seconds_per_epoch": 1e9}))
    assert project.run("git", "status", "--porcelain").stdout == ""
    for pipeline in ("dvc.yaml", "grid/dvc.yaml"):
        assert "Data and pipelines are up to date" in project.run("dvc", "status", pipeline).stdout


@pytest.mark.slow  # four stages run again: 30 s
def test_a_rerun_that_gives_the_same_bits_leaves_git_and_dvc_clean(project):
    """As on a fresh clone, whose model is not in the cache: train, evaluate, a grid cell and the
    leaderboard run again; their timings change, the files git and DVC track do not."""
    before = project.read("logs/train.timings.json")
    stages = ("train", "evaluate", "grid/dvc.yaml:cell@mlp_20_sigmoid-sgd", "grid/dvc.yaml:leaderboard")
    project.run("dvc", "repro", "--force", "--single-item", *stages)
    assert project.run("git", "status", "--porcelain").stdout == ""
    for pipeline in ("dvc.yaml", "grid/dvc.yaml"):
        assert "Data and pipelines are up to date" in project.run("dvc", "status", pipeline).stdout
    assert project.read("logs/train.timings.json") != before  # timings are still written, where nothing tracks them
    seed = json.loads(project.read("grid/runs/mlp_20_sigmoid-sgd/seed-42/log.timings.json"))
    assert seed["seconds_per_epoch"] > 0


def test_a_typo_in_exp_run_is_the_projects_line_naming_the_choices_then_how_to_get_back(project):
    failed = project.run("dvc", "exp", "run", "-S", "optimizer=rmsprp", check=False)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0 and "Epoch" not in output  # nothing trained
    error = next(line for line in output.splitlines() if line.startswith("error: "))
    assert "'rmsprp'" in error and all(name in error for name in load_raw(project.root / "params.yaml")["optimizers"])
    assert "missing from" not in output  # DVC's own message, which names no choices
    hint = next(line for line in output.splitlines() if "git checkout --" in line)
    assert hint.startswith("params.yaml keeps this run's values")
    project.run(*hint.split(": ", 1)[1].split())  # as a user copies it
    assert project.run("git", "status", "--porcelain").stdout == ""


@pytest.mark.parametrize("key", ["arch", "schedule"])
def test_the_recipe_stage_names_the_choices_and_keeps_the_last_recipe(project, in_process, monkeypatch, key):
    typo, section = TYPOS[key]
    before = project.read("recipe.yaml")
    project.set_params(**{key: typo})
    code, _, err = in_process(project, "recipe")
    assert code == 2 and len(err.splitlines()) == 1  # outside DVC: the one line
    assert f"{key} = '{typo}'" in err and all(name in err for name in project.params()[section])
    monkeypatch.setenv("DVC_ROOT", str(project.root))
    code, _, err = in_process(project, "recipe")
    assert code == 2 and err.splitlines()[1] == (
        "params.yaml keeps this run's values (`dvc exp run -S` writes them there); to get back to the last "
        "commit's: git checkout -- params.yaml"
    )
    assert project.read("recipe.yaml") == before
