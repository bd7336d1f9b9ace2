"""Architectures and optimizers come from registries keyed by the names params.yaml uses."""

from __future__ import annotations

import pytest
import torch

from stages.core import runtime
from stages.core.errors import PipelineError
from stages.core.models import Architecture, build_model, count_parameters, load_model
from stages.core.optimizers import OPTIMIZER_TYPES, OptimizerSpec, build_optimizer

TUTORIAL_20 = Architecture("mlp_20_sigmoid", (20,), "sigmoid")
TUTORIAL_128_64 = Architecture("mlp_128_64_relu", (128, 64), "relu")


def test_tutorial_models_have_the_tutorial_parameter_counts():
    assert count_parameters(build_model(TUTORIAL_20)) == 15_910
    assert count_parameters(build_model(TUTORIAL_128_64)) == 109_386


def test_model_maps_784_vectors_to_10_logits():
    model = build_model(TUTORIAL_128_64)
    assert model(torch.rand(4, 784)).shape == (4, 10)
    assert isinstance(model[1], torch.nn.ReLU) and isinstance(build_model(TUTORIAL_20)[1], torch.nn.Sigmoid)


def test_same_seed_same_initial_weights_as_the_tutorial_class():
    """The tutorial builds fc1 then fc2; so do we, so the seed gives its initial weights."""
    torch.manual_seed(0)
    ours = build_model(TUTORIAL_20)
    torch.manual_seed(0)
    fc1, fc2 = torch.nn.Linear(784, 20), torch.nn.Linear(20, 10)
    assert torch.equal(ours[0].weight, fc1.weight) and torch.equal(ours[2].bias, fc2.bias)


@pytest.mark.parametrize("optimizer_type", sorted(OPTIMIZER_TYPES))
def test_every_registered_optimizer_takes_a_step(optimizer_type):
    model = build_model(TUTORIAL_20)
    before = model[0].weight.detach().clone()
    optimizer = build_optimizer(OptimizerSpec("x", optimizer_type, {"lr": 0.01}), model.parameters())
    torch.nn.functional.cross_entropy(model(torch.rand(8, 784)), torch.arange(8)).backward()
    optimizer.step()
    assert isinstance(optimizer, OPTIMIZER_TYPES[optimizer_type])
    assert not torch.equal(before, model[0].weight)


def test_momentum_entry_is_sgd_with_momentum():
    spec = OptimizerSpec("momentum", "sgd", {"lr": 0.01, "momentum": 0.9})
    optimizer = build_optimizer(spec, build_model(TUTORIAL_20).parameters())
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.9


def test_saved_state_dict_loads_with_weights_only(tmp_path):
    from stages.core.atomic import save_torch

    model = build_model(TUTORIAL_20)
    save_torch(tmp_path / "model.pt", model.state_dict())
    loaded = load_model(tmp_path / "model.pt", TUTORIAL_20, torch.device("cpu"))
    saved, restored = model.state_dict(), loaded.state_dict()
    assert saved.keys() == restored.keys() and all(torch.equal(saved[key], restored[key]) for key in saved)
    with pytest.raises(PipelineError, match="does not fit architecture 'mlp_128_64_relu'"):
        load_model(tmp_path / "model.pt", TUTORIAL_128_64, torch.device("cpu"))
    with pytest.raises(PipelineError, match="train a model first"):
        load_model(tmp_path / "absent.pt", TUTORIAL_20, torch.device("cpu"))


def test_auto_device_falls_back_to_cpu_only_when_nothing_else_is_there():
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("an accelerator is present")
    assert runtime.resolve_device("auto") == torch.device("cpu")


def test_absent_device_is_an_error_not_a_silent_cpu_fallback():
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(PipelineError, match=rf"device 'cuda:{count}' is not available.*available here: auto, cpu"):
        runtime.resolve_device(f"cuda:{count}")
