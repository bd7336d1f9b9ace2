"""Comparing experiments and the pull-request report, on a project whose baseline has results."""

from __future__ import annotations

import re


def test_compare_reports_experiments_and_failures(reproduced):
    reproduced.run("dvc", "exp", "run", "--queue", "-n", "with-adam", "-S", "optimizer=adam")
    # capturable Adam passes validation but fails at the first step on a CPU.
    broken = ("-S", "+optimizers.adam.capturable=true", "-S", "optimizer=adam")
    reproduced.run("dvc", "exp", "run", "--queue", "-n", "broken", *broken)
    reproduced.run("dvc", "exp", "run", "--run-all")  # exits 0 although "broken" failed

    result = reproduced.run("python", "-m", "tools.compare")
    rows = {line.split(" | ")[0].strip("| "): line for line in reproduced.read("comparison.md").splitlines()[2:]}
    assert set(rows) == {"main", "with-adam", "broken"}
    header = reproduced.read("comparison.md").splitlines()[0]
    assert "| optimizer |" in header and "| test_accuracy |" in header
    assert " | adam | " in rows["with-adam"] and " | sgd | " in rows["main"]
    assert "**FAILED**" in rows["broken"] and "0." not in rows["broken"].split("**FAILED**")[0]
    assert "**FAILED**" not in rows["with-adam"]
    assert result.stdout == reproduced.read("comparison.md")
    assert (reproduced.root / "comparison.png").read_bytes().startswith(b"\x89PNG")

    chosen = reproduced.run("python", "-m", "tools.compare", "with-adam", "main").stdout.splitlines()
    assert [line.split(" | ")[0] for line in chosen[2:]] == ["| with-adam", "| main"]
    unknown = reproduced.run("python", "-m", "tools.compare", "nope", check=False)
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("error: no experiment or revision 'nope'; experiments here: main, ")


def test_pr_report_diffs_metrics_and_params_against_the_base(reproduced):
    reproduced.run("git", "checkout", "-qb", "change")
    reproduced.set_params(optimizer="adam")
    reproduced.run("dvc", "repro")

    result = reproduced.run("python", "-m", "tools.pr_report", "--base", "main")
    report = reproduced.read("pr-report.md")
    assert result.stdout == report
    assert report.startswith("<!-- mnist-pr-report -->\n## Pipeline report against `main`")
    assert re.search(r"\| metrics/evaluate\.json +\| test_accuracy +\|", report)
    assert re.search(r"\| params\.yaml +\| optimizer +\| sgd +\| adam +\|", report)
    assert "[Training and validation curves, base and this change overlaid](pr-curves.png)" in report
    assert (reproduced.root / "pr-curves.png").read_bytes().startswith(b"\x89PNG")

    missing = reproduced.run("python", "-m", "tools.pr_report", "--base", "no-such-branch", check=False)
    assert missing.returncode == 2 and missing.stderr.startswith("error: `git rev-parse")
