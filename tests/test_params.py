"""params.yaml and catalog.yaml are validated once, at the edge: a bad value is one line naming it,
its file and the choices."""

from __future__ import annotations

import copy

import pytest
import yaml

from stages.core.errors import PipelineError
from stages.core.mirrors import load_source
from stages.core.params import load_params, load_raw, parse_params
from tests.conftest import ROOT

DEFAULTS = load_raw(ROOT / "params.yaml")
TUTORIAL_OPTIMIZERS = ("sgd", "momentum", "adagrad", "rmsprop", "adam")


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


def test_the_grid_trains_both_mlps_with_every_optimizer_and_each_cnn_with_its_recipe():
    params = load_params(ROOT / "params.yaml")
    mlp_cells = {(r.arch, r.optimizer) for r in params.grid.recipes.values() if r.arch.startswith("mlp")}
    assert mlp_cells == {(a, o) for a in ("mlp_20_sigmoid", "mlp_128_64_relu") for o in TUTORIAL_OPTIMIZERS}
    assert {"lenet5", "cnn_small"} <= {r.arch for r in params.grid.recipes.values()}
    cnn = params.recipe("cnn_small", seed=43)
    assert cnn.architecture.family == "cnn" and cnn.seed == 43 and cnn.train.shift > 0
    assert params.grid_seeds == [42, 43, 44]


def test_a_grid_recipe_is_the_single_configuration_when_it_names_the_same_entries():
    params = load_params(ROOT / "params.yaml")
    assert params.recipe("mlp_128_64_relu-sgd").digest == params.recipe().digest
    assert params.recipe("mlp_128_64_relu-sgd", seed=43).digest != params.recipe().digest


def test_the_params_digest_covers_only_the_entries_a_run_uses():
    digest = parse_params(DEFAULTS).recipe().digest
    assert parse_params(with_changes(**{"optimizers.adam.lr": 0.5})).recipe().digest == digest
    assert parse_params(with_changes(**{"optimizers.sgd.lr": 0.5})).recipe().digest != digest
    assert parse_params(with_changes(**{"train.epochs": 3})).recipe().digest != digest


def test_unknown_arch_names_it_and_the_choices():
    message = error_for(with_changes(arch="resnet"))
    assert "arch = 'resnet'" in message and "mlp_128_64_relu, mlp_20_sigmoid" in message


def test_unknown_optimizer_names_it_and_the_choices():
    message = error_for(with_changes(optimizer="lbfgs"))
    assert "'lbfgs'" in message and "adagrad, adam, adamw, momentum, nesterov, rmsprop, sgd" in message


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
    assert "adagrad, adam, adamw, rmsprop, sgd" in error_for(with_changes(**{"optimizers.sgd.type": "lion"}))


def test_an_unknown_key_anywhere_is_an_error_naming_it_and_the_valid_ones():
    """A misspelt key would otherwise be ignored, and the run would not be what its params say."""
    raw = with_changes()
    raw["optimiser"] = "adam"
    assert "optimiser = 'adam' is invalid; unknown key; valid keys: arch, architectures, device," in error_for(raw)
    raw = with_changes()
    raw["train"]["epoch"] = 1
    assert (
        "train.epoch = 1 is invalid; unknown key; valid keys: batch_size, epochs, keep, patience, shift"
        in error_for(raw)
    )
    raw = with_changes()
    raw["architectures"]["lenet5"]["blocks"][0]["chanels"] = 8
    assert "architectures.lenet5.blocks[0].chanels" in error_for(raw)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("optimizers.momentum.momentum", "high", "expected a finite number"),
        ("optimizers.adam.betas", [0.9], "expected a list of two finite numbers"),
        ("optimizers.sgd.nesterov", "yes", "expected true or false"),
        ("schedules.step.step_size", 0, "expected an integer >= 1"),
        ("schedules.onecycle.anneal_strategy", "cubic", "choose one of: cos, linear"),
        ("train.keep", "first", "choose one of: best, last"),
        ("train.shift", 30, "expected an integer from 0 to 8"),
        ("architectures.mlp_20_sigmoid.dropout", 1.5, "expected a number from 0 to below 1"),
    ],
)
def test_a_value_of_the_wrong_kind_says_what_was_expected(key, value, expected):
    message = error_for(with_changes(**{key: value}))
    assert f"{key} = {value!r} is invalid; {expected}" in message


@pytest.mark.parametrize(
    ("key", "value"),
    [("seed", 2**64), ("split.seed", -1), ("threads", 10**20), ("device", "cuda:99999999999999999999")],
)
def test_an_out_of_range_number_is_one_line_not_a_traceback(key, value):
    assert f"{key} = {value!r} is invalid" in error_for(with_changes(**{key: value}))


def test_grid_seeds_must_stay_within_torchs_seed_range():
    assert "grid.seeds = 3 is invalid" in error_for(with_changes(seed=2**64 - 2))


def test_a_schedule_is_checked_against_the_optimizer_it_drives():
    message = error_for(with_changes(schedule="onecycle", optimizer="adagrad"))  # no momentum to cycle
    assert "schedule 'onecycle' with optimizer 'adagrad'" in message and "momentum" in message


def test_a_one_cycle_schedule_needs_more_than_one_step_of_warm_up_over_the_split():
    raw = with_changes(**{"schedule": "onecycle_lenet5", "optimizer": "nesterov", "train.epochs": 1,
                          "split.train_size": 200})  # fmt: skip
    assert "a one-cycle warm-up of pct_start 0.25 x 2 steps (1 epochs x 2 batches)" in error_for(raw)


def test_a_grid_recipe_names_existing_entries():
    raw = with_changes()
    raw["grid"]["recipes"]["lenet5"]["optimizer"] = "lion"
    assert "grid.recipes.lenet5.optimizer = 'lion' is invalid; choose one of:" in error_for(raw)


def test_a_cnn_whose_kernel_no_longer_fits_its_feature_map_is_refused():
    raw = with_changes()
    raw["architectures"]["lenet5"]["blocks"].append({"channels": 8, "kernel": 7})
    assert "architectures.lenet5: blocks[2]: kernel 7 does not fit a 5x5 map" in error_for(raw)


def test_architecture_is_data_checked_for_sizes_and_activation():
    message = error_for(with_changes(**{"architectures.mlp_20_sigmoid.hidden": [0]}))
    assert "architectures.mlp_20_sigmoid.hidden" in message
    message = error_for(with_changes(**{"architectures.mlp_20_sigmoid.activation": "swish"}))
    assert "'swish'" in message and "gelu, relu, sigmoid, tanh" in message


def test_a_new_architecture_is_only_a_params_entry():
    raw = with_changes(arch="mlp_256_tanh")
    raw["architectures"]["mlp_256_tanh"] = {"family": "mlp", "hidden": [256], "activation": "tanh"}
    assert parse_params(raw).architecture.hidden == (256,)


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "CPU", ""])
def test_device_must_be_a_known_form(device):
    assert "auto, cpu, cuda, cuda:N, mps" in error_for(with_changes(device=device))


@pytest.mark.parametrize("key,value", [("train.epochs", 0), ("train.batch_size", 2.5), ("threads", 0), ("seed", True)])
def test_counts_must_be_positive_integers(key, value):
    assert key in error_for(with_changes(**{key: value}))


def test_checksums_must_be_sha256_hex(tmp_path):
    source = yaml.safe_load((ROOT / "data/mnist.yaml").read_text())
    source["sha256"]["test_labels"] = "abc"
    (tmp_path / "mnist.yaml").write_text(yaml.safe_dump(source))
    with pytest.raises(PipelineError, match=r"mnist\.yaml: sha256\.test_labels = 'abc' is invalid; expected a SHA-256"):
        load_source(tmp_path / "mnist.yaml")


def test_a_key_in_the_other_file_says_where_it_belongs(tmp_path):
    """-S optimizers.adam.lr=0.01 (without catalog.yaml:) makes DVC add the key to params.yaml."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["optimizers"] = {"adam": {"lr": 0.01}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "catalog.yaml").write_text((ROOT / "catalog.yaml").read_text())
    with pytest.raises(PipelineError) as error:
        load_params(tmp_path / "params.yaml")
    params, catalog = tmp_path / "params.yaml", tmp_path / "catalog.yaml"
    assert str(error.value) == f"{params}: optimizers = {{'adam': {{'lr': 0.01}}}} is invalid; it belongs in {catalog}"


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

    changed = []
    for name, key, value in (("params.yaml", "optimizer", "adam"), ("catalog.yaml", "architectures", [30])):
        copy_path = tmp_path / name
        copy_path.write_text((ROOT / name).read_text())
        with modify_yaml(str(copy_path)) as raw:
            if key == "architectures":
                raw[key]["mlp_20_sigmoid"]["hidden"] = value
            else:
                raw[key] = value
        before, after = (ROOT / name).read_text().splitlines(), copy_path.read_text().splitlines()
        assert len(before) == len(after)
        changed += [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    assert changed == [("optimizer: sgd", "optimizer: adam"), ("    - 20", "    - 30")]


def test_a_key_given_twice_is_refused_as_dvc_refuses_it(tmp_path):
    """yaml.safe_load would take the last value silently, and DVC would refuse the file."""
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text() + "seed: 7\n")
    (tmp_path / "catalog.yaml").write_text((ROOT / "catalog.yaml").read_text())
    with pytest.raises(PipelineError) as error:
        load_params(path)
    assert str(error.value).startswith(f"{path} is not valid YAML: key 'seed' appears twice (line ")


def test_a_yaml_alias_bomb_is_one_short_line(tmp_path):
    """Nine levels of nine aliases: shared lists when loaded, 387 million strings if the error line expanded them."""
    bomb = ['arch: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    bomb += [f"grid_{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 9)}]" for level in range(1, 9)]
    path = tmp_path / "params.yaml"
    (tmp_path / "catalog.yaml").write_text((ROOT / "catalog.yaml").read_text())
    path.write_text("\n".join(bomb) + "\n" + (ROOT / "params.yaml").read_text().replace("arch: mlp_128_64_relu\n", ""))
    with pytest.raises(PipelineError) as error:
        load_params(path)
    assert "\n" not in str(error.value) and len(str(error.value)) < 400


def test_a_network_too_large_to_allocate_is_refused_by_its_parameter_count():
    message = error_for(with_changes(**{"architectures.mlp_20_sigmoid.hidden": [1_000_000_000]}))
    assert message == (
        "catalog.yaml: architectures.mlp_20_sigmoid has 795,000,000,010 parameters; at most 100,000,000 are allowed"
    )
    assert "expected a list of integers from 1 to 1,000,000,000" in error_for(
        with_changes(**{"architectures.mlp_20_sigmoid.hidden": [10**30]})
    )
