"""params.yaml (the single configuration, what `dvc exp run -S` changes) and catalog.yaml (the named
entries it chooses from, and the grid; apart because `dvc exp show` shows every key of params.yaml),
read as DVC reads them and validated once into typed objects, torch-free: a bad value or unknown key
is a ``PipelineError`` of one line, before any stage writes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from stages.core import numerics
from stages.core.catalog import (
    Architecture,
    Architectures,
    Degrees,
    Fraction,
    Optimizers,
    Schedules,
    Size,
    Spec,
    to_dict,
)
from stages.core.errors import PipelineError
from stages.core.schema import SHOWN, Text, choice, integer, invalid, read_yaml, said, typed, validate, write_yaml

PARAMS_KEYS = ("arch", "optimizer", "schedule", "seed", "device", "threads", "numerics", "split", "train", "evaluate")
CATALOG = "catalog.yaml"  # beside params.yaml
CATALOG_KEYS = ("grid", "architectures", "optimizers", "schedules")
MAX_SEED = 2**64 - 1  # torch's generators take unsigned 64-bit seeds
Seed = integer(0, MAX_SEED)
Device = said(
    Annotated[str, StringConstraints(strict=True, pattern=r"^(auto|cpu|mps|cuda(:\d{1,4})?)$")],
    "choose one of: auto, cpu, cuda, cuda:N, mps (N up to 9999)",
)


@typed
class SplitParams:
    seed: Seed
    train_size: Size
    valid_size: Size


@typed
class TrainParams:
    epochs: integer(1, 100_000)
    batch_size: Size
    keep: choice("last", "best")  # best: the epoch of the best validation accuracy, the earliest on a tie
    patience: integer(0, 100_000)  # epochs without a better validation accuracy before stopping; 0 never stops
    shift: integer(0, 8)  # pixels each training image moves, seeded, every epoch; 0 leaves them
    rotate: Degrees  # the most each training image turns each way, seeded, every epoch; 0 leaves them
    zoom: Fraction  # the most it grows or shrinks, as a fraction of its size, seeded: 0.1 is 90% to 110%
    label_smoothing: Fraction  # of each target's probability spread over all classes (the training loss)


@typed
class EvaluateParams:
    batch_size: Size


@typed
class GridRecipe:
    arch: Text
    optimizer: Text
    schedule: Text
    train: dict[str, Any] = Field(default_factory=dict)  # keys of train set otherwise (checked in parse_params)


@typed
class GridParams:
    seeds: integer(1, 100)  # each recipe trained with seeds seed, seed + 1, ... seed + seeds - 1
    recipes: Annotated[dict[str, GridRecipe], Field(min_length=1)]


@dataclass(frozen=True)
class Recipe:
    """Everything one training run depends on, resolved: what its digest covers and its log records."""

    arch: str
    architecture: Architecture
    optimizer: Spec
    schedule: Spec
    train: TrainParams
    seed: int
    split: SplitParams
    evaluate: EvaluateParams
    device: str
    threads: int
    numerics: str

    def as_dict(self) -> dict[str, Any]:
        specs = {"optimizer": self.optimizer, "schedule": self.schedule}
        specs = {key: {"name": spec.name, "type": spec.type, **spec.hyperparameters} for key, spec in specs.items()}
        return asdict(self) | {"architecture": to_dict(self.architecture), **specs}  # each key stays where it was

    @property
    def digest(self) -> str:
        """Of the params this run used, and nothing else: editing an entry it does not use leaves it."""
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()[:16]


@typed
class Params:
    arch: Text
    optimizer: Text
    schedule: Text
    seed: Seed
    device: Device
    threads: integer(1, 1024)
    numerics: choice(*numerics.MODES)
    split: SplitParams
    train: TrainParams
    evaluate: EvaluateParams
    grid: GridParams
    architectures: Architectures
    optimizers: Optimizers
    schedules: Schedules
    source: str = Field("params.yaml", exclude=True)  # the file, not a key of it

    @property
    def architecture(self) -> Architecture:
        return self.architectures[self.arch]

    def recipe(self, name: str | None = None, seed: int | None = None) -> Recipe:
        """The single configuration (``name`` None), or grid recipe ``name``; with another ``seed``."""
        if name is not None and name not in self.grid.recipes:
            raise PipelineError(f"no grid recipe {name!r}; recipes: {', '.join(self.grid.recipes)}")
        chosen = self if name is None else self.grid.recipes[name]
        entries = self.architectures[chosen.arch], self.optimizers[chosen.optimizer], self.schedules[chosen.schedule]
        train = self.train if name is None else replace(self.train, **chosen.train)
        seed = self.seed if seed is None else seed
        return Recipe(
            chosen.arch, *entries, train, seed, self.split, self.evaluate, self.device, self.threads, self.numerics
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
        if not isinstance(raw, Mapping):
            raise PipelineError(f"{where} must be a mapping of keys to values, got {SHOWN.repr(raw)}")
        for key in raw:
            if key not in own:
                elsewhere = key in PARAMS_KEYS + CATALOG_KEYS
                expected = f"it belongs in {other}" if elsewhere else f"unknown key; valid keys: {', '.join(own)}"
                raise PipelineError(invalid(f"{where}: {key}", raw[key], expected))
    return {**params, **catalog}


def load_raw(path: str | Path = "params.yaml") -> dict:
    """``path`` and the catalog.yaml beside it as one mapping, not yet validated (for ``write_raw``)."""
    path = Path(path)
    return merge(read_yaml(path), read_yaml(path.with_name(CATALOG)), str(path), str(path.with_name(CATALOG)))


def write_raw(raw: Mapping[str, Any], path: str | Path = "params.yaml") -> None:
    """The keys of ``raw`` into ``path`` and the catalog.yaml beside it, each where it belongs, as DVC writes them."""
    path = Path(path)
    for target, keys in ((path, PARAMS_KEYS), (path.with_name(CATALOG), CATALOG_KEYS)):
        write_yaml(target, {key: value for key, value in raw.items() if key in keys})


def check_unchanged(params: Params) -> None:
    """Call last before a stage writes: DVC records params.yaml as it is when the stage ends, so a change
    while it ran would be recorded beside outputs that the old params made."""
    if load_params(params.source) != params:
        raise PipelineError(
            f"{params.source} or {CATALOG} changed while this stage ran (another `dvc exp run` in this workspace, "
            "or an edit): nothing written; run it again, and queue experiments to run them side by side "
            "(dvc exp run --queue)"
        )


def parse_params(raw: Mapping[str, Any], source: str = "params.yaml", catalog_source: str = CATALOG) -> Params:
    """Both files' keys in one mapping (``merge``); errors name the file each key belongs in."""
    params = validate(Params, {**raw, "source": source}, lambda key: catalog_source if key in CATALOG_KEYS else source)
    grid = f"{catalog_source}: grid"
    if params.seed + params.grid.seeds - 1 > MAX_SEED:
        raise PipelineError(invalid(f"{grid}.seeds", params.grid.seeds, f"seed + seeds - 1 must be at most {MAX_SEED}"))
    named = {"arch": params.architectures, "optimizer": params.optimizers, "schedule": params.schedules}
    recipes = {f"{grid}.recipes.{name}.": recipe for name, recipe in params.grid.recipes.items()}
    for where, chosen in {f"{source}: ": params, **recipes}.items():
        for key, entries in named.items():
            if getattr(chosen, key) not in entries:
                allowed = f"choose one of: {', '.join(sorted(entries))}"
                raise PipelineError(invalid(where + key, getattr(chosen, key), allowed))
    for name, recipe in params.grid.recipes.items():  # its train keys over params.yaml's, as a run takes them
        validate(
            TrainParams, {**asdict(params.train), **recipe.train}, catalog_source, ("grid", "recipes", name, "train")
        )
    return params
