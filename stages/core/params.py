"""params.yaml and catalog.yaml, validated once into typed objects; every stage reads its params
through here. params.yaml is the single configuration (what `dvc exp run -S` changes); catalog.yaml
holds the named entries it chooses from and the grid (kept apart: DVC shows every key of params.yaml
in each row of `dvc exp show`, but of another file only the keys a stage tracks). MNIST's files and
mirrors are data/mnist.yaml's (stages/core/mirrors.py).

A bad value raises ``PipelineError`` with one line naming the key, the value and what is allowed,
before any stage writes anything. Unknown keys are errors too, in every section: a misspelt key
that was silently ignored would make a run that is not what its params say.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from stages.core import atomic, numerics
from stages.core.errors import PipelineError
from stages.core.models import Architecture, parse_architecture, to_dict
from stages.core.optimizers import OptimizerSpec, build_optimizer, parse_optimizer
from stages.core.schedules import ScheduleSpec, build_scheduler, parse_schedule
from stages.core.schema import Section, read_yaml

PARAMS_KEYS = ("arch", "optimizer", "schedule", "seed", "device", "threads", "numerics", "split", "train", "evaluate")
CATALOG = "catalog.yaml"  # beside params.yaml
CATALOG_KEYS = ("grid", "architectures", "optimizers", "schedules")
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d{1,4})?")
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N, mps"
KEEP = ("last", "best")
MAX_SEED = 2**64 - 1  # torch's generators take unsigned 64-bit seeds
MAX_THREADS = 1024
MAX_SHIFT = 8


@dataclass(frozen=True)
class SplitParams:
    seed: int
    train_size: int
    valid_size: int


@dataclass(frozen=True)
class TrainParams:
    epochs: int
    batch_size: int
    keep: str
    """``last``, or ``best``: the epoch with the best validation accuracy (the earliest on a tie)."""
    patience: int
    """Stop after this many epochs without a better validation accuracy; 0 never stops early."""
    shift: int
    """Shift each training image by up to this many pixels, seeded, every epoch; 0 leaves them."""


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int


@dataclass(frozen=True)
class GridRecipe:
    arch: str
    optimizer: str
    schedule: str
    train: Mapping[str, Any]
    """Keys of ``train`` that this recipe sets differently."""


@dataclass(frozen=True)
class GridParams:
    seeds: int
    """Each recipe is trained with seeds ``seed``, ``seed + 1``, ... ``seed + seeds - 1``."""
    recipes: Mapping[str, GridRecipe]


@dataclass(frozen=True)
class Recipe:
    """Everything one training run depends on, resolved: what its digest covers and its log records."""

    arch: str
    architecture: Architecture
    optimizer: OptimizerSpec
    schedule: ScheduleSpec
    train: TrainParams
    seed: int
    split: SplitParams
    evaluate: EvaluateParams
    device: str
    threads: int
    numerics: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "architecture": to_dict(self.architecture),
            "optimizer": {"name": self.optimizer.name, "type": self.optimizer.type, **self.optimizer.hyperparameters},
            "schedule": {"name": self.schedule.name, "type": self.schedule.type, **self.schedule.hyperparameters},
            "train": asdict(self.train),
            "seed": self.seed,
            "split": asdict(self.split),
            "evaluate": asdict(self.evaluate),
            "device": self.device,
            "threads": self.threads,
            "numerics": self.numerics,
        }

    @property
    def digest(self) -> str:
        """Of the params this run used, and nothing else: editing an entry it does not use leaves it."""
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Params:
    arch: str
    optimizer: str
    schedule: str
    seed: int
    device: str
    threads: int
    numerics: str
    split: SplitParams
    train: TrainParams
    evaluate: EvaluateParams
    grid: GridParams
    architectures: Mapping[str, Architecture]
    optimizers: Mapping[str, OptimizerSpec]
    schedules: Mapping[str, ScheduleSpec]
    source: str = "params.yaml"

    @property
    def architecture(self) -> Architecture:
        return self.architectures[self.arch]

    def recipe(self, name: str | None = None, seed: int | None = None) -> Recipe:
        """The single configuration (``name`` None), or grid recipe ``name``; with another ``seed``."""
        arch, optimizer, schedule, train = self.arch, self.optimizer, self.schedule, self.train
        if name is not None:
            if name not in self.grid.recipes:
                raise PipelineError(f"no grid recipe {name!r}; recipes: {', '.join(self.grid.recipes)}")
            chosen = self.grid.recipes[name]
            arch, optimizer, schedule = chosen.arch, chosen.optimizer, chosen.schedule
            train = replace(train, **chosen.train)
        return Recipe(
            arch=arch,
            architecture=self.architectures[arch],
            optimizer=self.optimizers[optimizer],
            schedule=self.schedules[schedule],
            train=train,
            seed=self.seed if seed is None else seed,
            split=self.split,
            evaluate=self.evaluate,
            device=self.device,
            threads=self.threads,
            numerics=self.numerics,
        )

    @property
    def grid_seeds(self) -> list[int]:
        return [self.seed + offset for offset in range(self.grid.seeds)]


def load_params(path: str | Path = "params.yaml") -> Params:
    """``path`` and the catalog.yaml beside it."""
    path = Path(path)
    return parse_params(load_raw(path), str(path), str(path.with_name(CATALOG)))


def merge(params: Any, catalog: Any, source: str = "params.yaml", catalog_source: str = CATALOG) -> dict:
    """The two files' keys as one mapping; a key in the wrong file is one line saying where it belongs."""
    for raw, where, own, other in (
        (params, source, PARAMS_KEYS, catalog_source),
        (catalog, catalog_source, CATALOG_KEYS, source),
    ):
        section = Section(raw, where, "")
        for key in raw:
            if key not in own:
                elsewhere = key in PARAMS_KEYS + CATALOG_KEYS
                section.fail(
                    key,
                    raw[key],
                    f"it belongs in {other}" if elsewhere else f"unknown key; valid keys: {', '.join(own)}",
                )
    return {**params, **catalog}


def load_raw(path: str | Path = "params.yaml") -> dict:
    """``path`` and the catalog.yaml beside it as one mapping, not yet validated: for tools and
    tests that derive params of their own and ``write_raw`` them."""
    path = Path(path)
    return merge(read_yaml(path), read_yaml(path.with_name(CATALOG)), str(path), str(path.with_name(CATALOG)))


def write_raw(raw: Mapping[str, Any], path: str | Path = "params.yaml") -> None:
    """The keys of ``raw`` into ``path`` and the catalog.yaml beside it, each in the file it belongs in."""
    path = Path(path)
    for target, keys in ((path, PARAMS_KEYS), (path.with_name(CATALOG), CATALOG_KEYS)):
        atomic.write_text(target, yaml.safe_dump({k: v for k, v in raw.items() if k in keys}, sort_keys=False))


def check_unchanged(params: Params) -> None:
    """Call last before a stage writes: DVC records params.yaml as it is when the stage ends, so a
    change while it ran (another ``dvc exp run`` in this workspace, an edit) would be recorded
    beside outputs that the old params made."""
    if load_params(params.source) != params:
        raise PipelineError(
            f"{params.source} or {CATALOG} changed while this stage ran (another `dvc exp run` in this workspace, "
            "or an edit): nothing written; run it again, and queue experiments to run them side by side "
            "(dvc exp run --queue)"
        )


def parse_params(raw: Any, source: str = "params.yaml", catalog_source: str = CATALOG) -> Params:
    """Both files' keys in one mapping (``merge``); errors name the file each key belongs in."""
    root, catalog = Section(raw, source, ""), Section(raw, catalog_source, "")
    root.reject_unknown({*PARAMS_KEYS, *CATALOG_KEYS})
    architectures = {name: parse_architecture(name, entry) for name, entry in catalog.mapping("architectures").items()}
    optimizers = {name: parse_optimizer(name, entry) for name, entry in catalog.mapping("optimizers").items()}
    schedules = {name: parse_schedule(name, entry) for name, entry in catalog.mapping("schedules").items()}
    train = _train(root.section("train"))
    seed, grid_section = root.integer("seed", 0, MAX_SEED), catalog.section("grid")
    grid_section.reject_unknown({"seeds", "recipes"})
    seeds = grid_section.integer("seeds", 1, 100)
    if seed + seeds - 1 > MAX_SEED:
        grid_section.fail("seeds", seeds, f"seed + seeds - 1 must be at most {MAX_SEED}")
    params = Params(
        arch=root.choice("arch", architectures),
        optimizer=root.choice("optimizer", optimizers),
        schedule=root.choice("schedule", schedules),
        seed=seed,
        device=_device(root),
        threads=root.integer("threads", 1, MAX_THREADS),
        numerics=root.choice("numerics", numerics.MODES),
        split=_split(root.section("split")),
        train=train,
        evaluate=_evaluate(root.section("evaluate")),
        grid=GridParams(seeds, {}),
        architectures=architectures,
        optimizers=optimizers,
        schedules=schedules,
        source=source,
    )
    recipes = {str(name): _grid_recipe(params, section) for name, section in grid_section.mapping("recipes").items()}
    params = replace(params, grid=GridParams(seeds, recipes))
    _check_combination(params.recipe(), source)
    for name in recipes:
        _check_combination(params.recipe(name), f"{catalog_source}: grid.recipes.{name}")
    return params


def _check_combination(recipe: Recipe, where: str) -> None:
    """torch's checks of a schedule against the optimizer it drives (one-cycle needs momentum or
    betas, for one), on a throwaway parameter, over as many batches as the split gives."""
    optimizer = build_optimizer(recipe.optimizer, [torch.nn.Parameter(torch.zeros(1))])
    batches_per_epoch = math.ceil(recipe.split.train_size / recipe.train.batch_size)
    try:
        build_scheduler(recipe.schedule, optimizer, recipe.train.epochs, batches_per_epoch)
    except (TypeError, ValueError, ZeroDivisionError) as error:
        raise PipelineError(
            f"{where}: schedule {recipe.schedule.name!r} with optimizer {recipe.optimizer.name!r}: {error}"
        ) from None


def _train(section: Section, partial: bool = False) -> Any:
    """The train section; ``partial`` reads a grid recipe's overrides, where every key is optional."""
    readers = {
        "epochs": lambda: section.integer("epochs", 1, 100_000),
        "batch_size": lambda: section.integer("batch_size", 1, 10**9),
        "keep": lambda: section.choice("keep", KEEP),
        "patience": lambda: section.integer("patience", 0, 100_000),
        "shift": lambda: section.integer("shift", 0, MAX_SHIFT),
    }
    section.reject_unknown(set(readers))
    if partial:
        return {key: read() for key, read in readers.items() if key in section.raw}
    return TrainParams(**{key: read() for key, read in readers.items()})


def _split(section: Section) -> SplitParams:
    section.reject_unknown({"seed", "train_size", "valid_size"})
    return SplitParams(
        seed=section.integer("seed", 0, MAX_SEED),
        train_size=section.integer("train_size", 1, 10**9),
        valid_size=section.integer("valid_size", 1, 10**9),
    )


def _evaluate(section: Section) -> EvaluateParams:
    section.reject_unknown({"batch_size"})
    return EvaluateParams(batch_size=section.integer("batch_size", 1, 10**9))


def _grid_recipe(params: Params, section: Section) -> GridRecipe:
    section.reject_unknown({"arch", "optimizer", "schedule", "train"})
    return GridRecipe(
        arch=section.choice("arch", params.architectures),
        optimizer=section.choice("optimizer", params.optimizers),
        schedule=section.choice("schedule", params.schedules),
        train=_train(section.section("train", default={}), partial=True),
    )


def _device(root: Section) -> str:
    device = root.get("device")
    if not isinstance(device, str) or not DEVICE_PATTERN.fullmatch(device):
        root.fail("device", device, f"choose one of: {DEVICE_CHOICES} (N up to 9999)")
    return device
