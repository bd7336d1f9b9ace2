"""Comparing experiments and the pull-request report, on a project whose baseline has results and
whose queue ran two experiments, one of which failed. The text itself is tested on made-up runs in
test_reports.py."""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
import subprocess
from pathlib import Path

import numpy
import pytest
from PIL import Image

from stages.core.errors import PipelineError
from stages.core.params import load_params
from tools import compare, pr_report


@pytest.fixture(scope="module")
def queued(reproduced, tmp_path_factory):
    """``reproduced`` with experiment ``with-adam`` and the failed ``broken`` run through the queue.
    The compare test only reads it; the PR test takes a copy. Over 20 s: DVC's queue runs each
    experiment in a worker process of its own, and that is what the tools must read."""
    project = reproduced.copy(tmp_path_factory.mktemp("queued") / "repo")
    project.run("dvc", "exp", "run", "--queue", "-n", "with-adam", "-S", "optimizer=adam")
    # capturable Adam passes validation but fails at the first step on a CPU.
    broken = ("-S", "catalog.yaml:+optimizers.adam.capturable=true", "-S", "optimizer=adam")
    project.run("dvc", "exp", "run", "--queue", "-n", "broken", *broken)
    project.run("dvc", "exp", "run", "--run-all")  # exits 0 although "broken" failed
    return project


def in_project(project, monkeypatch) -> None:
    """Runs a tool's ``main`` in this process as ``python -m tools.<name>`` would run in the project
    (the first call of each tool does, end to end): the same code, without importing torch again."""
    monkeypatch.chdir(project.root)
    for name in ("PATH", "DVC_NO_ANALYTICS"):
        monkeypatch.setenv(name, project.env[name])


def table_rows(markdown: str) -> dict[str, list[str]]:
    rows = [[cell.strip() for cell in line[1:-1].split(" | ")] for line in markdown.splitlines()[2:] if line[:1] == "|"]
    return {row[0]: row for row in rows}


def test_compare_shows_what_each_run_used_its_failure_and_whether_it_differs_beyond_noise(queued, monkeypatch):
    result = queued.tool("compare")
    markdown = queued.read("comparison.md")
    assert result.stdout == markdown + "\ncomparison.png: their curves overlaid, on one scale per panel\n"
    header = markdown.splitlines()[0]
    assert header.startswith("| experiment | rev | status | arch | optimizer | schedule |")
    assert "| optimizer.lr |" in header and "optimizers." not in header and header.endswith("| vs main |")
    rows = table_rows(markdown)
    assert list(rows) == ["main", "with-adam", "broken", "workspace"]
    column = header.split(" | ").index("optimizer.lr")
    assert (rows["main"][4], rows["main"][column]) == ("sgd", "0.1")
    assert (rows["with-adam"][4], rows["with-adam"][column]) == ("adam", "0.001")
    assert rows["main"][-1] == "reference"
    # mlp_128_64_relu is not in this grid: no seed spread, so a difference is one model each's
    assert re.fullmatch(r"[+-]\d\.\d{4}, p [=<] \d\.\d{4}: (within test-set noise|differs on the test images "
                        r"\(one model each\))", rows["with-adam"][-1])  # fmt: skip
    assert rows["broken"][2] == "**FAILED**: AssertionError: If capturable=True, params and state_steps must be on " \
        "supported devices: ['cuda', 'xpu', 'hpu', 'privateuseone', 'xla']."  # fmt: skip
    assert rows["broken"][4] == "adam" and set(rows["broken"][-6:]) == {"-"}
    assert rows["workspace"][1] == "-" and rows["workspace"][4] == "sgd"
    assert "- with-adam vs main: test accuracy " in markdown
    assert (queued.root / "comparison.png").read_bytes().startswith(b"\x89PNG")

    main = queued.run("git", "rev-parse", "--short", "main").stdout.strip()
    in_project(queued, monkeypatch)
    compare.main(["with-adam", "HEAD", main])
    chosen = queued.read("comparison.md")
    assert list(table_rows(chosen)) == ["with-adam", "HEAD", main]
    assert chosen.splitlines()[0].endswith("| vs with-adam |")

    with pytest.raises(PipelineError) as error:
        compare.main(["HEAD~1"])  # the commit before the baseline's results
    assert str(error.value) == "logs/train.json not found at HEAD~1: run `dvc repro` there and commit its results"


def test_pr_report_leads_with_the_answer_and_refuses_results_that_do_not_belong_together(queued, tmp_path, monkeypatch):
    project = queued.copy(tmp_path / "repo")
    project.run("dvc", "exp", "branch", "with-adam", "change")  # a pull request made of an experiment
    project.run("git", "checkout", "-q", "change")
    project.run("dvc", "checkout", "-q")
    with open(project.root / "tools/compare.py", "a") as code:
        code.write("# a change to the code\n")
    project.run("git", "commit", "-qam", "a code change")

    result = project.tool("pr_report", "--base", "main")
    report = project.read("pr-report.md")
    assert result.stdout == pr_report.terminal_summary(report, "pr-report.md", "pr-curves.png")
    lines = report.splitlines()
    assert lines[:4] == [
        "<!-- mnist-pr-report -->",
        "## Pipeline report: `change` (this change) against `main`",
        "",
        "| metric | main | this change | Δ |",
    ]
    assert lines[6].startswith("| test loss | ") and lines[7].startswith("| best validation accuracy | ")
    assert lines[9] == pr_report.ONE_MODEL_EACH + "  "
    assert lines[10].startswith("test accuracy ") and "McNemar p" in lines[10]
    assert lines[12] == "**Params changed:** `optimizer` sgd → adam  "
    assert lines[13] == "**Code changed:** 1 file: `tools/compare.py` (+1 −0)  "
    assert re.fullmatch(r"\*\*Numerics:\*\* cpu-portable-\w{8} on both \(torch .*, cpu, 1 thread\)", lines[14])
    changed = report[report.index("### Metrics that changed") : report.index("### Curves")]
    assert re.search(r"\| metrics/evaluate\.json \| test_loss \| \d\.\d{4} \| \d\.\d{4} \| [+-]\d\.\d{4} \|", changed)
    # per-class accuracy and the leaderboard are no DVC metrics, yet in the report as before
    assert "| metrics/per_class_accuracy.json | 3 |" in report and "| metrics/leaderboard.json |" in report
    assert "num_params" not in changed and "num_params" in report[report.index("<details>") :]
    assert "[Training and validation curves, base and this change overlaid](pr-curves.png)" in report
    assert "Warning" not in report and "workspace" not in report and not re.search(r"\b[0-9a-f]{40}\b", report)
    assert (project.root / "pr-curves.png").read_bytes().startswith(b"\x89PNG")

    project.set_params(optimizer="sgd")  # params edited, not reproduced: the results are adam's
    in_project(project, monkeypatch)
    with pytest.raises(PipelineError, match=r"^logs/train\.json was made with other params than params\.yaml "
                       r"\(digest \w{16}, params\.yaml's \w{16}\): run `dvc repro`$"):  # fmt: skip
        pr_report.main(["--base", "main"])


NOT_DATA = {"Experiment", "rev", "typ", "Created", "parent", "State", "Executor"}
"""`dvc exp show`'s own columns, before the metrics."""


def readme_exp_show() -> list[str]:
    """README's everyday `dvc exp show` command, as a user copies it."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    return shlex.split(re.search(r"^(dvc exp show --only-changed .*?)\s+#", readme, re.MULTILINE)[1])


def shown_accuracies(project, command: list[str], columns: int) -> dict[str, float]:
    """Each experiment's test accuracy as a ``columns``-wide terminal shows ``command``'s table (a
    failed experiment has none)."""
    table = subprocess.run([*command, "--no-pager"], cwd=project.root, env={**project.env, "COLUMNS": str(columns)},
                           capture_output=True, text=True, check=True).stdout.splitlines()  # fmt: skip
    assert all(len(line) <= columns for line in table)
    end = table[1].index("test_accuracy") + len("test_accuracy")  # figures are right-aligned under their header
    rows = [line for line in table if "[" in line and "]" in line]
    shown = {line.split("[", 1)[1].split("]", 1)[0]: line[:end].split()[-1] for line in rows}
    return {name: float(value) for name, value in shown.items() if value.replace(".", "", 1).isdigit()}


def test_readmes_experiment_table_shows_each_accuracy_and_choice_in_120_columns(queued):
    """README's `dvc exp show` form: the accuracies and what changed, in a 120-column terminal; the
    bare table too keeps the test accuracy in view, though not every param (docs/experiments.md)."""
    bare = list(csv.DictReader(io.StringIO(queued.run("dvc", "exp", "show", "--csv").stdout)))
    columns = [column for column in bare[0] if column not in NOT_DATA]
    assert columns[0] == "test_accuracy"  # the first metric: the last one a narrow table folds
    assert not any(column.startswith(("grid.", "per_class", "optimizers.", "stages/core/")) for column in columns)
    expected = {row["Experiment"]: float(row["test_accuracy"]) for row in bare if row["Experiment"]}
    assert shown_accuracies(queued, ["dvc", "exp", "show"], 120) == pytest.approx(expected, abs=1e-5)

    command = readme_exp_show()
    shown = next(csv.reader(io.StringIO(queued.run(*command, "--csv").stdout)))
    first = [column for column in shown if column not in NOT_DATA][:3]
    assert first == ["test_accuracy", "best_valid_accuracy", "optimizer"]
    assert not set(shown) & {"test_loss", "valid_accuracy", "best_epoch", "num_params", "architecture.hidden"}
    assert shown_accuracies(queued, command, 120) == pytest.approx(expected, abs=1e-5)
    table = queued.run("env", "COLUMNS=120", *command, "--no-pager").stdout
    assert " adam " in table.split("[with-adam]", 1)[1].splitlines()[0]  # the param that changed, in its row


def test_compare_draws_both_runs_curves_overlaid_offline_named_by_what_each_chose(queued, monkeypatch, tmp_path):
    """README's way to see what an experiment did to the curves: a PNG, so nothing to load from the
    internet, as `dvc plots diff`'s HTML does (vega from a CDN: blank offline)."""
    in_project(queued, monkeypatch)
    figure = tmp_path / "curves.png"
    compare.main(["main", "with-adam", "--markdown", str(tmp_path / "comparison.md"), "--figure", str(figure)])
    entries = compare.parse_exp_show(json.loads(queued.run("dvc", "exp", "show", "--json").stdout))
    runs = [compare.load(entry) for entry in compare.select(entries, ["main", "with-adam"])]
    assert list(compare.curves(runs)) == ["main (mlp_128_64_relu, sgd)", "with-adam (mlp_128_64_relu, adam)"]
    pixels = numpy.asarray(Image.open(figure).convert("RGB")).astype(int)
    for panel in numpy.array_split(pixels, 3, axis=1):  # training loss, validation loss, validation accuracy
        for color in ((31, 119, 180), (255, 127, 14)):  # matplotlib's first two line colours: both runs drawn
            assert (numpy.abs(panel - color).sum(axis=2) < 30).sum() > 200, color


@pytest.mark.slow  # a worktree and two trained cells: 20 s
def test_the_seeded_check_reuses_the_grids_runs_and_trains_each_side_with_its_own_code(project):
    """The base is a recipe of this grid; then a configuration of none, with a code change: one real
    run of stages.cell per side (--seeds 1), the base's in a checkout of the base."""
    project.set_params(arch="mlp_20_sigmoid")
    project.run("git", "commit", "-qam", "the sigmoid MLP, whose sgd and adam runs the grid holds")
    project.set_params(optimizer="adam")
    reused = project.tool("seeded", "--base", "HEAD").stdout
    assert re.fullmatch(
        r"\*\*Across seeds:\*\* (better|worse|tied within training noise): test accuracy [+-]\d\.\d{4} \(95% CI "
        r"[+-]\d\.\d{4} to [+-]\d\.\d{4}, paired by seed\) on average over seeds 42, 43\.",
        reused.splitlines()[0],
    )
    assert reused.endswith("- Runs: HEAD: reused from grid/runs/mlp_20_sigmoid-sgd/ at HEAD; this change: reused "
                           "from grid/runs/mlp_20_sigmoid-adam/ at HEAD.\n")  # fmt: skip
    assert not (project.root / "seeded").exists()  # a pull request pays only for runs the grid lacks

    project.set_params(optimizer="momentum")  # in no recipe of the grid
    project.run("git", "commit", "-qam", "momentum")
    with open(project.root / "stages/core/training.py", "a") as code:
        code.write("# a change to the training code\n")
    trained = project.tool("seeded", "--base", "HEAD", "--seeds", "1")
    assert trained.stdout == project.read("seeded.md") and "Epoch : 3/3" in trained.stderr
    assert trained.stdout.startswith("**Across seeds:** no verdict (one seed): test accuracy +0.0000 on average over")
    assert trained.stdout.endswith("- Runs: HEAD: trained here with HEAD's code (seeded/base/runs/); this change: "
                                   "trained here (seeded/head/runs/).\n")  # fmt: skip
    assert len(project.run("git", "worktree", "list").stdout.splitlines()) == 1  # the checkout is removed after
    base, head = (json.loads(project.read(f"seeded/{side}/runs/seed-42/log.json")) for side in ("base", "head"))
    assert head["params_digest"] == load_params(project.root / "params.yaml").recipe().digest
    assert base["model_sha256"] == head["model_sha256"]  # a comment changes no bit: each side ran its own code
