"""Each schedule ``type`` of catalog.yaml (keywords in stages/core/catalog.py) as a torch scheduler, the
keywords the loop sets, and whether it steps per batch or per epoch, as torch intends."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.optim import lr_scheduler

from stages.core.catalog import ScheduleSpec


@dataclass(frozen=True)
class ScheduleType:
    scheduler: type[lr_scheduler.LRScheduler] | None
    per_batch: bool
    fixed: Callable[[int, int], dict[str, int]] = lambda epochs, batches: {}  # from epochs, batches per epoch


SCHEDULE_TYPES: dict[str, ScheduleType] = {
    "none": ScheduleType(None, per_batch=False),
    "step": ScheduleType(lr_scheduler.StepLR, per_batch=False),
    "cosine": ScheduleType(lr_scheduler.CosineAnnealingLR, per_batch=False, fixed=lambda epochs, _: {"T_max": epochs}),
    "onecycle": ScheduleType(
        lr_scheduler.OneCycleLR, per_batch=True, fixed=lambda epochs, batches: {"total_steps": epochs * batches}
    ),
}


@dataclass(frozen=True)
class Scheduler:
    scheduler: lr_scheduler.LRScheduler
    per_batch: bool

    def step(self) -> None:
        self.scheduler.step()


def build_scheduler(
    spec: ScheduleSpec, optimizer: torch.optim.Optimizer, epochs: int, batches_per_epoch: int
) -> Scheduler | None:
    """None for ``none``: no scheduler at all, so the learning rate is exactly the optimizer's."""
    kind = SCHEDULE_TYPES[spec.type]
    if kind.scheduler is None:
        return None
    values = spec.hyperparameters
    if spec.type == "onecycle":  # torch divides by the warm-up's length less one step
        pct_start = values.get("pct_start", inspect.signature(lr_scheduler.OneCycleLR).parameters["pct_start"].default)
        if pct_start * epochs * batches_per_epoch <= 1:
            raise ValueError(  # as torch's own checks do: training.py reports it as one line
                f"a one-cycle warm-up of pct_start {pct_start} x {epochs * batches_per_epoch} "
                f"steps ({epochs} epochs x {batches_per_epoch} batches) is not over one step; train for more steps "
                "or raise pct_start"
            )
    return Scheduler(kind.scheduler(optimizer, **values, **kind.fixed(epochs, batches_per_epoch)), kind.per_batch)
