"""Architectures are data in two families; a saved model carries the architecture it has."""

from __future__ import annotations

from typing import Annotated, Literal

import pytest
import torch
from pydantic import Field

from stages.core import catalog, data, models, runtime
from stages.core.catalog import CNN, MLP, ConvBlock, Head
from stages.core.errors import PipelineError
from stages.core.models import build_model, count_parameters, load_trained, model_bytes
from stages.core.optimizers import OPTIMIZER_TYPES, OptimizerSpec, build_optimizer
from stages.core.params import load_params, load_raw, write_raw
from stages.core.schema import Flag, typed
from stages.core.training import train_recipe
from testing.synthetic import synthetic_digits
from tests.conftest import ROOT

PARAMS = load_params(ROOT / "params.yaml")
TUTORIAL_20 = PARAMS.architectures["mlp_20_sigmoid"]
TUTORIAL_128_64 = PARAMS.architectures["mlp_128_64_relu"]
CPU = torch.device("cpu")


def test_tutorial_models_have_the_tutorial_parameter_counts():
    assert count_parameters(build_model(TUTORIAL_20)) == 15_910
    assert count_parameters(build_model(TUTORIAL_128_64)) == 109_386


def test_lenet5_has_lenet5s_layers_and_parameter_count():
    model = build_model(PARAMS.architectures["lenet5"])
    convolutions = [layer for layer in model if isinstance(layer, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size) for c in convolutions] == [(6, (5, 5)), (16, (5, 5))]
    # conv 6x(25+1), conv 16x(6x25+1), fc 400->120, 120->84, 84->10
    assert count_parameters(model) == 156 + 2_416 + 48_120 + 10_164 + 850


@pytest.mark.parametrize("name", sorted(PARAMS.architectures))
def test_every_architecture_maps_rows_of_784_pixels_to_10_logits(name):
    model = build_model(PARAMS.architectures[name]).eval()
    assert model(torch.rand(3, 784)).shape == (3, 10)


def test_a_cnn_block_is_conv_batch_norm_activation_pool_dropout_in_that_order():
    architecture = CNN(
        "x", "gelu", (ConvBlock(4, 3, padding=1, batch_norm=True, pool=2, dropout=0.25),), Head((8,), True, 0.5)
    )
    kinds = [type(layer).__name__ for layer in build_model(architecture)]
    assert kinds == [
        "Unflatten", "Conv2d", "BatchNorm2d", "GELU", "MaxPool2d", "Dropout",
        "Flatten", "Linear", "BatchNorm1d", "GELU", "Dropout", "Linear",
    ]  # fmt: skip
    assert build_model(architecture)[1].bias is None  # batch norm's shift makes a bias redundant


def test_an_mlp_with_dropout_drops_after_each_activation():
    kinds = [type(layer).__name__ for layer in build_model(MLP("x", (8, 4), "relu", dropout=0.2))]
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]


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


def saved(tmp_path, architecture, digest="d1"):
    path = tmp_path / "model.pt"
    model = build_model(architecture)
    path.write_bytes(model_bytes(model, architecture, {"arch": architecture.name}, digest))
    return path, model


@pytest.mark.parametrize("name", ["mlp_20_sigmoid", "cnn_small"])
def test_a_saved_model_loads_with_weights_only_and_carries_its_architecture(tmp_path, name):
    architecture = PARAMS.architectures[name]
    path, model = saved(tmp_path, architecture)
    loaded = load_trained(path, CPU)
    assert loaded.architecture == architecture and loaded.params_digest == "d1" and loaded.run == {"arch": name}
    for (key, a), b in zip(model.state_dict().items(), loaded.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), key
    assert not loaded.model.training


def test_loading_into_another_architecture_names_both(tmp_path):
    path, _ = saved(tmp_path, TUTORIAL_128_64)
    tanh = MLP("mlp_128_64_relu", (128, 64), "tanh")  # same name and shapes: only the file knows better
    with pytest.raises(PipelineError, match=r"holds architecture 'mlp_128_64_relu', but params.yaml asks for "
                       r"'mlp_128_64_relu' \(activation: relu in the file, tanh in catalog.yaml\)"):  # fmt: skip
        load_trained(path, CPU, expected=tanh)


@pytest.mark.parametrize(
    "damage",
    [lambda data: b"", lambda data: data[: len(data) // 2], lambda data: b"not a model at all"],
    ids=["empty", "truncated", "foreign"],
)
def test_an_unreadable_model_file_is_one_line(tmp_path, damage):
    path, _ = saved(tmp_path, TUTORIAL_20)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(PipelineError, match="is not a model saved by this project's train stage"):
        load_trained(path, CPU)


def test_a_bare_state_dict_is_refused_as_foreign(tmp_path):
    """Models of earlier versions held only weights: which architecture they fit is unknown."""
    torch.save(build_model(TUTORIAL_20).state_dict(), tmp_path / "old.pt")
    with pytest.raises(PipelineError, match="foreign"):
        load_trained(tmp_path / "old.pt", CPU)


def test_no_model_or_a_folder_in_its_place_is_one_line(tmp_path):
    with pytest.raises(PipelineError, match="absent.pt not found: train a model first"):
        load_trained(tmp_path / "absent.pt", CPU)
    with pytest.raises(PipelineError, match="is a directory, not a model file"):
        load_trained(tmp_path, CPU)


def test_auto_device_falls_back_to_cpu_only_when_nothing_else_is_there():
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("an accelerator is present")
    assert runtime.resolve_device("auto") == CPU


def test_absent_device_is_an_error_not_a_silent_cpu_fallback():
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(PipelineError, match=rf"device 'cuda:{count}' is not available.*available here: auto, cpu"):
        runtime.resolve_device(f"cuda:{count}")


@typed
class Linear:
    """A family of one layer, 784 -> 10: what docs/extending.md's steps add."""

    name: Annotated[str, Field(exclude=True)]
    bias: Flag = True
    family: Literal["linear"] = "linear"


@pytest.fixture
def linear_family(monkeypatch):
    """Added as docs/extending.md says: the class in catalog's ARCHITECTURE_FAMILIES, its builder in models'."""
    monkeypatch.setitem(catalog.ARCHITECTURE_FAMILIES, "linear", Linear)
    monkeypatch.setitem(
        models.FAMILIES, "linear", lambda arch: torch.nn.Sequential(torch.nn.Linear(784, 10, arch.bias))
    )


def test_a_new_family_is_a_catalog_entry_that_trains_and_saves(linear_family, tmp_path):
    raw = load_raw(ROOT / "params.yaml")
    raw["architectures"]["probe"] = {"family": "linear", "bias": False}
    raw |= {"arch": "probe", "train": {**raw["train"], "epochs": 1, "batch_size": 64}}
    write_raw(raw, tmp_path / "params.yaml")
    recipe = load_params(tmp_path / "params.yaml").recipe()
    assert recipe.architecture == Linear("probe", bias=False)
    images, labels = synthetic_digits(64, seed=1)  # one batch: one step
    subset = data.Subset(images, labels, torch.arange(64))
    model, result = train_recipe(recipe, subset, subset, CPU)
    assert [layer.bias for layer in model] == [None] and len(result.history) == 1
    assert load_trained(saved(tmp_path, recipe.architecture)[0], CPU).architecture == recipe.architecture
    raw["architectures"]["probe"]["bais"] = False
    write_raw(raw, tmp_path / "params.yaml")
    with pytest.raises(PipelineError, match=r"probe\.bais = False is invalid; unknown key; valid keys: bias, family$"):
        load_params(tmp_path / "params.yaml")
