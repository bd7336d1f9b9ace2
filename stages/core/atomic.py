"""Write-then-rename: a failed stage leaves no half-written output, and a stage's outputs are replaced
together, so readers see the last run's set or the new one, never a mix.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import signal
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stages.core.errors import PipelineError

TEMP_SUFFIX = ".tmp"
DEFERRED_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


class Outputs:
    """A stage's outputs, each written to a temporary file beside its target, all renamed when the ``with``
    block ends without an error (Ctrl-C deferred until the last rename); on an error the targets stay."""

    def __init__(self) -> None:
        self.staged: list[tuple[Path, Path]] = []

    def __enter__(self) -> Outputs:
        return self

    def __exit__(self, error_type: type | None, *_: object) -> None:
        if error_type is None:
            self.commit()
        else:
            self.discard()

    def bytes(self, path: str | os.PathLike, data: bytes) -> None:
        self.staged.append((_temporary(Path(path), data), Path(path)))

    def text(self, path: str | os.PathLike, text: str) -> None:
        self.bytes(path, text.encode("utf-8"))

    def json(self, path: str | os.PathLike, obj: Any) -> None:
        """Indented, keys as given, newline-terminated: stable bytes; a NaN or infinity is an error."""
        self.text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")

    def csv(self, path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        self.text(path, buffer.getvalue())

    def commit(self) -> None:
        with _deferred_signals():
            for temporary, target in self.staged:
                os.replace(temporary, target)
        self.staged = []

    def discard(self) -> None:
        for temporary, _ in self.staged:
            temporary.unlink(missing_ok=True)
        self.staged = []


def write(path: str | os.PathLike, data: bytes | str) -> None:
    """Replace one file in one rename."""
    with Outputs() as outputs:
        outputs.bytes(path, data.encode("utf-8") if isinstance(data, str) else data)


def _temporary(target: Path, data: bytes) -> Path:
    """``data`` in a new hidden file beside ``target``, synced, made as ``open()`` makes a file, so the umask
    gives it its mode (``mkstemp`` gives 0600); leftovers of a run killed before its renames go first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for leftover in target.parent.glob(f".{target.name}.*{TEMP_SUFFIX}"):
        leftover.unlink(missing_ok=True)
    name = target.with_name(f".{target.name}.{secrets.token_hex(8)}{TEMP_SUFFIX}")  # 64 random bits: no one else has it
    handle = open(name, "xb")  # "x": never a file already there
    try:
        with handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException as error:
        name.unlink(missing_ok=True)
        if isinstance(error, OSError):  # a full disk, a file-size limit: one line naming the file
            raise PipelineError(f"cannot write {target}: {error.strerror or error}; nothing replaced") from None
        raise
    return name


@contextmanager
def _deferred_signals() -> Iterator[None]:
    """Ctrl-C, termination and hang-up wait until the block ends, then take effect as they would have."""
    received: list[int] = []
    try:
        previous = {
            number: signal.signal(number, lambda number, _: received.append(number)) for number in DEFERRED_SIGNALS
        }
    except ValueError:  # not the main thread, where Python cannot handle signals anyway
        yield
        return
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for number in received:
            signal.raise_signal(number)
