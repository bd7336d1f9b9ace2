"""The training state on disk after every epoch, so an interrupted train stage continues where it
stopped: a Ctrl-C, a killed process or a machine that went down lose at most one epoch.

DVC deletes a stage's outputs before running it, so the checkpoint is no output: it lives under
``models/checkpoints/`` (ignored by git), and the stage removes it once its outputs are written.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from stages.core import atomic
from stages.core.training import Checkpoints


class FileCheckpoints(Checkpoints):
    """A checkpoint file that belongs to one run: ``key`` names everything the run's bits depend on
    (its params, its data, the numerics fingerprint). A file with another key, or one that cannot
    be read, is never resumed: it is set aside with one line saying so."""

    def __init__(self, path: Path, key: str, say: Callable[[str], None] = print):
        self.path, self.key, self.say = path, key, say
        self.resumed_after = 0

    def load(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        try:
            # onto the CPU, whatever the run's device: generator states must be CPU tensors, and
            # load_state_dict moves weights and optimizer state to where the model is
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
            key, state = saved["key"], saved["state"]
        except (OSError, RuntimeError, KeyError, TypeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile):
            return self._set_aside("cannot be read")
        if key != self.key:
            return self._set_aside("was made by a run with other params, data or numerics")
        self.resumed_after = len(state["history"])
        self.say(f"resuming after epoch {self.resumed_after} from {self.path}")
        return state

    def save(self, state: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save({"key": self.key, "state": state}, buffer)
        atomic.write_bytes(self.path, buffer.getvalue())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def _set_aside(self, why: str) -> None:
        stale = self.path.with_name(self.path.name + ".stale")
        self.path.replace(stale)
        self.say(f"{self.path} {why}: set aside as {stale}; training from the first epoch")


def checkpoint_key(params_digest: str, fingerprint: str, data_files: Iterable[Path]) -> str:
    digest = hashlib.sha256(f"{params_digest} {fingerprint}".encode())
    for path in data_files:
        digest.update(path.read_bytes())
    return digest.hexdigest()
