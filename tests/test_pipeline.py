"""The whole pipeline as a user runs it: ``dvc repro``, experiments, comparisons, failures, resuming."""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from stages.core.models import sha256

RESULTS = ("metrics/train.json", "metrics/evaluate.json", "plots/loss.csv", "plots/confusion.csv", "models/model.pt")
FIGURES = ("plots/samples.png", "plots/curves.png", "plots/confusion.png", "plots/predictions.png")


def results(project) -> dict[str, bytes]:
    return {path: (project.root / path).read_bytes() for path in RESULTS}


def test_repro_learns_and_writes_every_declared_result(reproduced):
    train = json.loads(reproduced.read("metrics/train.json"))
    assert set(train) == {
        "train_loss", "valid_loss", "valid_accuracy", "best_valid_accuracy", "best_epoch", "kept_epoch", "epochs",
        "num_params",
    }  # fmt: skip
    assert train["valid_accuracy"] > 0.9 and train["num_params"] == 109_386 and train["kept_epoch"] == 3
    evaluate = json.loads(reproduced.read("metrics/evaluate.json"))
    assert set(evaluate) == {"test_accuracy", "test_loss"} and evaluate["test_accuracy"] > 0.9
    per_class = json.loads(reproduced.read("metrics/per_class_accuracy.json"))
    assert set(per_class) == {str(d) for d in range(10)} and min(per_class.values()) <= evaluate["test_accuracy"]

    curves = list(csv.DictReader(io.StringIO(reproduced.read("plots/loss.csv"))))
    assert [row["epoch"] for row in curves] == ["1", "2", "3"]
    assert float(curves[-1]["train_loss"]) < float(curves[0]["train_loss"])
    assert float(curves[-1]["valid_accuracy"]) == train["valid_accuracy"]

    confusion = list(csv.DictReader(io.StringIO(reproduced.read("plots/confusion.csv"))))
    assert len(confusion) == 200  # every official test image, nothing else
    correct = sum(row["actual"] == row["predicted"] for row in confusion)
    assert correct / len(confusion) == evaluate["test_accuracy"]

    assert "Data and pipelines are up to date" in reproduced.run("dvc", "status", "dvc.yaml").stdout


def test_every_result_records_the_params_and_the_model_it_came_from(reproduced):
    train_log, evaluate_log = (json.loads(reproduced.read(f"logs/{name}.json")) for name in ("train", "evaluate"))
    model = sha256((reproduced.root / "models/model.pt").read_bytes())
    assert train_log["model_sha256"] == evaluate_log["model_sha256"] == model
    assert train_log["params_digest"] == evaluate_log["params_digest"]
    assert train_log["recipe"]["optimizer"] == {"name": "sgd", "type": "sgd", "lr": 0.1}
    assert {"train_seconds", "seconds_per_epoch"} <= set(train_log)


def test_outputs_are_readable_by_the_group_and_others_as_the_umask_allows(reproduced):
    for path in (*RESULTS, "plots/curves.png", "logs/train.json"):
        assert (reproduced.root / path).stat().st_mode & 0o777 == 0o644, path  # umask 022


def readme_exp_show() -> list[str]:
    """README's everyday `dvc exp show` command, as a user copies it."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    return shlex.split(re.search(r"^(dvc exp show --only-changed .*?)\s+#", readme, re.MULTILINE)[1])


def test_experiment_with_another_optimizer_is_compared_by_dvc(project):
    """Two `dvc exp run`s, each a real train and evaluate, on purpose: over 20 s, since the promise
    is that going back to the baseline's params through DVC gives its bits. Then README's `dvc exp
    show` is readable: few columns, the test accuracy of every experiment in 120 columns."""
    baseline = results(project)
    out = project.run("dvc", "exp", "run", "-S", "optimizer=rmsprop").stdout
    assert "Epoch : 3/3..... Train Loss :" in out
    assert results(project) != baseline

    shown = json.loads(project.run("dvc", "exp", "show", "--json").stdout)
    experiments = [exp for entry in shown for exp in (entry.get("experiments") or [])]
    assert experiments, shown
    revision = experiments[0]["revs"][0]
    assert not revision.get("error")
    data = revision["data"]
    assert data["params"]["params.yaml"]["data"]["optimizer"] == "rmsprop"
    assert data["metrics"]["metrics/evaluate.json"]["data"]["test_accuracy"] > 0.5

    diff = json.loads(project.run("dvc", "metrics", "diff", "HEAD", "--all", "--json").stdout)
    assert diff["metrics/evaluate.json"]["test_loss"]["new"] != diff["metrics/evaluate.json"]["test_loss"]["old"]
    assert "logs/train.json" not in diff  # timings and environment are not compared

    plots = json.loads(project.run("dvc", "plots", "diff", "HEAD", "--json").stdout)["data"]
    assert {"Loss", "Validation accuracy", "Confusion matrix (test set)"} <= set(plots)
    assert set(plots["Loss"][0]["revisions"]) == {"workspace", "HEAD"}

    project.run("dvc", "exp", "run", "-S", "optimizer=sgd")  # back: the same bits as the baseline
    assert results(project) == baseline

    command = readme_exp_show()
    shown = list(csv.DictReader(io.StringIO(project.run(*command, "--csv").stdout)))
    assert len(shown[0]) <= 30 and {"test_accuracy", "best_valid_accuracy", "optimizer"} <= set(shown[0])
    assert not any(column.startswith(("per_class", "mlp_", "stages/", "architectures.")) for column in shown[0])
    expected = {row["Experiment"]: float(row["test_accuracy"]) for row in shown if row["Experiment"]}
    assert len(expected) == 2
    table = subprocess.run([*command, "--no-pager"], cwd=project.root, env={**project.env, "COLUMNS": "120"},
                           capture_output=True, text=True, check=True).stdout.splitlines()  # fmt: skip
    assert all(len(line) <= 120 for line in table)
    end = table[1].index("test_accuracy") + len("test_accuracy")  # figures are right-aligned under their header
    for name, accuracy in expected.items():
        row = next(line for line in table if f"[{name}]" in line)
        assert float(row[:end].split()[-1]) == pytest.approx(accuracy, abs=1e-5)
    assert any("rmsprop" in line for line in table)  # the param that changed


def test_editing_an_unused_optimizer_does_not_invalidate_the_run(project):
    params = project.params()
    params["optimizers"]["adam"]["lr"] = 0.05
    project.set_params(optimizers=params["optimizers"])
    assert "Data and pipelines are up to date" in project.run("dvc", "status", "dvc.yaml").stdout


@pytest.mark.parametrize(
    ("setting", "error"),
    [
        ("+train.epoch=1", "train.epoch = 1 is invalid; unknown key; valid keys: batch_size, epochs, keep"),
        (
            "optimizers.sgd.lr=1000000",
            "training diverged at epoch 1: its train loss is nan; try a smaller learning "
            "rate than optimizers.sgd.lr = 1000000",
        ),
    ],
    ids=["misspelt-key", "diverged"],
)
def test_a_failed_experiment_exits_nonzero_and_keeps_the_last_results(project, setting, error):
    baseline = results(project)
    failed = project.run("dvc", "exp", "run", "-S", setting, check=False)
    assert failed.returncode != 0
    assert error in failed.stderr + failed.stdout
    assert results(project) == baseline
    for path in ("metrics/train.json", "metrics/evaluate.json"):
        json.loads(project.read(path))  # valid JSON: never a NaN


def test_missing_device_fails_clearly_without_touching_results(project, in_process):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    baseline = results(project)
    project.set_params(device="cuda")
    code, _, err = in_process(project, "train")
    assert code == 2 and err.startswith("error: device 'cuda' is not available (0 CUDA devices found)")
    assert results(project) == baseline


def test_an_interrupted_train_stage_resumes_and_ends_as_an_uninterrupted_run(project):
    """And whether or not it resumed, a forced rerun gives byte-identical results and figures.
    Over 20 s: a killed process and a whole `dvc repro` after it are what the promise is about."""
    files = (*RESULTS, *FIGURES, "models/summary.txt")
    baseline = {path: (project.root / path).read_bytes() for path in files}
    command = [sys.executable, "-m", "stages.train", "--model", "models/other.pt", "--metrics", "metrics/other.json"]
    train = subprocess.Popen(command, cwd=project.root, env=project.env, stdout=subprocess.PIPE, text=True)
    for line in train.stdout:  # the first epoch is done and saved: kill it wherever it is now
        if line.startswith("Epoch : 1/"):
            train.send_signal(signal.SIGKILL)
            break
    train.wait()
    checkpoint = project.root / "models/checkpoints/train.pt"
    resumed = checkpoint.exists()
    out = project.run("dvc", "repro", "--force", "split", "train", "evaluate").stdout
    assert ("resuming after epoch" in out) == resumed
    assert {path: (project.root / path).read_bytes() for path in files} == baseline
    assert not checkpoint.exists()  # removed once the outputs are written
