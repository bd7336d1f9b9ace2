"""Comparing experiments and the pull-request report, on a project whose baseline has results."""

from __future__ import annotations

import re

import pytest


@pytest.fixture
def trained(project):
    """The baseline reproduced and committed, as on a project's main branch."""
    project.run("dvc", "repro")
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "baseline results")
    return project


def test_compare_reports_experiments_and_failures(trained):
    trained.run("dvc", "exp", "run", "--queue", "-n", "with-adam", "-S", "optimizer=adam")
    # capturable Adam passes validation but fails at the first step on a CPU.
    broken = ("-S", "+optimizers.adam.capturable=true", "-S", "optimizer=adam")
    trained.run("dvc", "exp", "run", "--queue", "-n", "broken", *broken)
    trained.run("dvc", "exp", "run", "--run-all")  # exits 0 although "broken" failed

    result = trained.run("python", "-m", "tools.compare")
    rows = {line.split(" | ")[0].strip("| "): line for line in trained.read("comparison.md").splitlines()[2:]}
    assert set(rows) == {"main", "with-adam", "broken"}
    header = trained.read("comparison.md").splitlines()[0]
    assert "| optimizer |" in header and "| test_accuracy |" in header
    assert " | adam | " in rows["with-adam"] and " | sgd | " in rows["main"]
    assert "**FAILED**" in rows["broken"] and "0." not in rows["broken"].split("**FAILED**")[0]
    assert "**FAILED**" not in rows["with-adam"]
    assert result.stdout == trained.read("comparison.md")
    assert (trained.root / "comparison.png").read_bytes().startswith(b"\x89PNG")

    chosen = trained.run("python", "-m", "tools.compare", "with-adam", "main").stdout.splitlines()
    assert [line.split(" | ")[0] for line in chosen[2:]] == ["| with-adam", "| main"]
    unknown = trained.run("python", "-m", "tools.compare", "nope", check=False)
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("error: no experiment or revision 'nope'; experiments here: main, ")


def test_pr_report_diffs_metrics_and_params_against_the_base(trained):
    trained.run("git", "checkout", "-qb", "change")
    trained.set_params(optimizer="adam")
    trained.run("dvc", "repro")

    result = trained.run("python", "-m", "tools.pr_report", "--base", "main")
    report = trained.read("pr-report.md")
    assert result.stdout == report
    assert report.startswith("<!-- mnist-pr-report -->\n## Pipeline report against `main`")
    assert re.search(r"\| metrics/evaluate\.json +\| test_accuracy +\|", report)
    assert re.search(r"\| params\.yaml +\| optimizer +\| sgd +\| adam +\|", report)
    assert "[Training and validation curves, base and this change overlaid](pr-curves.png)" in report
    assert (trained.root / "pr-curves.png").read_bytes().startswith(b"\x89PNG")

    missing = trained.run("python", "-m", "tools.pr_report", "--base", "no-such-branch", check=False)
    assert missing.returncode == 2 and missing.stderr.startswith("error: `git rev-parse")
