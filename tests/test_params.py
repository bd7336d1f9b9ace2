"""params.yaml is validated once, at the edge: a bad value is one line naming it and the choices."""

from __future__ import annotations

import copy

import pytest
import yaml

from stages.core.errors import PipelineError
from stages.core.params import load_params, parse_params
from tests.conftest import ROOT

DEFAULTS = yaml.safe_load((ROOT / "params.yaml").read_text())


def with_changes(**changes) -> dict:
    """The project's params with dotted keys replaced, e.g. ``{"optimizers.sgd.lr": -1}``."""
    raw = copy.deepcopy(DEFAULTS)
    for dotted, value in changes.items():
        *parents, key = dotted.split(".")
        section = raw
        for parent in parents:
            section = section[parent]
        section[key] = value
    return raw


def error_for(raw) -> str:
    with pytest.raises(PipelineError) as error:
        parse_params(raw)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_project_defaults_are_the_tutorial_setup():
    params = load_params(ROOT / "params.yaml")
    assert (params.arch, params.optimizer) == ("mlp_128_64_relu", "sgd")
    assert (params.train.epochs, params.train.batch_size) == (17, 100)
    assert (params.split.train_size, params.split.valid_size) == (50_000, 10_000)
    assert params.architecture.hidden == (128, 64) and params.architecture.activation == "relu"
    assert params.architectures["mlp_20_sigmoid"].layer_sizes == (784, 20, 10)
    assert params.optimizer_spec.type == "sgd" and params.optimizer_spec.hyperparameters["lr"] == 0.1
    assert params.optimizers["momentum"].hyperparameters == {"lr": 0.01, "momentum": 0.9}
    assert set(params.optimizers) == {"sgd", "momentum", "adagrad", "rmsprop", "adam"}


def test_unknown_arch_names_it_and_the_choices():
    message = error_for(with_changes(arch="resnet"))
    assert "arch = 'resnet'" in message and "mlp_128_64_relu, mlp_20_sigmoid" in message


def test_unknown_optimizer_names_it_and_the_choices():
    message = error_for(with_changes(optimizer="lbfgs"))
    assert "'lbfgs'" in message and "adagrad, adam, momentum, rmsprop, sgd" in message


@pytest.mark.parametrize("lr", [-1, 0, "fast", float("nan")])
def test_learning_rate_must_be_positive(lr):
    message = error_for(with_changes(**{"optimizers.sgd.lr": lr}))
    assert "optimizers.sgd.lr" in message


def test_every_optimizer_is_validated_not_only_the_chosen_one():
    assert "optimizers.adam.lr" in error_for(with_changes(**{"optimizers.adam.lr": -0.001}))


def test_torch_own_hyperparameter_checks_surface_as_one_line():
    message = error_for(with_changes(**{"optimizers.momentum.momentum": -0.5}))
    assert "optimizers.momentum" in message and "momentum" in message


def test_unknown_hyperparameter_lists_the_valid_ones():
    message = error_for(with_changes(**{"optimizers.adam.learning_rate": 0.1}))
    assert "learning_rate" in message and "betas" in message and "weight_decay" in message


def test_unknown_optimizer_type_lists_registry():
    assert "adagrad, adam, rmsprop, sgd" in error_for(with_changes(**{"optimizers.sgd.type": "lion"}))


def test_architecture_is_data_checked_for_sizes_and_activation():
    message = error_for(with_changes(**{"architectures.mlp_20_sigmoid.hidden": [0]}))
    assert "architectures.mlp_20_sigmoid.hidden" in message
    message = error_for(with_changes(**{"architectures.mlp_20_sigmoid.activation": "swish"}))
    assert "'swish'" in message and "gelu, relu, sigmoid, tanh" in message


def test_a_new_architecture_is_only_a_params_entry():
    raw = with_changes(arch="mlp_256_tanh")
    raw["architectures"]["mlp_256_tanh"] = {"hidden": [256], "activation": "tanh"}
    assert parse_params(raw).architecture.layer_sizes == (784, 256, 10)


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "CPU", ""])
def test_device_must_be_a_known_form(device):
    assert "auto, cpu, cuda, cuda:N, mps" in error_for(with_changes(device=device))


@pytest.mark.parametrize("key,value", [("train.epochs", 0), ("train.batch_size", 2.5), ("threads", 0), ("seed", True)])
def test_counts_must_be_positive_integers(key, value):
    assert key in error_for(with_changes(**{key: value}))


def test_checksums_must_be_sha256_hex():
    assert "mnist_sha256.test_labels = 'abc'" in error_for(with_changes(**{"mnist_sha256.test_labels": "abc"}))


def test_missing_section_is_named():
    raw = with_changes()
    del raw["train"]
    assert "train is missing" in error_for(raw)


def test_unreadable_file_is_one_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("arch: [unclosed\n")
    with pytest.raises(PipelineError, match="not valid YAML"):
        load_params(path)
    with pytest.raises(PipelineError, match="not found"):
        load_params(tmp_path / "absent.yaml")


def test_dvc_set_params_changes_only_the_lines_it_sets(tmp_path):
    """params.yaml is written in the style DVC writes it, so ``-S`` gives a one-line diff."""
    from dvc.utils.serialize import modify_yaml

    copy_path = tmp_path / "params.yaml"
    copy_path.write_text((ROOT / "params.yaml").read_text())
    with modify_yaml(str(copy_path)) as raw:
        raw["optimizer"] = "adam"
        raw["architectures"]["mlp_20_sigmoid"]["hidden"] = [30]
    before, after = (ROOT / "params.yaml").read_text().splitlines(), copy_path.read_text().splitlines()
    assert len(before) == len(after)
    changed = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    assert changed == [("optimizer: sgd", "optimizer: adam"), ("    - 20", "    - 30")]
