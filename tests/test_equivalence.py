"""The fast path against the tutorial's per-image loop (benchmarks.reference): bitwise the same
weights for the same order, and the same validation figures."""

from __future__ import annotations

import pytest
import torch

from benchmarks import common, reference
from stages.core import data, runtime
from stages.core.models import Architecture
from stages.core.optimizers import OptimizerSpec, build_optimizer
from stages.core.training import evaluate, fit, train_epoch
from tests.synthetic import synthetic_digits

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
    for (name, a), b in zip(first.named_parameters(), second.parameters()):
        assert torch.equal(a, b), f"{name} differs"


@pytest.mark.parametrize("spec", OPTIMIZERS, ids=lambda spec: spec.name)
@pytest.mark.parametrize("architecture", ARCHITECTURES, ids=lambda architecture: architecture.name)
def test_fit_gives_bitwise_the_reference_weights(digits, architecture, spec):
    """``fit`` against the tutorial loop fed fit's own orders: a seeded permutation per epoch."""
    images, labels = digits
    fast, slow = twin_models(architecture)
    fast_optimizer, slow_optimizer = build_optimizer(spec, fast.parameters()), build_optimizer(spec, slow.parameters())
    features = data.as_features(images, CPU)
    history = fit(fast, fast_optimizer, (features, labels), (features, labels), EPOCHS, BATCH_SIZE, SEED)
    dataset = reference.PerImageDataset(images, labels)
    shuffle = torch.Generator().manual_seed(SEED)
    for result in history:
        order = torch.randperm(len(labels), generator=shuffle)
        loss = reference.train_epoch(slow, slow_optimizer, reference.loader(dataset, BATCH_SIZE, order), CPU)
        assert result.train_loss == pytest.approx(loss, abs=1e-6)
    assert_same_weights(fast, slow)


@pytest.mark.parametrize("architecture", ARCHITECTURES, ids=lambda architecture: architecture.name)
def test_fast_evaluation_matches_the_reference(digits, architecture):
    images, labels = digits
    model, _ = twin_models(architecture)
    features = data.as_features(images, CPU)
    optimizer = build_optimizer(OPTIMIZERS[0], model.parameters())
    train_epoch(model, optimizer, features, labels, 10, torch.arange(len(labels)))  # past chance
    fast = evaluate(model, features, labels)
    dataset = reference.PerImageDataset(images, labels)
    loss, accuracy = reference.evaluate(model, reference.loader(dataset, BATCH_SIZE), CPU)
    assert accuracy > 0.5  # a trained model: predictions of every class, not one
    assert fast.accuracy == accuracy  # both are correct / total
    assert fast.loss == pytest.approx(loss, abs=1e-6)


def test_shuffle_buffers_only_save_time(digits):
    """``train_epoch`` without buffers (a fresh copy per epoch) trains exactly as with them."""
    images, labels = digits
    features = data.as_features(images, CPU)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SEED))
    models = twin_models(ARCHITECTURES[1])
    for model, out in zip(models, (None, (torch.empty_like(features), torch.empty_like(labels)))):
        train_epoch(model, build_optimizer(OPTIMIZERS[0], model.parameters()), features, labels, BATCH_SIZE, order, out)
    assert_same_weights(*models)
