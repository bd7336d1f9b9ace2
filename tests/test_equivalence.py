"""The fast path against the tutorial's per-image loop (testing/tutorial.py): bitwise the same
weights for the same order, and the same validation figures."""

from __future__ import annotations

import copy

import pytest
import torch

from stages.core import data, runtime
from stages.core.models import MLP, Architecture, build_model
from stages.core.optimizers import OptimizerSpec, build_optimizer
from stages.core.params import TrainParams, load_params
from stages.core.training import epoch_rows, evaluate, fit, scaled_batches, train_epoch
from testing import tutorial
from testing.synthetic import synthetic_digits
from tests.conftest import ROOT

CPU = torch.device("cpu")
ARCHITECTURES = (MLP("mlp_20_sigmoid", (20,), "sigmoid"), MLP("mlp_128_64_relu", (128, 64), "relu"))
CNNS = tuple(load_params(ROOT / "params.yaml").architectures[name] for name in ("lenet5", "cnn_small"))
OPTIMIZERS = (
    OptimizerSpec("sgd", "sgd", {"lr": 0.1}),
    OptimizerSpec("momentum", "sgd", {"lr": 0.01, "momentum": 0.9}),
    OptimizerSpec("adagrad", "adagrad", {"lr": 0.01}),
    OptimizerSpec("rmsprop", "rmsprop", {"lr": 0.001}),
    OptimizerSpec("adam", "adam", {"lr": 0.001}),
    OptimizerSpec("adam_fused", "adam", {"lr": 0.001, "fused": True}),  # README's tip: any torch keyword
)
BATCH_SIZE = 100
EPOCHS = 2
SEED = 7


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = synthetic_digits(600, seed=3)
    return images, labels.long()


def twin_models(architecture: Architecture) -> list[torch.nn.Module]:
    runtime.configure(threads=1, device="cpu", mode="portable")
    torch.manual_seed(0)
    first = build_model(architecture)
    return [first, copy.deepcopy(first)]


def assert_same_weights(first: torch.nn.Module, second: torch.nn.Module) -> None:
    """Parameters and buffers (batch norm's running statistics) alike."""
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), f"{name} differs"


@pytest.mark.parametrize("spec", OPTIMIZERS, ids=lambda spec: spec.name)
@pytest.mark.parametrize("architecture", ARCHITECTURES, ids=lambda architecture: architecture.name)
def test_fit_gives_bitwise_the_reference_weights(digits, architecture, spec):
    """``fit`` against the tutorial loop fed fit's own orders: a seeded permutation per epoch."""
    assert_fit_matches_reference(digits, architecture, spec, BATCH_SIZE)


@pytest.mark.parametrize("architecture", CNNS, ids=lambda architecture: architecture.name)
def test_a_cnn_trains_as_in_the_reference(digits, architecture):
    """cnn_small adds batch norm, and dropout masks drawn from the global generator."""
    assert_fit_matches_reference(digits, architecture, OPTIMIZERS[4], BATCH_SIZE)


def test_a_short_last_batch_trains_as_in_the_reference(digits):
    """600 images in batches of 64: the last step takes 24, scaled into part of the reused buffer."""
    assert_fit_matches_reference(digits, ARCHITECTURES[0], OPTIMIZERS[0], batch_size=64)


def assert_fit_matches_reference(
    digits: tuple[torch.Tensor, torch.Tensor], architecture: Architecture, spec: OptimizerSpec, batch_size: int
) -> None:
    images, labels = digits
    fast, slow = twin_models(architecture)
    fast_optimizer, slow_optimizer = build_optimizer(spec, fast.parameters()), build_optimizer(spec, slow.parameters())
    train, valid = (data.as_rows(images, CPU), labels), (data.as_features(images, CPU), labels)
    settings = TrainParams(
        epochs=EPOCHS, batch_size=batch_size, keep="last", patience=0, shift=0, rotate=0, zoom=0, label_smoothing=0
    )
    torch.manual_seed(SEED)  # the same dropout masks for both loops
    history = fit(fast, fast_optimizer, None, train, valid, settings, SEED, eval_batch_size=1000).history
    torch.manual_seed(SEED)
    dataset = tutorial.PerImageDataset(images, labels)
    shuffle = torch.Generator().manual_seed(SEED)
    for result in history:
        order = torch.randperm(len(labels), generator=shuffle)
        loss = tutorial.train_epoch(slow, slow_optimizer, tutorial.loader(dataset, batch_size, order), CPU)
        assert result.train_loss == pytest.approx(loss, abs=1e-6)
    assert_same_weights(fast, slow)


@pytest.mark.parametrize("architecture", ARCHITECTURES, ids=lambda architecture: architecture.name)
def test_fast_evaluation_matches_the_reference(digits, architecture):
    images, labels = digits
    model, _ = twin_models(architecture)
    optimizer = build_optimizer(OPTIMIZERS[0], model.parameters())
    train_epoch(model, optimizer, scaled_batches(data.as_rows(images, CPU), labels, 10))  # past chance
    fast = evaluate(model, data.as_features(images, CPU), labels, batch_size=1000)
    dataset = tutorial.PerImageDataset(images, labels)
    loss, accuracy = tutorial.evaluate(model, tutorial.loader(dataset, BATCH_SIZE), CPU)
    assert accuracy > 0.5  # a trained model: predictions of every class, not one
    assert fast.accuracy == accuracy  # both are correct / total
    assert fast.loss == pytest.approx(loss, abs=1e-6)


def test_shuffle_buffers_only_save_time(digits):
    """The epoch's gather into reused buffers trains exactly as a fresh copy per epoch."""
    images, labels = digits
    train = (data.as_rows(images, CPU), labels)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SEED))
    models = twin_models(ARCHITECTURES[1])
    for model, out in zip(models, (None, (torch.empty_like(train[0]), torch.empty_like(labels))), strict=True):
        optimizer = build_optimizer(OPTIMIZERS[0], model.parameters())
        train_epoch(model, optimizer, scaled_batches(*epoch_rows(train, order, out), BATCH_SIZE))
    assert_same_weights(*models)
