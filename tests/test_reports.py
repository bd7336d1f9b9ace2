"""The reporting tools on hand-made results, no training: the leaderboard's figures, ranking, ties and
refusals, the checks that results belong together, the PR report's text and the comparison's rows."""

from __future__ import annotations

import copy
import json
import re
import statistics
import subprocess
from pathlib import Path

import pytest
import torch

from stages.core import runtime
from stages.core.errors import PipelineError
from stages.core.models import sha256
from stages.core.params import load_params, load_raw, write_raw
from tools import compare, consistency, leaderboard, vcs
from tools.compare import Run
from tools.pr_report import MARKER, ONE_MODEL_EACH, Side, params_diff, parse_numstat, pr_markdown, terminal_summary
from tools.seeded import SeedRuns, Spread, compare_sides

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ("mlp_20_sigmoid-sgd", "mlp_20_sigmoid-adam", "mlp_128_64_relu-sgd")
MACHINE = runtime.environment(torch.device("cpu"), "portable")


def environment(**changes) -> dict:
    """This machine's environment at 1 thread with some fields changed, and the fingerprint that goes with them."""
    env = {key: value for key, value in MACHINE.items() if key != "fingerprint"} | {"threads": 1} | changes
    return {"fingerprint": runtime.fingerprint(env), **env}


ENVIRONMENT = environment()


# The leaderboard, on run folders written by hand -------------------------------------------------


class Grid:
    """A params.yaml with a grid of three recipes and three seeds, and its run folders, in ``root``."""

    def __init__(self, root: Path, seeds: int = 3):
        raw = load_raw(ROOT / "params.yaml")
        raw["grid"] = {"seeds": seeds, "recipes": {name: raw["grid"]["recipes"][name] for name in RECIPES}}
        self.root, self.raw = root, raw
        write_raw(raw, root / "params.yaml")
        self.params = load_params(root / "params.yaml")

    def folder(self, recipe: str, seed: int) -> Path:
        return self.root / "grid/runs" / recipe / f"seed-{seed}"

    def write(self, recipe: str, best: list[float], test: list[float] | None = None, **options) -> None:
        """One run per seed with these best validation accuracies (and test accuracies)."""
        for index, seed in enumerate(self.params.grid_seeds):
            self.run(recipe, seed, best[index], (test or best)[index], **options)

    def run(self, recipe, seed, best, test, kept_accuracy=None, fingerprint_env=None, loss=0.1, seconds=0.5):
        folder = self.folder(recipe, seed)
        folder.mkdir(parents=True, exist_ok=True)
        last = best if kept_accuracy is None else kept_accuracy
        train = {
            "train_loss": 0.2, "valid_loss": 0.15, "valid_accuracy": last, "best_valid_accuracy": best,
            "best_epoch": 2, "kept_epoch": 3, "epochs": 3, "num_params": 15910,
        }  # fmt: skip
        (folder / "train.json").write_text(json.dumps(train))
        evaluate = {"test_loss": loss, "test_accuracy": test, "per_class_accuracy": {}}
        (folder / "evaluate.json").write_text(json.dumps(evaluate))
        rows = [(1, 0.5, 0.4, best - 0.1), (2, 0.3, 0.2, best), (3, 0.2, 0.15, last)]
        (folder / "loss.csv").write_text(
            "epoch,train_loss,valid_loss,valid_accuracy\n" + "".join(f"{e},{t},{v},{a!r}\n" for e, t, v, a in rows)
        )
        (folder / "predictions.csv").write_text("actual,predicted\n1,1\n2,3\n")
        log = {
            "params_digest": self.params.recipe(recipe, seed).digest,
            "model_sha256": "0" * 64,
            **(fingerprint_env or ENVIRONMENT),
        }
        (folder / "log.json").write_text(json.dumps(log))
        (folder / "log.timings.json").write_text(json.dumps({"seconds_per_epoch": seconds}))

    def leaderboard(self) -> tuple[dict, str]:
        leaderboard.main(["--params", "params.yaml", "--runs", "grid/runs", "--json", "board.json",
                          "--markdown", "board.md", "--figure", "board.png"])  # fmt: skip
        return json.loads((self.root / "board.json").read_text()), (self.root / "board.md").read_text()


@pytest.fixture
def grid(tmp_path, monkeypatch) -> Grid:
    monkeypatch.chdir(tmp_path)  # messages name the folders as the DVC stage does: grid/runs/...
    return Grid(tmp_path)


def rows(markdown: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.split("|")[1:-1]] for line in markdown.splitlines()[2:] if line.startswith("|")
    ]


def test_leaderboard_ranks_by_mean_best_validation_accuracy_with_test_accuracy_only_shown(grid):
    # mlp_20_sigmoid-adam is best on validation, mlp_128_64_relu-sgd on the test set: validation decides.
    grid.write("mlp_20_sigmoid-sgd", best=[0.90, 0.91, 0.92], test=[0.90, 0.91, 0.92])
    grid.write("mlp_20_sigmoid-adam", best=[0.96, 0.97, 0.98], test=[0.93, 0.94, 0.95], seconds=0.25)
    grid.write("mlp_128_64_relu-sgd", best=[0.94, 0.95, 0.93], test=[0.99, 0.99, 0.99])
    board, table = grid.leaderboard()

    assert [row[1] for row in rows(table)] == ["mlp_20_sigmoid-adam", "mlp_128_64_relu-sgd", "mlp_20_sigmoid-sgd"]
    adam = board["mlp_20_sigmoid-adam"]
    assert adam["rank"] == 1 and adam["versus_best"] == "best" and adam["seeds"] == 3
    assert adam["best_valid_accuracy"] == {"mean": statistics.fmean([0.96, 0.97, 0.98]),
                                           "std": statistics.stdev([0.96, 0.97, 0.98])}  # fmt: skip
    assert adam["test_accuracy"]["mean"] == pytest.approx(0.94) and adam["test_loss"]["std"] == 0
    assert (adam["arch"], adam["optimizer"], adam["schedule"], adam["num_params"]) == (
        "mlp_20_sigmoid",
        "adam",
        "none",
        15910,
    )
    # Compact and reproducible: no timings, no per-seed values, no kept accuracy where it is the best's.
    assert set(adam) == {"arch", "optimizer", "schedule", "status", "seeds", "rank", "versus_best",
                         "best_valid_accuracy", "test_accuracy", "test_loss", "num_params"}  # fmt: skip
    assert list(board) == list(RECIPES)  # params.yaml's order: a new ranking changes `rank`, not every line

    header = table.splitlines()[0]
    assert header.startswith("| rank | recipe | arch | optimizer | schedule | best valid accuracy | test accuracy |")
    assert "kept epoch" not in header
    best_row = rows(table)[0]
    assert best_row[5] == "0.9700 ± 0.0100" and best_row[6] == "0.9400 ± 0.0100" and best_row[9] == "best"
    assert "seeds 42, 43, 44" in table and "never used to choose" in table
    assert f"Numerics: {ENVIRONMENT['fingerprint']}." in table
    assert table.endswith("\n- `mlp_20_sigmoid`: adam over sgd by 0.0600.\n")  # mlp_128_64_relu has no pair
    assert (grid.root / "board.png").read_bytes().startswith(b"\x89PNG")


def test_leaderboard_files_keep_their_bytes_when_only_the_timings_change(grid, capsys):
    """A rerun that gives the same bits leaves the leaderboard's files, and so grid/dvc.lock, as they
    were; seconds per epoch are in the table printed, from the runs' untracked timings."""
    made = []
    for seconds in (0.25, 0.75):
        grid.write("mlp_20_sigmoid-sgd", best=[0.90, 0.91, 0.92], test=[0.90, 0.91, 0.92], seconds=seconds)
        grid.write("mlp_20_sigmoid-adam", best=[0.96, 0.97, 0.98], test=[0.93, 0.94, 0.95], seconds=seconds)
        grid.write("mlp_128_64_relu-sgd", best=[0.94, 0.95, 0.93], test=[0.99, 0.99, 0.99], seconds=seconds)
        grid.leaderboard()
        made.append([(grid.root / name).read_bytes() for name in ("board.json", "board.md", "board.png")])
        printed = capsys.readouterr().out
        assert "| s/epoch |" in printed.splitlines()[0] and rows(printed)[0][9] == f"{seconds:.4f}"
    assert made[0] == made[1] and b"s/epoch" not in made[0][1]


def test_recipes_within_noise_of_the_best_are_tied_by_the_stated_rule(grid):
    grid.write("mlp_20_sigmoid-sgd", best=[0.975, 0.978, 0.976])  # the best
    grid.write("mlp_20_sigmoid-adam", best=[0.976, 0.975, 0.977])  # -0.001 on average, straddling 0
    grid.write("mlp_128_64_relu-sgd", best=[0.965, 0.969, 0.965])  # behind on every seed
    board, table = grid.leaderboard()

    assert [board[name]["versus_best"] for name in RECIPES] == ["best", "tied", "worse"]
    verdicts = {row[1]: row[-1] for row in rows(table)}
    assert verdicts["mlp_20_sigmoid-sgd"] == "best"
    assert re.fullmatch(r"tied: -0\.0003 \(95% CI -0\.\d{4} to \+0\.\d{4}\)", verdicts["mlp_20_sigmoid-adam"])
    assert re.fullmatch(r"worse: -0\.0100 \(95% CI -0\.\d{4} to -0\.\d{4}\)", verdicts["mlp_128_64_relu-sgd"])
    assert "Student t interval" in table and "paired by seed" in table and "contains 0" in table
    assert table.endswith("paired by seed:\n\n- `mlp_20_sigmoid`: tied.\n")  # the pair within an architecture


def test_one_seed_gives_no_verdict(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    grid = Grid(tmp_path, seeds=1)
    for name, accuracy in zip(RECIPES, (0.95, 0.97, 0.96), strict=True):
        grid.write(name, best=[accuracy])
    board, table = grid.leaderboard()
    assert board["mlp_20_sigmoid-adam"]["versus_best"] == "best"
    assert board["mlp_20_sigmoid-sgd"]["versus_best"] == "no verdict"
    assert "± " not in rows(table)[0][5]  # one seed has no spread to show


def test_the_kept_epochs_accuracy_is_shown_where_it_is_not_the_best(grid):
    grid.write("mlp_20_sigmoid-sgd", best=[0.95, 0.96, 0.97], kept_accuracy=0.90)
    grid.write("mlp_20_sigmoid-adam", best=[0.94, 0.95, 0.96])
    grid.write("mlp_128_64_relu-sgd", best=[0.93, 0.94, 0.95])
    board, table = grid.leaderboard()
    assert board["mlp_20_sigmoid-sgd"]["kept_valid_accuracy"] == {"mean": 0.90, "std": 0.0}
    assert "kept_valid_accuracy" not in board["mlp_20_sigmoid-adam"]
    assert "| kept epoch's valid accuracy |" in table.splitlines()[0]
    assert [row[6] for row in rows(table)] == ["0.9000 ± 0.0000", "= best", "= best"]


def test_a_recipe_with_a_missing_seed_or_file_is_failed_and_shown_without_numbers(grid):
    for name in RECIPES:
        grid.write(name, best=[0.95, 0.96, 0.97])
    for path in grid.folder("mlp_20_sigmoid-adam", 43).iterdir():
        path.unlink()
    grid.folder("mlp_20_sigmoid-adam", 43).rmdir()
    (grid.folder("mlp_128_64_relu-sgd", 44) / "predictions.csv").unlink()

    with pytest.raises(PipelineError) as error:
        grid.leaderboard()
    assert str(error.value) == (
        "2 of 3 recipes failed: mlp_20_sigmoid-adam (grid/runs/mlp_20_sigmoid-adam/seed-43/log.json not found); "
        "mlp_128_64_relu-sgd (grid/runs/mlp_128_64_relu-sgd/seed-44/predictions.csv not found); "
        "see `dvc repro grid/dvc.yaml`"
    )
    board = json.loads((grid.root / "board.json").read_text())
    assert board["mlp_20_sigmoid-sgd"]["status"] == "ok" and board["mlp_20_sigmoid-sgd"]["rank"] == 1
    assert board["mlp_20_sigmoid-adam"] == {
        "arch": "mlp_20_sigmoid", "optimizer": "adam", "schedule": "none", "status": "failed",
        "error": "grid/runs/mlp_20_sigmoid-adam/seed-43/log.json not found",
    }  # fmt: skip
    table = rows((grid.root / "board.md").read_text())
    assert [row[1] for row in table] == ["mlp_20_sigmoid-sgd", "mlp_20_sigmoid-adam", "mlp_128_64_relu-sgd"]
    for row in table[1:]:
        assert row[0] == "-" and row[5].startswith("**FAILED**: grid/runs/") and row[-1] == "failed"
        assert set(row[6:-1]) == {"-"}  # never the seeds that did run


def test_a_run_made_with_other_params_is_refused_naming_it_and_what_to_run(grid):
    for name in RECIPES:
        grid.write(name, best=[0.95, 0.96, 0.97])
    grid.raw["optimizers"]["adam"]["lr"] = 0.002  # edited after the grid ran
    write_raw(grid.raw, grid.root / "params.yaml")
    with pytest.raises(PipelineError) as error:
        grid.leaderboard()
    assert str(error.value) == (
        "grid/runs/mlp_20_sigmoid-adam/seed-42 was made with other params than catalog.yaml's "
        "grid.recipes.mlp_20_sigmoid-adam: run `dvc repro grid/dvc.yaml`"
    )
    assert not (grid.root / "board.json").exists()  # a refusal writes nothing


def test_runs_of_other_numerics_are_refused(grid):
    native = environment(numerics="native")
    grid.write("mlp_20_sigmoid-sgd", best=[0.95, 0.96, 0.97])
    grid.write("mlp_20_sigmoid-adam", best=[0.95, 0.96, 0.97], fingerprint_env=native)
    grid.write("mlp_128_64_relu-sgd", best=[0.95, 0.96, 0.97])
    with pytest.raises(PipelineError, match=r"^grid/runs/mlp_20_sigmoid-sgd/seed-42 was computed as cpu-portable-\w+ "
                       r"but grid/runs/mlp_20_sigmoid-adam/seed-42 as cpu-native-\w+, .*on one machine$"):  # fmt: skip
        grid.leaderboard()


def test_the_figure_shows_each_recipes_mean_over_seeds(grid):
    grid.write("mlp_20_sigmoid-sgd", best=[0.90, 0.92, 0.94])
    grid.write("mlp_20_sigmoid-adam", best=[0.95, 0.96, 0.97])
    grid.write("mlp_128_64_relu-sgd", best=[0.93, 0.94, 0.95])
    board = leaderboard.standings(leaderboard.read_grid(grid.params, Path("grid/runs")))
    axis = leaderboard.leaderboard_figure(board, grid.params.grid_seeds).axes[0]
    lines = {line.get_label(): line for line in axis.lines}
    assert list(lines) == ["mlp_20_sigmoid-adam", "mlp_128_64_relu-sgd", "mlp_20_sigmoid-sgd"]
    assert list(lines["mlp_20_sigmoid-sgd"].get_xdata()) == [1, 2, 3]
    assert list(lines["mlp_20_sigmoid-sgd"].get_ydata()) == pytest.approx([0.82, 0.92, 0.92])


# Results that belong together --------------------------------------------------------------------


def logs(digest: str = "a" * 16, model: str = "b" * 64) -> tuple[dict, dict]:
    train = {"params_digest": digest, "model_sha256": model, **ENVIRONMENT, "train_seconds": 1.0}
    evaluate = {"params_digest": digest, "model_sha256": model, **ENVIRONMENT, "evaluate_seconds": 0.1}
    return train, evaluate


def test_logs_of_different_params_are_refused_naming_both_files():
    train, evaluate = logs()
    evaluate["params_digest"] = "c" * 16
    with pytest.raises(PipelineError) as error:
        consistency.check_single(train, evaluate, where=" at main", fix="run `dvc repro` on main")
    assert str(error.value) == (
        f"logs/evaluate.json at main tested a model of other params (digest {'c' * 16}) than logs/train.json at main "
        f"trained (digest {'a' * 16}): run `dvc repro` on main"
    )


def test_logs_of_different_models_are_refused():
    train, evaluate = logs()
    evaluate["model_sha256"] = "d" * 64
    with pytest.raises(PipelineError, match=r"^logs/evaluate\.json tested another model \(sha256 d{12}\) than "
                       r"logs/train\.json trained \(b{12}\): run `dvc repro`$"):  # fmt: skip
        consistency.check_single(train, evaluate)


def test_logs_without_provenance_are_refused():
    train, evaluate = logs()
    del train["params_digest"]
    with pytest.raises(PipelineError, match=r"^logs/train\.json records no params_digest, so its results cannot"):
        consistency.check_single(train, evaluate)


@pytest.fixture
def workspace(tmp_path) -> Path:
    """A workspace whose logs, model file and params belong together."""
    for name in ("params.yaml", "catalog.yaml"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    (tmp_path / "models").mkdir()
    (tmp_path / "models/model.pt").write_bytes(b"weights")
    (tmp_path / "logs").mkdir()
    train, evaluate = logs(load_params(tmp_path / "params.yaml").recipe().digest, sha256(b"weights"))
    (tmp_path / "logs/train.json").write_text(json.dumps(train))
    (tmp_path / "logs/evaluate.json").write_text(json.dumps(evaluate))
    return tmp_path


def test_a_workspace_that_belongs_together_passes(workspace):
    train, _ = consistency.check_workspace(workspace)
    assert train["model_sha256"] == sha256(b"weights")
    (workspace / "models/model.pt").unlink()  # pulled results without the model: the logs still agree
    consistency.check_workspace(workspace)


def test_params_edited_since_the_run_are_refused(workspace):
    (workspace / "params.yaml").write_text(
        (workspace / "params.yaml").read_text().replace("optimizer: sgd", "optimizer: adam")
    )
    with pytest.raises(PipelineError, match=r"^logs/train\.json was made with other params than params\.yaml "
                       r"\(digest \w{16}, params\.yaml's \w{16}\): run `dvc repro`$"):  # fmt: skip
        consistency.check_workspace(workspace)


def test_a_model_file_other_than_the_logs_is_refused(workspace):
    (workspace / "models/model.pt").write_bytes(b"other weights")
    with pytest.raises(PipelineError, match=r"^models/model\.pt \(sha256 \w{12}\) is not the model logs/train\.json "
                       r"trained \(\w{12}\): run `dvc repro` \(or `dvc checkout models/model\.pt`\)$"):  # fmt: skip
        consistency.check_workspace(workspace)


def test_missing_logs_are_one_line(workspace):
    (workspace / "logs/evaluate.json").unlink()
    with pytest.raises(PipelineError, match=r"^logs/evaluate\.json not found: run `dvc repro`$"):
        consistency.check_workspace(workspace)


# The PR report, from plain data -------------------------------------------------------------------

BASE_METRICS = {"test_accuracy": 0.9744, "test_loss": 0.0818, "best_valid_accuracy": 0.9768}
HEAD_METRICS = {"test_accuracy": 0.9775, "test_loss": 0.0790, "best_valid_accuracy": 0.9770}


def predictions(right: int, of: int = 1000, first_wrong: int = 0) -> list[tuple[int, int]]:
    """``of`` images labelled 1, all right but ``of - right`` of them from ``first_wrong`` on."""
    wrong = range(first_wrong, first_wrong + of - right)
    return [(1, 0 if index in wrong else 1) for index in range(of)]


def metrics_diff(changed: bool = True) -> dict:
    new = 0.9775 if changed else 0.9744
    return {
        "metrics/evaluate.json": {
            "test_accuracy": {"old": 0.9744, "new": new, "diff": new - 0.9744},
            "per_class_accuracy.3": {"old": 0.97, "new": 0.97, "diff": 0.0},
        },
        "metrics/train.json": {"num_params": {"old": 109386, "new": 109386, "diff": 0}},
    }


def report(base_env=ENVIRONMENT, head_env=ENVIRONMENT, params=None, code=(), metrics=None, **sides) -> str:
    base = Side("main", dict(base_env), sides.get("base_metrics", BASE_METRICS), predictions(974, first_wrong=0))
    head = Side(
        "this change", dict(head_env), sides.get("head_metrics", HEAD_METRICS), predictions(984, first_wrong=10)
    )
    params = {"params.yaml": {"optimizer": {"old": "sgd", "new": "adam"}}} if params is None else params
    metrics = metrics_diff() if metrics is None else metrics
    return pr_markdown(base, head, params, list(code), metrics, "pr-curves.png", spread=sides.get("spread"),
                       seeded=sides.get("seeded"))  # fmt: skip


def test_pr_report_opens_with_the_headline_metrics_and_whether_the_change_is_beyond_noise():
    text = report(code=[("stages/core/training.py", 10, 2)])
    lines = text.splitlines()
    assert lines[:2] == [MARKER, "## Pipeline report: this change against `main`"]
    assert lines[3:8] == [
        "| metric | main | this change | Δ |",
        "| --- | --- | --- | --- |",
        "| test accuracy | 0.9744 | 0.9775 | +0.0031 |",
        "| test loss | 0.0818 | 0.0790 | -0.0028 |",
        "| best validation accuracy | 0.9768 | 0.9770 | +0.0002 |",
    ]
    assert lines[9] == ONE_MODEL_EACH + "  "
    assert "two trained models" in lines[9] and "not training noise" in lines[9] and "*Across seeds* below" in lines[9]
    assert lines[10] == (
        "test accuracy 0.9740 -> 0.9840 (+0.0100, 95% CI +0.0038 to +0.0162); "
        "10 images fixed, 0 broken, of 1,000; McNemar p = 0.0020: significant at 5%"
    )
    assert lines[12] == "**Params changed:** `optimizer` sgd → adam  "
    assert lines[13] == "**Code changed:** 1 file: `stages/core/training.py` (+10 −2)  "
    assert (
        lines[14] == f"**Numerics:** {ENVIRONMENT['fingerprint']} on both (torch {ENVIRONMENT['torch']}, cpu, 1 thread)"
    )
    assert text.index("### Metrics that changed") > text.index("### Across seeds") > text.index("**Numerics:**")
    assert "Not run: `python -m tools.pr_report --base main --seeds 3`" in text
    assert "[Training and validation curves, base and this change overlaid](pr-curves.png)" in text
    assert not re.search(r"\b[0-9a-f]{40}\b", text) and "workspace" not in text


def test_pr_report_prints_its_opening_and_where_the_rest_went_within_a_terminal():
    """Even with the leaderboard's ~200 figures in the folded table, the answer stays on screen."""
    figures = {f"{recipe}.test_accuracy.mean": {"old": 0.9, "new": 0.9, "diff": 0.0} for recipe in range(200)}
    text = report(code=[("stages/core/training.py", 10, 2)], metrics={**metrics_diff(), "lb.json": figures})
    printed = terminal_summary(text, "pr-report.md", "pr-curves.png").splitlines()
    assert len(text.splitlines()) > 200 and len(printed) <= 40
    assert printed[0] == "## Pipeline report: this change against `main`"
    assert "| test accuracy | 0.9744 | 0.9775 | +0.0031 |" in printed and ONE_MODEL_EACH + "  " in printed
    assert any(line.startswith("**Params changed:**") for line in printed)
    assert printed[-1] == "Full report: pr-report.md (every metric, across seeds); curves: pr-curves.png"


def test_pr_report_warns_first_when_the_base_ran_on_other_numerics():
    head = environment(numerics="native")
    lines = report(head_env=head).splitlines()
    assert lines[3] == (
        f"> **Warning: numerics fingerprint differs: {ENVIRONMENT['fingerprint']} (main) vs {head['fingerprint']} "
        "(this change): numerics portable vs native; metrics below mix hardware and change**"
    )
    assert lines[5].startswith("| metric | main | this change |")  # before any metric
    assert f"**Numerics:** {ENVIRONMENT['fingerprint']} (main), {head['fingerprint']} (this change)" in lines


def test_pr_report_warns_of_another_device():
    gpu = environment(device="cuda:0", device_name="NVIDIA H200", cuda="13.0", cudnn=91000)
    warning = report(head_env=gpu).splitlines()[3]
    assert warning.startswith(f"> **Warning: device fingerprint differs: {ENVIRONMENT['fingerprint']} (main) vs cuda-")
    assert ": device cpu vs cuda; metrics below mix hardware and change**" in warning


def test_pr_report_compares_portable_runs_of_any_cpu_without_a_warning():
    other_cpu = environment(device_name="Intel Xeon", cpu_model="Intel Xeon", cpu_vendor="GenuineIntel")
    assert other_cpu["fingerprint"] == ENVIRONMENT["fingerprint"]  # portable: the CPU's make is not in it
    text = report(head_env=other_cpu)
    assert "Warning" not in text
    assert f"**Numerics:** {ENVIRONMENT['fingerprint']} on both (torch" in text


def test_pr_report_lists_only_the_metrics_that_changed_and_folds_them_all():
    text = report()
    changed = text[text.index("### Metrics that changed") : text.index("### Curves")]
    assert "| metrics/evaluate.json | test_accuracy | 0.9744 | 0.9775 | +0.0031 |" in changed
    assert "per_class_accuracy" not in changed and "num_params" not in changed
    folded = text[text.index("<details><summary>All metrics (3)</summary>") :]
    assert "| metrics/train.json | num_params | 109,386 | 109,386 | +0 |" in folded
    assert folded.rstrip().endswith("</details>")


def test_pr_report_with_nothing_changed_says_the_diff_is_empty():
    text = report(params={}, metrics=metrics_diff(changed=False), head_metrics=BASE_METRICS)
    assert "**Params changed:** none" in text and "**Code changed:** none" in text
    assert "The diff is empty: same params, code and numerics fingerprint as `main`, same metrics." in text


def test_pr_report_flags_metrics_that_changed_when_nothing_else_did():
    text = report(params={})
    assert "changed although params, code and numerics did not: a result that does not reproduce" in text


def test_pr_report_on_a_branch_names_it_in_the_title():
    base = Side("a1b2c3d", ENVIRONMENT, BASE_METRICS, None)
    text = pr_markdown(base, Side("this change", ENVIRONMENT, HEAD_METRICS, None), {}, [], {}, "x.png", branch="faster")
    assert text.splitlines()[1] == "## Pipeline report: `faster` (this change) against `a1b2c3d`"
    assert "**Significance:** unknown: no per-image predictions (plots/confusion.csv) at a1b2c3d" in text


def test_a_one_seed_difference_within_the_grids_seed_spread_is_never_called_significant_without_saying_so():
    # McNemar p = 0.002 on these images, but seeds alone move the difference by up to 0.012: within training noise.
    text = report(spread=Spread(0.012, ("mlp_128_64_relu-sgd", "mlp_128_64_relu-adam")))
    mcnemar = next(line for line in text.splitlines() if "McNemar p = 0.0020" in line)
    assert mcnemar.endswith(
        "significant at 5% on these images, but within training noise: seeds alone move such a difference by up "
        "to ±0.0120"
    )
    assert all("within training noise" in line for line in text.splitlines() if "significant" in line)
    assert "Seeds alone move the difference between one run of each by up to ±0.0120" in text
    assert "`mlp_128_64_relu-sgd` and `mlp_128_64_relu-adam`" in text
    beyond = report(spread=Spread(0.005, ("mlp_128_64_relu-sgd", "mlp_128_64_relu-adam")))
    assert "significant at 5%, and beyond the seed spread (±0.0050)" in beyond


def seed_runs(name: str, accuracies: dict[int, float]) -> SeedRuns:
    """Runs on 1,000 images whose test accuracies are these (best validation accuracy the same)."""
    return SeedRuns(name, "by hand", accuracies, accuracies,
                    {seed: predictions(round(value * 1000)) for seed, value in accuracies.items()})  # fmt: skip


def test_three_seeds_with_a_clear_gap_are_called_better_and_lead_the_report():
    seeded = compare_sides(
        seed_runs("main", {42: 0.970, 43: 0.972, 44: 0.969}),
        seed_runs("this change", {42: 0.980, 43: 0.983, 44: 0.981}),
    )
    assert seeded.verdict == "better" and seeded.test.interval[0] > 0
    assert re.fullmatch(r"better: test accuracy \+0\.0110 \(95% CI \+0\.\d{4} to \+0\.\d{4}, paired by seed\) "
                        r"on average over seeds 42, 43, 44", seeded.headline())  # fmt: skip
    assert seeded.pooled.n == 3000 and seeded.pooled.delta == pytest.approx(0.011)
    lines = report(seeded=seeded).splitlines()
    assert lines[9] == f"**Across seeds:** {seeded.headline()}.  " and lines[10] == ONE_MODEL_EACH + "  "
    section = "\n".join(lines[lines.index("### Across seeds") : lines.index("### Metrics that changed")])
    assert "| 43 | 0.9720 | 0.9830 | +0.0110 | 0.9720 | 0.9830 |" in section
    assert (
        "the leaderboard's rule" in section and "pooled (test-set noise only)" in section and "Not run" not in section
    )
    worse = compare_sides(seeded.head, seeded.base)
    assert worse.verdict == "worse" and worse.headline().startswith("worse: test accuracy -0.0110 (95% CI -0.")


def test_three_seeds_that_straddle_zero_are_tied_within_training_noise():
    seeded = compare_sides(
        seed_runs("main", {42: 0.9756, 43: 0.9754, 44: 0.9745}),
        seed_runs("this change", {42: 0.9777, 43: 0.9757, 44: 0.9738}),
    )
    assert seeded.verdict == "tied" and seeded.test.interval[0] < 0 < seeded.test.interval[1]
    assert seeded.headline().startswith("tied within training noise: test accuracy +0.0006 (95% CI -0.")
    assert f"**Across seeds:** {seeded.headline()}." in report(seeded=seeded)


def test_the_params_diff_lists_what_changed_in_the_files_not_which_entries_a_stage_tracks():
    base = load_raw(ROOT / "params.yaml")
    head = copy.deepcopy(base)
    head["optimizer"] = "adam"  # the train stage now tracks adam's entry, not sgd's: neither changed
    assert params_diff(base, head) == {"params.yaml": {"optimizer": {"old": "sgd", "new": "adam"}}}
    head["optimizers"]["adam"]["lr"] = 0.01
    head["train"]["patience"] = 3
    assert params_diff(base, head) == {
        "params.yaml": {"optimizer": {"old": "sgd", "new": "adam"}, "train.patience": {"old": 0, "new": 3}},
        "catalog.yaml": {"optimizers.adam.lr": {"old": 0.001, "new": 0.01}},
    }


def test_git_output_becomes_report_data():
    assert parse_numstat("10\t2\tstages/core/training.py\n-\t-\tplots/x.png\n") == [
        ("stages/core/training.py", 10, 2), ("plots/x.png", None, None),
    ]  # fmt: skip
    assert vcs.label("main", "f" * 40) == "main" and vcs.label("f" * 40, "f" * 40) == "fffffff"
    assert vcs.label("HEAD~1", "f" * 40) == "HEAD~1"


def test_an_unknown_revision_is_one_line_naming_what_there_is():
    with pytest.raises(PipelineError, match=r"^no git revision 'no-such-branch': name a branch, a tag, a commit"):
        vcs.resolve("no-such-branch")
    entries = [compare.Entry("main", "a" * 40), compare.Entry("with-adam", "b" * 40)]
    with pytest.raises(PipelineError) as error:
        compare.select(entries, ["nope"])
    assert str(error.value) == "no experiment or revision 'nope'; experiments here: main, with-adam"


def test_a_branch_without_commits_is_named_and_a_detached_head_is_none(tmp_path, monkeypatch):
    """The PR report's title, on a branch just made with ``git checkout --orphan`` (or in a repository
    with no commit yet), where ``git rev-parse --abbrev-ref HEAD`` fails with its usage text."""
    monkeypatch.chdir(tmp_path)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org"]
    subprocess.run([*git, "init", "-q", "-b", "fresh"], check=True)
    assert vcs.branch() == "fresh"
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "first"], check=True)
    subprocess.run([*git, "checkout", "-q", "--detach"], check=True)
    assert vcs.branch() is None


# The comparison's rows ----------------------------------------------------------------------------


def params_with(**changes) -> dict:
    raw = load_raw(ROOT / "params.yaml")
    return raw | changes


def test_each_row_shows_the_values_of_its_own_optimizer_only():
    sgd, adam = compare.resolved_params(params_with()), compare.resolved_params(params_with(optimizer="adam"))
    assert (sgd["optimizer"], sgd["optimizer.lr"], sgd["optimizer.type"]) == ("sgd", 0.1, "sgd")
    assert (adam["optimizer"], adam["optimizer.lr"]) == ("adam", 0.001)
    assert not any(key.startswith(("optimizers.", "architectures.", "grid.", "mnist")) for key in adam)
    runs = [Run("main", "a" * 40, params_with(), {}), Run("with-adam", "b" * 40, params_with(optimizer="adam"), {})]
    assert compare.differing_params(runs) == ["arch", "optimizer", "schedule", "optimizer.lr", "optimizer.type"]


def test_comparison_marks_runs_that_differ_beyond_noise_and_failures_without_numbers():
    metrics = {
        "test_accuracy": 0.974,
        "test_loss": 0.08,
        "best_valid_accuracy": 0.975,
        "best_epoch": 3,
        "num_params": 10,
    }
    runs = [
        Run("main", "a" * 40, params_with(), metrics, predictions(974)),
        Run("with-adam", "b" * 40, params_with(optimizer="adam"), metrics, predictions(984, first_wrong=10)),
        Run("same", "c" * 40, params_with(seed=7), metrics, predictions(975, first_wrong=1)),
        Run("broken", "d" * 40, params_with(optimizer="adam"), {}, state="failed", error="error: lr must be > 0"),
        Run("workspace", vcs.WORKSPACE, params_with(), metrics, predictions(974)),
    ]
    table = compare.comparison_markdown(runs)
    found = {row[0]: row for row in rows(table)}
    header = table.splitlines()[0]
    assert header.endswith("| test_accuracy | test_loss | best_valid_accuracy | best_epoch | num_params | vs main |")
    assert found["main"][-1] == "reference" and found["main"][1] == "aaaaaaa"
    assert found["with-adam"][-1] == "+0.0100, p = 0.0020: differs on the test images (one model each)"
    assert found["same"][-1] == "+0.0010, p = 1.0000: within test-set noise"
    assert found["broken"][2] == "**FAILED**: error: lr must be > 0" and set(found["broken"][-6:]) == {"-"}
    assert found["workspace"][1] == "-" and found["workspace"][-1] == "+0.0000, p = 1.0000: within test-set noise"
    assert "- with-adam vs main: test accuracy 0.9740 -> 0.9840" in table


def test_a_failed_runs_reason_is_its_stages_own_error_line():
    stage = "Running stage 'train':\n> python -m stages train\nerror: params.yaml: optimizers.sgd.lr = -1 is invalid\n"
    dvc = "ERROR: failed to reproduce 'train': failed to run: python -m stages train, exited with 2\n"
    assert compare.error_line(stage + dvc) == "error: params.yaml: optimizers.sgd.lr = -1 is invalid"
    traceback = (
        'Traceback (most recent call last):\n  File "x.py", line 1\n    raise AssertionError(\n'
        "AssertionError: If capturable=True, params must be on cuda\n"
    )
    assert compare.error_line(traceback + dvc) == "AssertionError: If capturable=True, params must be on cuda"
    assert compare.error_line(dvc) == dvc.strip()
    assert compare.error_line("nothing useful\n") is None


def test_readmes_results_table_is_the_committed_leaderboard():
    """README restates the grid's figures: each row must be metrics/leaderboard.json's, in its order."""
    board = json.loads((ROOT / "metrics/leaderboard.json").read_text())
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| recipe | best validation accuracy |") :].split("\n\n", 1)[0].splitlines()[2:]

    def row(name: str, entry: dict) -> str:
        figures = [
            f"{entry[key]['mean']:.4f} ± {entry[key]['std']:.4f}" for key in ("best_valid_accuracy", "test_accuracy")
        ]
        return f"| `{name}` | {' | '.join(figures)} | {entry['num_params']:,} |"

    assert table == [row(name, entry) for name, entry in sorted(board.items(), key=lambda item: item[1]["rank"])]
