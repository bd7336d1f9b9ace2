"""The pull-request report: what a change did to the metrics and params, against the base branch.

The same markdown locally and in CI (``.github/workflows/pr.yml`` only posts it): ``dvc metrics
diff`` of every metrics file (the single run and every cell of the leaderboard), ``dvc params
diff``, and a figure of the base's curves and the workspace's overlaid.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.core import atomic
from stages.core.errors import run_stage
from tools import vcs
from tools.report import plot_curves

MARKER = "<!-- mnist-pr-report -->"
"""First line of the comment, so CI finds and updates its own comment instead of adding one."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="origin/main", help="branch or revision the change goes into")
    parser.add_argument("--markdown", type=Path, default=Path("pr-report.md"))
    parser.add_argument("--figure", type=Path, default=Path("pr-curves.png"))
    parser.add_argument("--figure-url", help="where readers find the figure (CI: the run's artifacts)")
    args = parser.parse_args()

    base = vcs.output("git", "rev-parse", "--verify", "--quiet", f"{args.base}^{{commit}}").strip()
    plot_curves(
        args.figure,
        {f"base ({args.base})": vcs.curves_at(base), "this change": vcs.curves_at(vcs.WORKSPACE)},
        ["train_loss", "valid_loss", "valid_accuracy"],
        title=f"Training curves: {args.base} vs this change",
    )
    report = pr_markdown(
        args.base,
        metrics=vcs.output("dvc", "metrics", "diff", "--md", "--all", base),
        params=vcs.output("dvc", "params", "diff", "--md", base),
        figure=args.figure_url or str(args.figure),
    )
    atomic.write_text(args.markdown, report)
    print(report, end="")


def pr_markdown(base: str, metrics: str, params: str, figure: str) -> str:
    """``figure`` is a link: a PR comment cannot hold an image, so CI uploads it as an artifact."""
    return (
        f"{MARKER}\n## Pipeline report against `{base}`\n\n"
        f"### Metrics\n\n{metrics.strip() or 'No metrics.'}\n\n"
        f"### Params\n\n{params.strip() or 'No params changed.'}\n\n"
        f"### Curves\n\n[Training and validation curves, base and this change overlaid]({figure})\n"
    )


if __name__ == "__main__":
    run_stage(main)
