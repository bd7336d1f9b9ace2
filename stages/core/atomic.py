"""Write-then-rename helpers, so an interrupted or failed stage never leaves a half-written output."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one rename; readers see the old file or the new one. The
    file gets the mode a plain ``open()`` would give it, so others can read what they may."""
    write_together({path: data})


def write_together(contents: Mapping[str | os.PathLike, bytes]) -> None:
    """Replace each path with its bytes together: every file is written beside its target first and
    renamed only once all are written, so a failed write leaves each old file as it was."""
    mode = 0o666 & ~_umask()
    staged = {}
    try:
        for path, data in contents.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            staged[tmp] = path
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fchmod(handle.fileno(), mode)  # not mkstemp's 0600, which hides it from group and web
                os.fsync(handle.fileno())
        for tmp, path in staged.items():
            os.replace(tmp, path)
    except BaseException:
        for tmp in staged:
            Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Indented, key-ordered as given, newline-terminated: stable bytes for git and ``dvc metrics diff``."""
    write_text(path, json.dumps(obj, indent=2) + "\n")


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` into memory first: the archive is then named the same whatever the file is
    called, so the bytes are reproducible, and the file appears in one rename."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())


PROC_STATUS = Path("/proc/self/status")
_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process's umask, read where Linux shows it: setting it to read it, the only other way,
    changes it for a moment for every thread."""
    try:
        for line in PROC_STATUS.read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    with _UMASK_LOCK:  # two threads interleaving set-and-restore could leave the wrong umask behind
        umask = os.umask(0o077)  # meanwhile other threads' new files are private, never too open
        os.umask(umask)
    return umask
