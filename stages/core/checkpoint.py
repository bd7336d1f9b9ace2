"""The training state on disk after every epoch, so an interrupted train stage loses at most one epoch.
No output (DVC deletes those before a run): under ``models/checkpoints/``, removed once outputs are written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import pickle
import sys
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

import stages
from stages.core import atomic
from stages.core.training import EpochResult

EPOCH_FIELDS = [field.name for field in dataclasses.fields(EpochResult)]


class FileCheckpoints:
    """A checkpoint file of one run, whose ``key`` names all its bits depend on; a file with another
    key, or unreadable, is set aside with one line saying so."""

    def __init__(self, path: Path, key: str, say: Callable[[str], None] = print):
        self.path, self.key, self.say, self.resumed_after = path, key, say, 0

    def load(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        try:
            # onto the CPU, whatever the run's device: generator states must be CPU tensors, and
            # load_state_dict moves weights and optimizer state to where the model is
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile):
            return self._set_aside("cannot be read")
        if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict) or not _history_ok(saved["state"]):
            return self._set_aside("holds no training state this stage wrote")
        key, state = saved.get("key"), saved["state"]
        if key != self.key:
            return self._set_aside("was made by a run with other code, params, data or numerics")
        self.resumed_after = len(state["history"])
        self.say(f"resuming after epoch {self.resumed_after} from {self.path}")
        return state

    def save(self, state: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save({"key": self.key, "state": state}, buffer)
        atomic.write(self.path, buffer.getvalue())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def _set_aside(self, why: str) -> None:
        stale = self.path.with_name(self.path.name + ".stale")
        self.path.replace(stale)
        self.say(f"{self.path} {why}: set aside as {stale}; training from the first epoch")


def _history_ok(state: dict[str, Any]) -> bool:
    """Epochs 1, 2, ... in order, with finite losses and an accuracy in [0, 1]: what a resumed run reports."""
    history, best = state.get("history"), state.get("best")
    if not isinstance(history, list) or not isinstance(best, dict) or best.get("epoch") not in range(len(history) + 1):
        return False
    for number, row in enumerate(history, start=1):
        if not isinstance(row, dict) or list(row) != EPOCH_FIELDS or row["epoch"] != number:
            return False
        values = [row[name] for name in EPOCH_FIELDS[1:]]
        if not all(isinstance(value, float) and math.isfinite(value) for value in values) or not 0 <= values[-1] <= 1:
            return False
    return True


def code_files() -> list[Path]:
    """Every file of the ``stages`` package this process has imported (what a stage's deps name), sorted."""
    package = Path(stages.__file__).parent
    files = {Path(module.__file__) for module in list(sys.modules.values()) if getattr(module, "__file__", None)}
    return sorted(path for path in files if path.is_relative_to(package))


def checkpoint_key(params_digest: str, fingerprint: str, data_files: Iterable[Path]) -> str:
    """The code's bytes, the params, the numerics and the data: only the very run that made it resumes."""
    digest = hashlib.sha256(f"{params_digest} {fingerprint}".encode())
    for path in (*code_files(), *data_files):
        digest.update(path.read_bytes())
    return digest.hexdigest()
