"""The fast path against the tutorial's per-image loop (benchmarks.reference): bitwise the same
weights for the same order, and the same validation figures."""

from __future__ import annotations

import pytest
import torch

from benchmarks import common
from stages.core import tutorial
from stages.core import data, runtime
from stages.core.models import Architecture
from stages.core.optimizers import OptimizerSpec, build_optimizer
from stages.core.training import evaluate, fit, train_epoch
from stages.core.synthetic import synthetic_digits

CPU = torch.device("cpu")
ARCHITECTURES = (
    Architecture("mlp_20_sigmoid", (20,), "sigmoid"),
    Architecture("mlp_128_64_relu", (128, 64), "relu"),
)
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
    runtime.configure(seed=0, threads=1, device="cpu")
    return common.same_init_models(architecture, 2, CPU)


def assert_same_weights(first: torch.nn.Module, second: torch.nn.Module) -> None:
    for (name, a), b in zip(first.named_parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b), f"{name} differs"


@pytest.mark.parametrize("spec", OPTIMIZERS, ids=lambda spec: spec.name)
@pytest.mark.parametrize("architecture", ARCHITECTURES, ids=lambda architecture: architecture.name)
def test_fit_gives_bitwise_the_reference_weights(digits, architecture, spec):
    """``fit`` against the tutorial loop fed fit's own orders: a seeded permutation per epoch."""
    assert_fit_matches_reference(digits, architecture, spec, BATCH_SIZE)


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
    history = fit(fast, fast_optimizer, train, valid, EPOCHS, batch_size, SEED)
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
    train_epoch(model, optimizer, data.as_rows(images, CPU), labels, 10, torch.arange(len(labels)))  # past chance
    fast = evaluate(model, data.as_features(images, CPU), labels)
    dataset = tutorial.PerImageDataset(images, labels)
    loss, accuracy = tutorial.evaluate(model, tutorial.loader(dataset, BATCH_SIZE), CPU)
    assert accuracy > 0.5  # a trained model: predictions of every class, not one
    assert fast.accuracy == accuracy  # both are correct / total
    assert fast.loss == pytest.approx(loss, abs=1e-6)


def test_shuffle_buffers_only_save_time(digits):
    """``train_epoch`` without buffers (a fresh copy per epoch) trains exactly as with them."""
    images, labels = digits
    rows = data.as_rows(images, CPU)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SEED))
    models = twin_models(ARCHITECTURES[1])
    for model, out in zip(models, (None, (torch.empty_like(rows), torch.empty_like(labels))), strict=True):
        train_epoch(model, build_optimizer(OPTIMIZERS[0], model.parameters()), rows, labels, BATCH_SIZE, order, out)
    assert_same_weights(*models)
