"""params.yaml and catalog.yaml are validated once, at the edge: a bad value is one line naming it,
its file and the choices."""

from __future__ import annotations

import copy
import functools
import inspect
import math
import operator
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from dvc.utils.serialize import LOADERS

from stages.core.catalog import OPTIMIZER_KEYWORDS, SCHEDULE_KEYWORDS
from stages.core.errors import PipelineError
from stages.core.mirrors import load_source
from stages.core.models import build_model
from stages.core.optimizers import OPTIMIZER_TYPES
from stages.core.params import CATALOG_KEYS, PARAMS_KEYS, load_params, load_raw, parse_params, write_raw
from stages.core.schedules import SCHEDULE_TYPES
from stages.core.schema import parse_yaml, read_yaml, write_yaml
from stages.core.training import optimizer_and_scheduler
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


def test_readmes_command_for_cnn_small_as_the_single_configuration_trains_the_grids_recipe():
    """README's `dvc exp run -S arch=cnn_small ...` line: what a reader runs to get the table's recipe."""
    command = re.search(r"^dvc exp run -S arch=cnn_small .*$", (ROOT / "README.md").read_text(), re.MULTILINE)[0]
    assignments = dict(pair.split("=") for pair in re.findall(r"-S (\S+)", command))
    params = parse_params(with_changes(**{key: parse_yaml(value, key) for key, value in assignments.items()}))
    assert params.recipe() == params.recipe("cnn_small")


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
        "train.epoch = 1 is invalid; unknown key; valid keys: batch_size, epochs, keep, label_smoothing, patience, "
        "rotate, shift, zoom" in error_for(raw)
    )
    raw = with_changes()
    raw["architectures"]["lenet5"]["blocks"][0]["chanels"] = 8
    assert "architectures.lenet5.blocks[0].chanels" in error_for(raw)


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("optimizers.momentum.momentum", "high", "expected a number >= 0"),
        ("optimizers.adam.betas", [0.9], "expected a list of 2 numbers from 0 to below 1"),
        ("optimizers.momentum.dampening", float("inf"), "expected a finite number"),
        ("optimizers.sgd.nesterov", "yes", "expected true or false"),
        ("schedules.step.step_size", 0, "expected an integer >= 1"),
        ("schedules.onecycle.anneal_strategy", "cubic", "choose one of: cos, linear"),
        ("schedules.onecycle.max_lr", -0.1, "expected a number > 0"),  # torch would take it, and diverge
        ("schedules.cosine.eta_min", -0.001, "expected a number >= 0"),
        ("train.keep", "first", "choose one of: best, last"),
        ("train.shift", 30, "expected an integer from 0 to 8"),
        ("train.rotate", 200, "expected a number of degrees from 0 to 180"),
        ("train.zoom", 1.0, "expected a number from 0 to below 1"),
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


def test_an_item_of_a_list_is_named_by_its_index():
    raw = with_changes()
    raw["architectures"]["lenet5"]["blocks"][1]["kernel"] = 29
    assert "architectures.lenet5.blocks[1].kernel = 29 is invalid; expected an integer from 1 to 28" in error_for(raw)
    message = error_for(with_changes(**{"architectures.mlp_20_sigmoid.hidden": [20, 0]}))
    assert message.endswith("mlp_20_sigmoid.hidden[1] = 0 is invalid; expected an integer from 1 to 1,000,000,000")


def combination_error(**changes) -> str:
    """What training says of the single configuration, where its model and optimizer are built."""
    recipe = parse_params(with_changes(**changes)).recipe()
    model = build_model(recipe.architecture)
    with pytest.raises(PipelineError) as error:
        optimizer_and_scheduler(recipe, model, torch.device("cpu"), math.ceil(recipe.split.train_size / 100))
    assert "\n" not in str(error.value)
    return str(error.value)


def test_a_schedule_is_checked_against_the_optimizer_it_drives():
    message = combination_error(schedule="onecycle", optimizer="adagrad")  # no momentum to cycle
    assert message.startswith("catalog.yaml: schedule 'onecycle' with optimizer 'adagrad': ") and "momentum" in message


def test_what_spans_an_entrys_keywords_is_checked_for_every_entry_without_torch():
    message = error_for(with_changes(**{"optimizers.nesterov.momentum": 0}))
    assert message.endswith("optimizers.nesterov: Nesterov momentum requires a momentum > 0 and a dampening of 0")


def test_a_one_cycle_schedule_needs_more_than_one_step_of_warm_up_over_the_split():
    changes = {"schedule": "onecycle_lenet5", "optimizer": "nesterov", "train.epochs": 1, "split.train_size": 200}
    assert "a one-cycle warm-up of pct_start 0.25 x 2 steps (1 epochs x 2 batches)" in combination_error(**changes)


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
    source = read_yaml(ROOT / "data/mnist.yaml")
    source["sha256"]["test_labels"] = "abc"
    write_yaml(tmp_path / "mnist.yaml", source)
    with pytest.raises(PipelineError, match=r"mnist\.yaml: sha256\.test_labels = 'abc' is invalid; expected a SHA-256"):
        load_source(tmp_path / "mnist.yaml")


def test_a_key_in_the_other_file_says_where_it_belongs(tmp_path):
    """-S optimizers.adam.lr=0.01 (without catalog.yaml:) makes DVC add the key to params.yaml."""
    raw = read_yaml(ROOT / "params.yaml")
    raw["optimizers"] = {"adam": {"lr": 0.01}}
    write_yaml(tmp_path / "params.yaml", raw)
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
    """Counted on torch's meta device where the model is built: no memory, and params need no torch."""
    huge = parse_params(with_changes(**{"architectures.mlp_20_sigmoid.hidden": [1_000_000_000]}))
    with pytest.raises(PipelineError) as error:
        build_model(huge.architectures["mlp_20_sigmoid"])
    assert str(error.value) == (
        "catalog.yaml: architectures.mlp_20_sigmoid has 795,000,000,010 parameters; at most 100,000,000 are allowed"
    )
    assert error_for(with_changes(**{"architectures.mlp_20_sigmoid.hidden": [10**30]})) == (
        f"catalog.yaml: architectures.mlp_20_sigmoid.hidden[0] = {10**30} is invalid; "
        "expected an integer from 1 to 1,000,000,000"
    )


def edited(tmp_path, file: str, old: str, new: str) -> Path:
    """params.yaml and catalog.yaml in ``tmp_path``, with ``old`` replaced by ``new`` in ``file``."""
    for name in ("params.yaml", "catalog.yaml"):
        text = (ROOT / name).read_text()
        assert name != file or old in text
        (tmp_path / name).write_text(text.replace(old, new, 1) if name == file else text)
    return tmp_path / "params.yaml"


# Literals that YAML 1.1 (PyYAML) and 1.2 (ruamel.yaml, DVC's) read differently, as a user would
# hand-edit them: each line, the key DVC shows it as, and where a run records the value it used
# (None: refused). DVC writes `-S` values quoted where needed, so only hand edits can give these.
SGD_LR = "    lr: 0.1\n"  # optimizers.sgd's, the single configuration's optimizer
LR_USED = lambda run: run["optimizer"]["lr"]  # noqa: E731
DVC_MEANING = [
    ("params.yaml", "seed: 42", "seed: 010", "seed", lambda run: run["seed"]),  # 1.1: octal 8
    ("params.yaml", "  train_size: 50000", "  train_size: 010000", "split.train_size",
     lambda run: run["split"]["train_size"]),  # 1.1: 4096
    ("params.yaml", "  batch_size: 100", "  batch_size: 1:40", "train.batch_size", None),  # 1.1: sexagesimal 100
    ("params.yaml", "  keep: last", "  keep: off", "train.keep", None),  # 1.1: false
    ("catalog.yaml", SGD_LR, "    lr: 1e-3\n", "optimizers.sgd.lr", LR_USED),  # 1.1: a string
    ("catalog.yaml", SGD_LR, "    lr: 0o10\n", "optimizers.sgd.lr", LR_USED),  # 1.1: a string
    ("catalog.yaml", SGD_LR, SGD_LR + "    maximize: on\n", "optimizers.sgd.maximize", None),  # 1.1: true
    ("catalog.yaml", SGD_LR, SGD_LR + "    maximize: no\n", "optimizers.sgd.maximize", None),  # 1.1: false
]  # fmt: skip


@pytest.mark.parametrize(
    ("file", "old", "new", "key", "used"), DVC_MEANING, ids=[case[2].strip() for case in DVC_MEANING]
)
def test_a_run_trains_with_the_value_dvc_shows_or_refuses_it_in_one_line(tmp_path, file, old, new, key, used):
    path = edited(tmp_path, file, old, new)
    dvc = functools.reduce(operator.getitem, key.split("."), LOADERS[".yaml"](tmp_path / file))
    assert functools.reduce(operator.getitem, key.split("."), yaml.safe_load((tmp_path / file).read_text())) != dvc
    if used is None:
        with pytest.raises(PipelineError) as error:
            load_params(path)
        assert "\n" not in str(error.value) and f"{key} = {dvc!r} is invalid" in str(error.value)
    else:
        assert used(load_params(path).recipe().as_dict()) == dvc


def test_a_yaml_merge_key_means_what_it_means_to_dvc(tmp_path):
    """The old loader refused ``<<``, which DVC takes: an entry as another's keys, some replaced."""
    path = edited(tmp_path, "catalog.yaml", "  sgd:\n", "  sgd: &sgd\n")
    catalog, entry = (tmp_path / "catalog.yaml").read_text(), "  momentum:\n    type: sgd\n"
    (tmp_path / "catalog.yaml").write_text(catalog.replace(entry, entry.replace("type: sgd", "<<: *sgd")))
    dvc = LOADERS[".yaml"](tmp_path / "catalog.yaml")["optimizers"]["momentum"]
    spec = load_params(path).optimizers["momentum"]
    assert dvc == {"type": spec.type, **spec.hyperparameters} == {"type": "sgd", "lr": 0.01, "momentum": 0.9}


def test_params_written_back_read_as_dvc_reads_them(tmp_path):
    """Strings that YAML 1.2 would read as numbers or booleans unquoted are quoted, and block style kept."""
    raw = copy.deepcopy(DEFAULTS)
    raw["optimizers"]["sgd"].update({"a": "010", "b": "1:40", "c": "0o10", "d": "yes", "e": 1e-05, "f": "1e-3"})
    write_raw(raw, tmp_path / "params.yaml")
    for name, keys in (("params.yaml", PARAMS_KEYS), ("catalog.yaml", CATALOG_KEYS)):
        assert LOADERS[".yaml"](tmp_path / name) == {key: raw[key] for key in keys}
        assert "{" not in (tmp_path / name).read_text()


def test_reading_params_loads_no_torch():
    """Stages read threads and numerics before torch loads, and validating them builds no torch object."""
    code = (
        "import sys; from stages.core.params import load_params; from stages.core.mirrors import load_source; "
        "load_params(); load_source('data/mnist.yaml'); assert 'torch' not in sys.modules, 'torch loaded'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_each_type_takes_exactly_its_torch_class_keywords():
    """Declared beside their ranges in catalog.py, so they are checked without torch: held to torch here."""
    loop = {"optimizer", "last_epoch", "verbose", "T_max", "total_steps", "epochs", "steps_per_epoch"}
    schedulers = {name: kind.scheduler for name, kind in SCHEDULE_TYPES.items()}
    for declared, classes, exclude in ((OPTIMIZER_KEYWORDS, OPTIMIZER_TYPES, {"params"}),
                                       (SCHEDULE_KEYWORDS, schedulers, loop)):  # fmt: skip
        assert declared.keys() == classes.keys()
        for name, cls in classes.items():
            torch_keywords = set() if cls is None else set(inspect.signature(cls).parameters) - exclude
            assert set(declared[name].__pydantic_fields__) - {"type"} == torch_keywords, name
