"""The whole pipeline as a user runs it: ``dvc repro``, experiments, comparisons, failures."""

from __future__ import annotations

import csv
import io
import json

import pytest

RESULTS = ("metrics/train.json", "metrics/evaluate.json", "plots/loss.csv", "plots/confusion.csv")


def results(project) -> dict[str, bytes]:
    return {path: (project.root / path).read_bytes() for path in RESULTS}


def test_repro_learns_and_writes_every_declared_result(reproduced):
    train = json.loads(reproduced.read("metrics/train.json"))
    assert set(train) == {
        "train_loss", "valid_loss", "valid_accuracy", "best_valid_accuracy", "best_epoch", "num_params"
    }
    assert train["valid_accuracy"] > 0.9 and train["num_params"] == 109_386
    evaluate = json.loads(reproduced.read("metrics/evaluate.json"))
    assert evaluate["test_accuracy"] > 0.9 and set(evaluate["per_class_accuracy"]) == {str(d) for d in range(10)}

    curves = list(csv.DictReader(io.StringIO(reproduced.read("plots/loss.csv"))))
    assert [row["epoch"] for row in curves] == ["1", "2", "3"]
    assert float(curves[-1]["train_loss"]) < float(curves[0]["train_loss"])
    assert float(curves[-1]["valid_accuracy"]) == train["valid_accuracy"]

    confusion = list(csv.DictReader(io.StringIO(reproduced.read("plots/confusion.csv"))))
    assert len(confusion) == 200  # every official test image, nothing else
    correct = sum(row["actual"] == row["predicted"] for row in confusion)
    assert correct / len(confusion) == evaluate["test_accuracy"]

    log = json.loads(reproduced.read("logs/train.json"))
    assert {"torch", "device", "threads", "seconds_per_epoch"} <= set(log) and log["threads"] == 1
    status = reproduced.run("dvc", "status", "dvc.yaml").stdout
    assert "up to date" in status


def test_rerun_gives_byte_identical_metrics_and_curves(reproduced):
    baseline = results(reproduced)
    reproduced.run("dvc", "repro", "--force", "train", "evaluate")
    assert results(reproduced) == baseline
    reproduced.run("dvc", "exp", "run", "--force")
    assert results(reproduced) == baseline


def test_experiment_with_another_optimizer_is_compared_by_dvc(reproduced):
    baseline = results(reproduced)
    out = reproduced.run("dvc", "exp", "run", "-S", "optimizer=rmsprop").stdout
    assert "Epoch : 3/3..... Train Loss :" in out
    assert results(reproduced) != baseline

    shown = json.loads(reproduced.run("dvc", "exp", "show", "--json").stdout)
    experiments = [exp for entry in shown for exp in (entry.get("experiments") or [])]
    assert experiments, shown
    revision = experiments[0]["revs"][0]
    assert not revision.get("error")
    data = revision["data"]
    assert data["params"]["params.yaml"]["data"]["optimizer"] == "rmsprop"
    assert data["metrics"]["metrics/evaluate.json"]["data"]["test_accuracy"] > 0.5

    diff = json.loads(reproduced.run("dvc", "metrics", "diff", "HEAD", "--all", "--json").stdout)
    assert diff["metrics/evaluate.json"]["test_loss"]["new"] != diff["metrics/evaluate.json"]["test_loss"]["old"]
    assert "logs/train.json" not in diff  # timings and environment are not compared

    plots = json.loads(reproduced.run("dvc", "plots", "diff", "HEAD", "--json").stdout)["data"]
    assert {"Loss", "Validation accuracy", "Confusion matrix (test set)"} <= set(plots)
    assert set(plots["Loss"][0]["revisions"]) == {"workspace", "HEAD"}

    reproduced.run("dvc", "exp", "run", "-S", "optimizer=sgd")
    assert results(reproduced) == baseline


def test_editing_an_unused_optimizer_does_not_invalidate_the_run(reproduced):
    params = reproduced.params()
    params["optimizers"]["adam"]["lr"] = 0.05
    reproduced.set_params(optimizers=params["optimizers"])
    assert "Data and pipelines are up to date" in reproduced.run("dvc", "status", "dvc.yaml").stdout


def test_failed_experiment_exits_nonzero_and_keeps_the_last_results(reproduced):
    baseline = results(reproduced)
    failed = reproduced.run("dvc", "exp", "run", "-S", "optimizers.sgd.lr=-1", check=False)
    assert failed.returncode != 0
    assert "optimizers.sgd.lr = -1 is invalid" in failed.stderr + failed.stdout
    assert results(reproduced) == baseline
    assert (reproduced.root / "models/model.pt").exists()


def test_missing_device_fails_clearly_without_touching_results(reproduced):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    baseline = results(reproduced)
    reproduced.set_params(device="cuda")
    failed = reproduced.run("dvc", "repro", check=False)
    assert failed.returncode != 0
    assert "device 'cuda' is not available" in failed.stderr + failed.stdout
    assert results(reproduced) == baseline
