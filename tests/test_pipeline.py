"""The whole pipeline as a user runs it: ``dvc repro``, experiments, comparisons, failures, resuming."""

from __future__ import annotations

import csv
import io
import json
import os
import re
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
    assert not {"train_seconds", "seconds_per_epoch"} & set(train_log)  # beside it, untracked: a rerun leaves it
    assert {"train_seconds", "seconds_per_epoch"} <= set(json.loads(reproduced.read("logs/train.timings.json")))


def test_outputs_are_readable_by_the_group_and_others_as_the_umask_allows(reproduced):
    for path in (*RESULTS, "plots/curves.png", "logs/train.json"):
        assert (reproduced.root / path).stat().st_mode & 0o777 == 0o644, path  # umask 022


def test_ci_runs_readmes_commands_as_a_user_copies_them():
    """CI proves README's test command by running it word for word; the first command is a user's
    own, with no mirror that only CI has."""
    root = Path(__file__).resolve().parent.parent
    setup, test = re.findall(r"^python3 -m venv .*$", (root / "README.md").read_text(), re.MULTILINE)
    assert test in (root / ".ci/run").read_text().splitlines()
    assert "-r requirements-dev.txt" in test and "-r requirements.txt" in setup
    assert setup.endswith(" dvc repro") and "MNIST_MIRRORS" not in setup


@pytest.mark.slow  # two `dvc exp run`s, each a real train and evaluate: 60 s and more on 2 cores
def test_experiment_with_another_optimizer_is_compared_by_dvc(project):
    """Going back to the baseline's params through DVC gives its bits. README's experiment table is
    tested in the fast tier on test_experiments.py's queued experiments."""
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


def test_editing_an_unused_optimizer_does_not_invalidate_the_run(project):
    params = project.params()
    params["optimizers"]["adam"]["lr"] = 0.05
    project.set_params(optimizers=params["optimizers"])
    baseline = results(project)
    out = project.run("dvc", "repro").stdout  # the recipe stage checks catalog.yaml, and its recipe.yaml is the same
    assert "Running stage 'recipe'" in out and "Running stage 'train'" not in out, out
    assert results(project) == baseline


@pytest.mark.parametrize(
    ("setting", "error"),
    [
        ("+train.epoch=1", "train.epoch = 1 is invalid; unknown key; valid keys: batch_size, epochs, keep"),
        (
            "catalog.yaml:optimizers.sgd.lr=1000000",
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


@pytest.mark.slow  # a killed and a resumed `dvc repro`: 25 s (test_training.py resumes bit for bit in-process)
def test_an_interrupted_train_stage_resumes_and_ends_as_an_uninterrupted_run(project):
    """And whether or not it resumed, a forced rerun gives byte-identical results and figures.
    Over 20 s: a killed process and a whole `dvc repro` after it are what the promise is about."""
    files = (*RESULTS, *FIGURES, "models/summary.txt")
    baseline = {path: (project.root / path).read_bytes() for path in files}
    command = [sys.executable, "-m", "stages", "train", "--model", "models/other.pt", "--metrics", "metrics/other.json"]
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


SPLIT = ("data/split/train.pt", "data/split/valid.pt", "data/split/test.pt")


@pytest.mark.slow  # a whole `dvc exp run`: 20 s
def test_split_sizes_beyond_the_images_fail_in_one_line_and_keep_the_split(project):
    """DVC deletes a stage's outputs before it runs: only `persist` keeps them for the failure."""
    kept = {path: (project.root / path).read_bytes() for path in (*SPLIT, *RESULTS)}
    failed = project.run("dvc", "exp", "run", "-S", "split.train_size=900", check=False)
    assert failed.returncode != 0
    assert "split.train_size + split.valid_size = 900 + 200 = 1100 exceeds the 1000 training images" in failed.stderr
    assert {path: (project.root / path).read_bytes() for path in kept} == kept
    # Not `git checkout params.yaml`: DVC can leave git's index with the edited file's size and times,
    # and then git takes the file for unchanged and skips it.
    (project.root / "params.yaml").write_text(project.run("git", "show", "HEAD:params.yaml").stdout)
    assert "Data and pipelines are up to date" in project.run("dvc", "status", "dvc.yaml").stdout


def started(project, *command: str, **limits) -> subprocess.Popen:
    """``python -m stages <command>`` in the project, Ctrl-C raising KeyboardInterrupt in it as in a
    terminal (a background shell would leave SIGINT ignored), with resource ``limits`` set."""
    import resource

    def child() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        for name, value in limits.items():
            resource.setrlimit(getattr(resource, name), (value, value))

    return subprocess.Popen(
        [sys.executable, "-m", *command], cwd=project.root, env=project.env, preexec_fn=child,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def after_epoch_one(process: subprocess.Popen, then) -> tuple[int, str]:
    for line in process.stdout:
        if line.startswith("Epoch : 1/"):
            then()
            break
    process.stdout.read()
    return process.wait(), process.stderr.read()


def test_params_changed_while_training_are_refused_before_anything_is_written(project):
    """As a second `dvc exp run` in this workspace does: DVC would record the new params beside the old run's model."""
    baseline = results(project)
    train = started(project, "stages", "train")
    code, err = after_epoch_one(train, lambda: project.set_params(seed=7))
    assert code == 2
    assert err.startswith("error: params.yaml or catalog.yaml changed while this stage ran (another `dvc exp run` in")
    assert results(project) == baseline


def test_ctrl_c_during_training_is_one_line_and_the_checkpoint_is_kept(project):
    baseline = results(project)
    train = started(project, "stages", "train")
    code, err = after_epoch_one(train, lambda: train.send_signal(signal.SIGINT))
    assert (code, err) == (130, "error: interrupted (Ctrl-C); the outputs are all this run's or all the last run's\n")
    assert results(project) == baseline and (project.root / "models/checkpoints/train.pt").exists()


def test_a_file_size_limit_is_one_line_naming_the_file(project):
    """`ulimit -f 300`: the first checkpoint (the model and its optimizer state) is larger."""
    baseline = results(project)
    train = started(project, "stages", "train", RLIMIT_FSIZE=300 * 1024)
    train.stdout.read()
    assert train.wait() == 2
    assert train.stderr.read() == (
        "error: cannot write models/checkpoints/train.pt: File too large; nothing replaced\n"
    )
    assert results(project) == baseline


def test_a_missing_raw_file_is_one_line_naming_it_and_the_stage_to_run(project, in_process):
    (project.root / "data/raw/t10k-labels-idx1-ubyte").unlink()
    code, _, err = in_process(project, "split")
    assert code == 2
    assert (
        err == "error: data/raw/t10k-labels-idx1-ubyte not found: run the download stage first (dvc repro download)\n"
    )


def every_output(project) -> dict[str, bytes]:
    folders = ("data", "models", "metrics", "plots", "logs", "grid/runs")
    files = [path for folder in folders for path in (project.root / folder).rglob("*") if path.is_file()]
    return {str(path.relative_to(project.root)): path.read_bytes() for path in files}


@pytest.mark.slow
def test_bad_params_fail_every_stage_before_any_output_is_removed(project):
    before = every_output(project)
    source = project.read("data/mnist.yaml")
    (project.root / "data/mnist.yaml").write_text(source.replace("mirrors: []", "mirrors: ftp"))
    failed = project.run("dvc", "repro", "--force", "--single-item", "download", check=False)
    assert failed.returncode != 0 and "mirrors = 'ftp' is invalid" in failed.stderr
    (project.root / "data/mnist.yaml").write_text(source)
    project.set_params(evaluate={"batch_size": 0})
    stages = (
        "split",
        "train",
        "evaluate",
        "grid/dvc.yaml:cell@mlp_20_sigmoid-sgd",
        "grid/dvc.yaml:leaderboard",
    )
    for stage in stages:
        failed = project.run("dvc", "repro", "--force", "--single-item", stage, check=False)
        assert failed.returncode != 0 and "evaluate.batch_size = 0 is invalid" in failed.stderr, stage
    assert every_output(project) == before


@pytest.mark.slow
def test_a_run_interrupted_before_a_code_change_is_not_resumed_by_the_new_code(project):
    """Kill `dvc repro` after epoch 1, change the loss (label smoothing the params do not ask for),
    `dvc repro`: the new code trains from the first epoch, and gives the bytes of an uninterrupted run of it."""
    repro = subprocess.Popen(
        ["dvc", "repro", "--force", "train"], cwd=project.root, env=project.env, stdout=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    for line in repro.stdout:
        if line.startswith("Epoch : 1/"):
            os.killpg(repro.pid, signal.SIGKILL)  # DVC and the stage it runs
            break
    repro.wait()
    assert (project.root / "models/checkpoints/train.pt").exists()
    training = project.root / "stages/core/training.py"
    code, loss = training.read_text(), "label_smoothing=smoothing)"
    assert loss in code  # else the edit below would change nothing
    training.write_text(code.replace(loss, "label_smoothing=smoothing + 0.1)"))
    out = project.run("dvc", "repro").stdout
    assert "set aside" in out and "resuming" not in out
    resumed = results(project)
    project.run("dvc", "repro", "--force", "train", "evaluate")
    assert results(project) == resumed
    assert "Data and pipelines are up to date" in project.run("dvc", "status", "dvc.yaml").stdout


def holding(root: Path, env: dict[str, str], code: str = "") -> subprocess.Popen:
    """A process that imports ``stages`` as a stage does, prints ``ready`` and waits for stdin to close;
    ``code`` runs first after the import."""
    script = f"import stages, sys\n{code}\nprint('ready', flush=True)\nsys.stdin.read()"
    return subprocess.Popen([sys.executable, "-c", script], cwd=root, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_a_stage_holds_dvcs_lock_while_dvc_runs_it_and_no_lock_otherwise(tmp_path):
    """DVC unlocks its repository while a stage's command runs: the stage takes the lock itself, so a
    second `dvc exp run` fails at its first step instead of rewriting params.yaml under the stage."""
    import zc.lockfile

    lock = tmp_path / ".dvc/tmp/lock"  # a DVC repository (the lock is found from the working directory)
    lock.parent.mkdir(parents=True)
    lock.write_text(f" {os.getpid()}\n")  # as DVC leaves it: its pid, and this process starts the stage
    env = {key: value for key, value in os.environ.items() if key not in ("DVC_ROOT", "MNIST_DVC_LOCK")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)

    def lockable() -> bool:
        try:
            zc.lockfile.LockFile(str(lock)).close()
            return True
        except zc.lockfile.LockError:
            return False

    # its children (a grid cell's seed pool) are inside the stage's run: they import stages and take none
    child = "import subprocess; assert subprocess.run([sys.executable, '-c', 'import stages']).returncode == 0"
    stage = holding(tmp_path, {**env, "DVC_ROOT": "/the/workspace"}, child)  # a queued run's names the workspace
    assert stage.stdout.readline() == "ready\n"
    assert not lockable() and lock.read_text() == f" {stage.pid}\n"
    stage.communicate("")
    assert stage.returncode == 0 and lockable()  # released at exit

    outside = holding(tmp_path, env)  # no DVC: tests, tools.cluster's workers side by side
    assert outside.stdout.readline() == "ready\n" and lockable()
    lock.write_text(f" {outside.pid}\n")  # a process that is no ancestor took it after DVC started the stage
    refused = subprocess.run([sys.executable, "-c", "import stages"], cwd=tmp_path,
                             env={**env, "DVC_ROOT": "/the/workspace"}, capture_output=True, text=True)  # fmt: skip
    outside.communicate("")
    assert refused.returncode == 2 and lock.read_text() == f" {outside.pid}\n"
    assert refused.stderr == (
        f"error: another DVC process (pid {outside.pid}) took this workspace's lock after DVC started this stage, and "
        "may have changed params.yaml: nothing done; run again once it ends, or queue runs (dvc exp run --queue)\n"
    )


@pytest.mark.slow  # two `dvc exp run`, the first training 2 epochs: 25 s
def test_a_second_experiment_while_one_trains_is_refused_before_it_touches_params(project):
    """The first run's train stage holds DVC's lock: the second fails at its first step with DVC's own
    lock error, and the first ends as if it had run alone."""
    import psutil

    lock, log = project.root / ".dvc/tmp/lock", (project.root.parent / "first.log").open("w+")
    first = subprocess.Popen(["dvc", "exp", "run", "-S", "train.epochs=2"], cwd=project.root, env=project.env,
                             stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    while first.poll() is None:  # until the lock names the train stage: it holds it
        holder = lock.read_text().strip() if lock.exists() else ""
        if holder.isdigit() and psutil.pid_exists(int(holder)):
            train = psutil.Process(int(holder))
            if train.cmdline()[2:4] == ["stages", "train"]:
                break
    else:
        raise AssertionError(f"the first run ended before its train stage:\n{log.seek(0) or log.read()}")
    train.suspend()  # it holds the lock, however fast it trains, while the second run tries
    try:
        second = project.run("dvc", "exp", "run", "-S", "train.epochs=4", check=False)
        assert project.params()["train"]["epochs"] == 2
    finally:
        train.resume()
    assert first.wait() == 0, log.seek(0) or log.read()
    assert second.returncode != 0
    assert second.stderr.startswith("ERROR: Unable to acquire lock. Most likely another DVC process is running")
    assert project.params()["train"]["epochs"] == 2
    assert "Data and pipelines are up to date" in project.run("dvc", "status", "dvc.yaml").stdout
    assert json.loads(project.read("logs/train.json"))["recipe"]["train"]["epochs"] == 2
    assert len(project.read("plots/loss.csv").splitlines()) == 1 + 2
