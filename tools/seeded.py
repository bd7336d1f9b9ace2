"""The seeded check of a change: the base's configuration and this change's, each trained with the
grid's seeds, compared seed by seed (the leaderboard's rule) and image by image (McNemar).

One trained model per side measures test-set noise only: McNemar asks whether two models differ on
the same test images, not whether another seed would order them the same way. Here both sides are
trained with the same seeds (params.yaml's ``seed`` and catalog.yaml's ``grid.seeds`` after it, or ``--seeds``),
so a change of seed alone is tied by construction. The verdict is the paired Student t interval of
the per-seed difference in test accuracy (``stats.compare_seeds``): better, worse, or tied within
training noise; best validation accuracy (the leaderboard's metric) and McNemar on the predictions of
all seeds pooled are shown beside it.

A side whose configuration is a grid recipe at the base, with the base's code and this machine's
numerics, reuses its runs from the base's committed ``grid/runs/``: a pull request pays only for its
own runs. Other sides are trained as the grid trains them (``python -m stages cell``, the seeds side by side)
into ``seeded/<side>/``; where this change's code differs from the base's, the base is trained in a
checkout of the base (``git worktree``), so each side runs its own code.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stages.core import atomic, runtime
from stages.core.errors import PipelineError, run_stage
from stages.core.params import CATALOG, Params, parse_params, write_raw
from tools import vcs
from tools.report import markdown_table
from tools.stats import (
    PairedComparison,
    SeedComparison,
    compare_pairs,
    compare_seeds,
    seed_spread,
    seed_verdict,
    summarise_seeds,
)

CODE = ("stages", "requirements.txt")
"""What a run's bits depend on besides params and numerics: runs of other code are not reused."""
OUT = Path("seeded")
HEAD = "this change"


@dataclass(frozen=True)
class SeedRuns:
    """One side's runs: by seed, its test and best validation accuracy and its ``(actual, predicted)``
    test predictions, and where the runs came from."""

    name: str
    source: str
    test_accuracy: Mapping[int, float]
    best_valid_accuracy: Mapping[int, float]
    predictions: Mapping[int, Sequence[tuple[int, int]]]


@dataclass(frozen=True)
class SeededComparison:
    base: SeedRuns
    head: SeedRuns
    test: SeedComparison
    """This change minus the base, paired by seed: the verdict."""
    valid: SeedComparison
    pooled: PairedComparison | None
    """McNemar on every seed's predictions, concatenated in seed order; None on other test images."""

    @property
    def seeds(self) -> list[int]:
        return sorted(self.base.test_accuracy)

    @property
    def verdict(self) -> str:
        """better, worse, tied, or no verdict (one seed)."""
        return seed_verdict(self.test)

    def headline(self) -> str:
        """The answer, e.g. ``tied within training noise: test accuracy +0.0012 on average over seeds
        42, 43, 44 (95% CI -0.0010 to +0.0035, paired by seed)``."""
        verdict = {"tied": "tied within training noise", "no verdict": "no verdict (one seed)"}.get(
            self.verdict, self.verdict
        )
        return f"{verdict}: test accuracy {_interval(self.test)} on average over seeds {_list(self.seeds)}"

    def markdown(self) -> str:
        base, head = self.base, self.head
        rows = [
            [
                seed,
                base.test_accuracy[seed],
                head.test_accuracy[seed],
                f"{head.test_accuracy[seed] - base.test_accuracy[seed]:+.4f}",
                base.best_valid_accuracy[seed],
                head.best_valid_accuracy[seed],
            ]
            for seed in self.seeds
        ]
        rows.append(
            [
                "mean ± std",
                _spread(base.test_accuracy),
                _spread(head.test_accuracy),
                f"{self.test.difference:+.4f}",
                _spread(base.best_valid_accuracy),
                _spread(head.best_valid_accuracy),
            ]
        )
        header = ("seed", f"test accuracy: {base.name}", HEAD, "Δ", f"best valid accuracy: {base.name}", HEAD)
        pooled = self.pooled.line() if self.pooled else "not comparable: the runs were tested on different images"
        return (
            "\n".join(
                [
                    f"**Across seeds:** {self.headline()}.",
                    "",
                    markdown_table(header, rows),
                    f"- Test accuracy, paired by seed (Student t, the leaderboard's rule): {_interval(self.test)}: "
                    f"{self.verdict}.",
                    f"- Best validation accuracy, the leaderboard's metric: {_interval(self.valid)}: "
                    f"{seed_verdict(self.valid)}.",
                    f"- McNemar on the predictions of all seeds pooled (test-set noise only): {pooled}.",
                    f"- Runs: {base.name}: {base.source}; {HEAD}: {head.source}.",
                ]
            )
            + "\n"
        )


@dataclass(frozen=True)
class Spread:
    """How far seeds alone move the difference between one run of each side (``stats.seed_spread``),
    from the grid's runs of both configurations."""

    value: float
    recipes: tuple[str, str]

    def sentence(self) -> str:
        recipes = " and ".join(f"`{recipe}`" for recipe in dict.fromkeys(self.recipes))
        return (
            f"Seeds alone move the difference between one run of each by up to ±{self.value:.4f} "
            f"(1.96 × √(std² + std²) of the test accuracies over seeds of the grid's {recipes})."
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="origin/main", help="branch or revision the change goes into")
    parser.add_argument("--seeds", type=int, help="seeds per side (default: catalog.yaml's grid.seeds)")
    parser.add_argument("--markdown", type=Path, default=Path("seeded.md"))
    args = parser.parse_args(argv)
    commit = vcs.resolve(args.base)
    text = seeded_check(commit, vcs.label(args.base, commit), args.seeds).markdown()
    atomic.write(args.markdown, text)
    print(text, end="")


def seeded_check(commit: str, name: str, seeds: int | None = None, out: Path = OUT) -> SeededComparison:
    """The base's configuration (params.yaml at ``commit``) against the workspace's, each with the
    same seeds, reused from the base's grid/runs/ where they can be, else trained."""
    base_raw, head_raw = vcs.params_at(commit, name), vcs.params_at(vcs.WORKSPACE, HEAD)
    base_params, head_params = _parse(base_raw, name), _parse(head_raw, HEAD)
    count = head_params.grid.seeds if seeds is None else seeds
    if count < 1:
        raise PipelineError(f"--seeds {count} is invalid; give 1 or more (3 gives a verdict the leaderboard's way)")
    seed_list = [head_params.seed + offset for offset in range(count)]
    same_code = not vcs.changed_since(commit, *CODE)
    base = _side("base", name, base_raw, base_params, seed_list, (commit, name), out, reuse=True, own_code=same_code)
    head = _side("head", HEAD, head_raw, head_params, seed_list, (commit, name), out, reuse=same_code, own_code=True)
    return compare_sides(base, head)


def compare_sides(base: SeedRuns, head: SeedRuns) -> SeededComparison:
    seeds = sorted(base.test_accuracy)
    pooled = compare_pairs(*([pair for seed in seeds for pair in side.predictions[seed]] for side in (base, head)))
    return SeededComparison(
        base,
        head,
        compare_seeds(base.test_accuracy, head.test_accuracy),
        compare_seeds(base.best_valid_accuracy, head.best_valid_accuracy),
        pooled,
    )


def grid_spread(base_raw: Mapping[str, Any], head_raw: Mapping[str, Any], rev: str, name: str) -> Spread | None:
    """The seed spread of a one-seed difference between two configurations, from the grid's runs at
    ``rev`` of both (of one only: its spread stands for both); None where the grid has neither."""
    base, head = (_measured(raw, rev, name) for raw in (base_raw, head_raw))
    base, head = base or head, head or base
    if base is None:
        return None
    return Spread(seed_spread(base[1], head[1]), (base[0], head[0]))


def _measured(raw: Mapping[str, Any], rev: str, name: str) -> tuple[str, float] | None:
    """The grid recipe at ``rev`` that is this single configuration, and its test accuracy's std over seeds."""
    try:
        params = parse_params(raw)
    except PipelineError:
        return None
    stored = _stored(params, params.grid_seeds, rev, name, fingerprint=None)
    if stored is None:
        return None
    recipe, folders = stored
    accuracies = [vcs.json_at(rev, f"{folder}/evaluate.json", name)["test_accuracy"] for folder in folders]
    return recipe, summarise_seeds(accuracies).std


def _side(
    label: str,
    name: str,
    raw: Mapping[str, Any],
    params: Params,
    seeds: list[int],
    base: tuple[str, str],
    out: Path,
    *,
    reuse: bool,
    own_code: bool,
) -> SeedRuns:
    """One side, ``name`` in the report: with ``reuse``, from the grid's runs at the base (``base``:
    its commit and name) where they hold this configuration; else trained, with the workspace's code
    where it is this side's (``own_code``), else in a checkout of the base."""
    commit, base_name = base
    stored = _stored(params, seeds, commit, base_name, _fingerprint(params)) if reuse else None
    if stored is not None:
        recipe, folders = stored
        return _read(name, f"reused from grid/runs/{recipe}/ at {base_name}", seeds, folders, commit)
    folder = out / label
    _train(label, raw, seeds, folder, None if own_code else commit)
    runs = folder / "runs"
    folders = [(runs / f"seed-{seed}").as_posix() for seed in seeds]
    where = "here" if own_code else f"here with {base_name}'s code"
    return _read(name, f"trained {where} ({runs.as_posix()}/)", seeds, folders, vcs.WORKSPACE)


def _stored(
    params: Params, seeds: list[int], rev: str, name: str, fingerprint: str | None
) -> tuple[str, list[str]] | None:
    """The grid recipe at ``rev`` whose runs are the single configuration of ``params`` for every seed
    (their logs record its params digest, and ``fingerprint`` where one is given), and their folders."""
    for recipe in params.grid.recipes:
        folders = [f"grid/runs/{recipe}/seed-{seed}" for seed in seeds]
        if all(params.recipe(recipe, seed).digest == params.recipe(None, seed).digest for seed in seeds) and all(
            _matches(rev, folder, params.recipe(None, seed).digest, fingerprint, name)
            for seed, folder in zip(seeds, folders, strict=True)
        ):
            return recipe, folders
    return None


def _matches(rev: str, folder: str, digest: str, fingerprint: str | None, name: str) -> bool:
    try:
        log = vcs.json_at(rev, f"{folder}/log.json", name)
    except PipelineError:
        return False
    return log.get("params_digest") == digest and fingerprint in (None, log.get("fingerprint"))


def _read(name: str, source: str, seeds: list[int], folders: list[str], rev: str) -> SeedRuns:
    test, valid, predictions = {}, {}, {}
    for seed, folder in zip(seeds, folders, strict=True):
        test[seed] = vcs.json_at(rev, f"{folder}/evaluate.json", name)["test_accuracy"]
        valid[seed] = vcs.json_at(rev, f"{folder}/train.json", name)["best_valid_accuracy"]
        predictions[seed] = vcs.parse_predictions(vcs.read_at(rev, f"{folder}/predictions.csv", name))
    return SeedRuns(name, source, test, valid, predictions)


def _fingerprint(params: Params) -> str:
    """This machine's numerics fingerprint for these params' device, threads and numerics."""
    return runtime.expected_fingerprint(params.threads, params.device, params.numerics)


def _train(label: str, raw: Mapping[str, Any], seeds: list[int], folder: Path, checkout: str | None) -> None:
    """The single configuration of ``raw`` as a one-recipe grid with these seeds, trained by
    ``python -m stages cell`` into ``folder/runs``; its lines go to stderr, so stdout stays the report."""
    recipe = {key: raw[key] for key in ("arch", "optimizer", "schedule", "train")}
    derived = {**raw, "seed": seeds[0], "grid": {"seeds": len(seeds), "recipes": {label: recipe}}}
    shutil.rmtree(folder, ignore_errors=True)  # the runs of an earlier check
    write_raw(derived, folder / "params.yaml")
    folder, split = folder.resolve(), Path("data/split").resolve()
    arguments = [
        "--params",
        str(folder / "params.yaml"),
        "--recipe",
        label,
        "--split",
        str(split),
        "--out",
        str(folder / "runs"),
        "--checkpoints",
        str(folder / "checkpoints"),
    ]
    with _checkout(checkout) as root:
        print(f"seeded check: training {label} with seeds {_list(seeds)}", file=sys.stderr, flush=True)
        # A base from before `python -m stages` started its stages as modules (which pinned by restarting).
        entry = ["stages", "cell"] if (root / "stages" / "__main__.py").exists() else ["stages.cell"]
        code = subprocess.run([sys.executable, "-m", *entry, *arguments], cwd=root, stdout=2).returncode
    if code != 0:
        raise PipelineError(
            f"training the {label} configuration with seeds {_list(seeds)} failed (exit {code}); its error is above"
        )


@contextlib.contextmanager
def _checkout(commit: str | None) -> Iterator[Path]:
    """The workspace, or a temporary git worktree of ``commit`` (removed after)."""
    if commit is None:
        yield Path.cwd()
        return
    root = Path(tempfile.mkdtemp(prefix="seeded-")) / "base"
    vcs.output("git", "worktree", "add", "--detach", "--quiet", str(root), commit)
    try:
        yield root
    finally:
        vcs.output("git", "worktree", "remove", "--force", str(root))
        shutil.rmtree(root.parent, ignore_errors=True)


def _parse(raw: Mapping[str, Any], name: str) -> Params:
    where = f" at {name}" if name != HEAD else ""
    return parse_params(raw, f"params.yaml{where}", f"{CATALOG}{where}")


def _interval(comparison: SeedComparison) -> str:
    return comparison.text(", paired by seed")


def _spread(values: Mapping[int, float]) -> str:
    return summarise_seeds(list(values.values())).text()


def _list(seeds: Sequence[int]) -> str:
    return ", ".join(map(str, seeds))


if __name__ == "__main__":
    run_stage(main)
