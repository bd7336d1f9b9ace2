"""The training loop beyond the tutorial's: the epoch kept, early stopping, schedules, shifted and
turned images, label smoothing, a diverged run, and resuming from a checkpoint bit for bit."""

from __future__ import annotations

import pytest
import torch

from stages.core import checkpoint, data, runtime
from stages.core.catalog import CNN, MLP, ConvBlock, Head
from stages.core.checkpoint import FileCheckpoints
from stages.core.errors import PipelineError
from stages.core.models import build_model
from stages.core.optimizers import OptimizerSpec, build_optimizer
from stages.core.params import TrainParams
from stages.core.schedules import ScheduleSpec, build_scheduler
from stages.core.training import Diverged, fit
from testing.synthetic import synthetic_digits
from tests.conftest import ROOT

CPU = torch.device("cpu")
SEED = 5
SMALL_MLP = MLP("mlp", (16,), "relu")
# Every source of randomness a run has: dropout, batch norm, shifted and turned images, a per-batch schedule.
SMALL_CNN = CNN(
    "cnn", "relu", (ConvBlock(4, 3, padding=1, batch_norm=True, pool=2, dropout=0.2),), Head((16,), False, 0.3)
)


@pytest.fixture(scope="module")
def split() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    runtime.configure(threads=1, device="cpu", mode="portable")
    images, labels = synthetic_digits(300, seed=3)
    valid_images, valid_labels = synthetic_digits(100, seed=4)
    return (data.as_rows(images, CPU), labels.long()), (data.as_features(valid_images, CPU), valid_labels.long())


PLAIN = {"epochs": 4, "batch_size": 50, "keep": "last", "patience": 0, "shift": 0, "rotate": 0, "zoom": 0,
         "label_smoothing": 0}  # fmt: skip


def settings(**changes) -> TrainParams:
    return TrainParams(**{**PLAIN, **changes})


def run(split, train, architecture=SMALL_MLP, schedule=None, lr=0.05, checkpoints=None, on_epoch=None, kind="adam"):
    """A seeded model trained by ``fit``: the model, the result, the optimizer and the scheduler."""
    torch.manual_seed(SEED)
    model = build_model(architecture)
    optimizer = build_optimizer(OptimizerSpec(kind, kind, {"lr": lr}), model.parameters())
    scheduler = build_scheduler(schedule or ScheduleSpec("none", "none"), optimizer, train.epochs, 6)
    result = fit(model, optimizer, scheduler, *split, train, SEED, 1000, checkpoints, on_epoch or (lambda r: None))
    return model, result, optimizer, scheduler


def same_weights(first: torch.nn.Module, second: torch.nn.Module) -> bool:
    return all(
        torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    )


def test_keep_best_holds_the_weights_of_the_earliest_best_epoch(split):
    model, result, _, _ = run(split, settings(keep="best"), lr=0.2)
    accuracies = [r.valid_accuracy for r in result.history]
    assert result.kept_epoch == accuracies.index(max(accuracies)) + 1 == result.best.epoch
    assert result.kept_epoch < len(result.history)  # this run's best is not its last epoch
    shorter, _, _, _ = run(split, settings(epochs=result.kept_epoch), lr=0.2)
    assert same_weights(model, shorter)


def test_patience_stops_after_that_many_epochs_without_a_better_validation_accuracy(split):
    _, result, _, _ = run(split, settings(epochs=10, patience=1), lr=0.2)
    assert len(result.history) == result.best.epoch + 1 < 10


@pytest.mark.parametrize(
    ("schedule", "expected_steps"),
    [
        (ScheduleSpec("step", "step", {"step_size": 1, "gamma": 0.5}), 2),
        (ScheduleSpec("onecycle", "onecycle", {"max_lr": 0.1}), 12),
    ],
)
def test_a_schedule_steps_per_epoch_or_per_batch_as_torch_intends(split, schedule, expected_steps):
    _, _, optimizer, scheduler = run(split, settings(epochs=2), schedule=schedule)  # 300 images: 6 batches
    assert scheduler.scheduler.last_epoch == expected_steps
    if schedule.type == "step":
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * 0.5**2)


def test_a_one_cycle_warm_up_under_one_step_is_one_line_not_a_division_by_zero():
    optimizer = torch.optim.SGD(build_model(SMALL_MLP).parameters(), lr=0.1)
    schedule = ScheduleSpec("onecycle_short", "onecycle", {"max_lr": 0.1, "pct_start": 0.25})
    with pytest.raises(ValueError, match=r"one-cycle warm-up of pct_start 0.25 x 4 steps \(1 epochs x 4 batches\)"):
        build_scheduler(schedule, optimizer, epochs=1, batches_per_epoch=4)
    assert build_scheduler(schedule, optimizer, epochs=2, batches_per_epoch=4) is not None


def test_shifted_images_move_by_at_most_the_shift_and_depend_on_the_seed_alone():
    rows = torch.zeros(200, 784, dtype=torch.uint8)
    rows[:, 14 * 28 + 14] = 255  # one bright pixel at (14, 14)
    first = data.shifted(rows, 2, torch.Generator().manual_seed(1))
    assert torch.equal(first, data.shifted(rows, 2, torch.Generator().manual_seed(1)))
    positions = first.reshape(200, 28, 28).nonzero()[:, 1:] - 14
    assert len(positions) == 200 and positions.abs().max() == 2
    assert len({tuple(p) for p in positions.tolist()}) == 25  # every offset from -2 to 2 each way


def ink_angles_and_lengths(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's ink as a line: its angle in degrees (anticlockwise, as shown) and its length in pixels."""
    ink = rows.reshape(len(rows), 28, 28).double()
    y, x = torch.meshgrid(
        torch.arange(28.0, dtype=torch.float64), torch.arange(28.0, dtype=torch.float64), indexing="ij"
    )
    mass = ink.sum((1, 2))
    cx, cy = (ink * x).sum((1, 2)) / mass, (ink * y).sum((1, 2)) / mass
    dx, dy = x - cx[:, None, None], y - cy[:, None, None]
    xx, yy, xy = ((ink * a * b).sum((1, 2)) / mass for a, b in ((dx, dx), (dy, dy), (dx, dy)))
    angles = torch.rad2deg(0.5 * torch.atan2(-2 * xy, xx - yy))  # rows grow downwards
    return angles, (12 * (xx + yy)).sqrt()  # a uniform bar's variance is its length squared over 12


def test_turned_images_turn_and_grow_by_at_most_the_limits_and_depend_on_the_seed_alone():
    bar = torch.zeros(1, 28, 28, dtype=torch.uint8)
    bar[0, 13:15, 4:24] = 255  # 20 pixels long, through the centre
    rows = bar.reshape(1, -1).repeat(300, 1)
    one = torch.ones(1, dtype=torch.float64)
    assert torch.equal(data.turn(rows[:1], [0.0], one), rows[:1])
    assert torch.equal(data.turn(rows[:1], [90.0], one).reshape(28, 28), torch.rot90(bar[0]))
    first = data.turned(rows, 10, 0.2, torch.Generator().manual_seed(1))
    assert torch.equal(first, data.turned(rows, 10, 0.2, torch.Generator().manual_seed(1)))
    assert not torch.equal(first, data.turned(rows, 10, 0.2, torch.Generator().manual_seed(2)))
    angles, lengths = ink_angles_and_lengths(first)
    assert angles.abs().max() <= 10.5 and angles.min() < -8 and angles.max() > 8  # the range, both ways
    assert 0.75 * 20 <= lengths.min() < 0.85 * 20 and 1.15 * 20 < lengths.max() <= 1.25 * 20


def test_label_smoothing_trains_against_smoothed_targets_and_validation_stays_plain_cross_entropy(split):
    _, result, _, _ = run(split, settings(label_smoothing=0.2, epochs=8), lr=0.01)
    target = torch.tensor([0.8 + 0.02] + [0.02] * 9)  # a fifth of the label's probability spread over the 10 classes
    floor = -(target * target.log()).sum().item()  # no prediction's cross-entropy against it is lower
    assert all(epoch.train_loss >= floor for epoch in result.history)
    assert result.history[-1].valid_loss < floor < result.history[-1].train_loss


def test_a_loss_that_is_not_finite_stops_training_naming_the_epoch(split):
    with pytest.raises(Diverged, match=r"training diverged at epoch 1: its (train|validation) loss is (nan|inf)"):
        run(split, settings(), lr=1e12, kind="sgd")


class Interrupt(Exception):
    pass


def interrupt_after(epoch: int):
    def on_epoch(result):
        if result.epoch == epoch:
            raise Interrupt

    return on_epoch


@pytest.mark.parametrize("architecture", [SMALL_MLP, SMALL_CNN], ids=["mlp", "cnn"])
def test_a_run_resumed_from_its_checkpoint_ends_as_an_uninterrupted_one(split, tmp_path, architecture):
    train = settings(epochs=3, keep="best", shift=2, rotate=10, zoom=0.1)
    schedule = ScheduleSpec("onecycle", "onecycle", {"max_lr": 0.05})
    whole, expected, _, _ = run(split, train, architecture, schedule)

    said = []
    checkpoints = FileCheckpoints(tmp_path / "checkpoint.pt", "key", say=said.append)
    with pytest.raises(Interrupt):
        run(split, train, architecture, schedule, checkpoints=checkpoints, on_epoch=interrupt_after(2))
    resumed, result, _, _ = run(split, train, architecture, schedule, checkpoints=checkpoints)
    assert said == [f"resuming after epoch 2 from {tmp_path / 'checkpoint.pt'}"]
    assert result == expected and same_weights(resumed, whole)


def test_a_checkpoint_of_another_run_is_set_aside_not_resumed(split, tmp_path):
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(Interrupt):
        run(split, settings(), checkpoints=FileCheckpoints(path, "other params"), on_epoch=interrupt_after(1))
    said = []
    _, result, _, _ = run(split, settings(), checkpoints=FileCheckpoints(path, "these params", say=said.append))
    assert len(result.history) == 4
    assert said == [f"{path} was made by a run with other code, params, data or numerics: set aside as {path}.stale; "
                    "training from the first epoch"]  # fmt: skip
    assert (tmp_path / "checkpoint.pt.stale").exists()


def tamper(path, change) -> None:
    saved = torch.load(path, weights_only=True)
    change(saved["state"])
    torch.save(saved, path)


@pytest.mark.parametrize(
    "change",
    [
        lambda state: state["history"][0].update(valid_accuracy="0.99"),
        lambda state: state["history"][0].update(epoch=2),
        lambda state: state["history"].append({**state["history"][0], "epoch": 2, "train_loss": float("nan")}),
        lambda state: state["best"].update(epoch=7),
        lambda state: state.pop("history"),
    ],
    ids=["text-accuracy", "renumbered", "nan-loss", "best-beyond-history", "no-history"],
)
def test_a_tampered_checkpoint_with_the_right_key_is_set_aside_not_resumed(split, tmp_path, change):
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(Interrupt):
        run(split, settings(), checkpoints=FileCheckpoints(path, "key"), on_epoch=interrupt_after(1))
    tamper(path, change)
    said = []
    _, result, _, _ = run(split, settings(), checkpoints=FileCheckpoints(path, "key", say=said.append))
    assert said == [f"{path} holds no training state this stage wrote: set aside as {path}.stale; "
                    "training from the first epoch"]  # fmt: skip
    assert [r.epoch for r in result.history] == [1, 2, 3, 4]


@pytest.mark.parametrize("content", [torch.zeros(3), [1, 2], {"key": "key", "state": torch.zeros(3)}])
def test_a_checkpoint_that_is_no_dict_of_state_is_set_aside(split, tmp_path, content):
    path = tmp_path / "checkpoint.pt"
    torch.save(content, path)
    said = []
    _, result, _, _ = run(split, settings(epochs=1), checkpoints=FileCheckpoints(path, "key", say=said.append))
    assert len(said) == 1 and "holds no training state this stage wrote" in said[0] and len(result.history) == 1


def test_a_checkpoint_whose_tensors_do_not_fit_the_model_is_one_line_naming_it(split, tmp_path):
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(Interrupt):
        run(split, settings(), checkpoints=FileCheckpoints(path, "key"), on_epoch=interrupt_after(1))
    tamper(path, lambda state: state["model"].update({name: torch.zeros(2) for name in state["model"]}))
    with pytest.raises(PipelineError, match=rf"^{path} does not fit this run \(.*\): delete it to train from the"):
        run(split, settings(), checkpoints=FileCheckpoints(path, "key"))


def test_the_checkpoint_key_covers_the_code_this_process_runs():
    """A checkpoint of other code is set aside: the key hashes the files of every stages module loaded."""
    files = {path.relative_to(ROOT).as_posix() for path in checkpoint.code_files()}
    assert {
        "stages/__init__.py",
        "stages/core/training.py",
        "stages/core/checkpoint.py",
        "stages/core/models.py",
    } <= files
    assert all(name.startswith("stages/") for name in files)
