"""Outputs are replaced together, in renames that Ctrl-C does not split, never half-written, and
readable by whoever a plain ``open()`` would let read them."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from stages.core import atomic
from tests.conftest import ROOT


@pytest.fixture
def umask():
    """Sets the process's umask for one test, then puts the old one back."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600), (0o000, 0o666)])
def test_an_output_gets_the_mode_a_plain_open_would_give(umask, tmp_path, mask, mode):
    umask(mask)
    atomic.write(tmp_path / "out" / "metrics.json", "{}")
    with open(tmp_path / "plain", "w"):
        pass
    assert stat.S_IMODE((tmp_path / "out" / "metrics.json").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == mode
    assert os.umask(mask) == mask  # writing left it as it was


def test_a_stages_outputs_are_replaced_together_or_not_at_all(tmp_path):
    for name in ("model.pt", "metrics.json"):
        (tmp_path / name).write_text("last run")
    with pytest.raises(RuntimeError), atomic.Outputs() as outputs:
        outputs.text(tmp_path / "model.pt", "new")
        raise RuntimeError("the figure could not be drawn")  # after one output, before the next
    assert {path.name: path.read_text() for path in tmp_path.iterdir()} == {
        "model.pt": "last run",
        "metrics.json": "last run",
    }  # and no temporary file left behind
    with atomic.Outputs() as outputs:
        outputs.text(tmp_path / "model.pt", "new")
        outputs.json(tmp_path / "metrics.json", {"accuracy": 1.0})
    assert (tmp_path / "model.pt").read_text() == "new" and json.loads((tmp_path / "metrics.json").read_text())


@pytest.fixture
def ctrl_c_raises():
    """Ctrl-C raises KeyboardInterrupt, as in a terminal, even in a process started in the background
    (where a shell ignores SIGINT for it, and Python keeps it ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_during_the_renames_waits_until_the_last_one(tmp_path, monkeypatch, ctrl_c_raises):
    """A Ctrl-C between two renames would leave one run's model beside another run's metrics."""
    replace, renamed = os.replace, []

    def interrupted_replace(source, target):
        if not renamed:
            os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C after the first rename
        replace(source, target)
        renamed.append(Path(target).name)

    monkeypatch.setattr(atomic.os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt), atomic.Outputs() as outputs:
        outputs.text(tmp_path / "model.pt", "new")
        outputs.text(tmp_path / "metrics.json", "new")
    assert renamed == ["model.pt", "metrics.json"]


def test_a_json_output_is_never_nan(tmp_path):
    with pytest.raises(ValueError), atomic.Outputs() as outputs:
        outputs.json(tmp_path / "metrics.json", {"test_loss": float("nan")})
    assert not any(tmp_path.iterdir())


def test_leftovers_of_a_killed_run_go_with_the_next_write_and_git_ignores_them(tmp_path):
    leftover = tmp_path / ".metrics.json.abc123.tmp"
    leftover.write_text("half written by a run that was killed")
    atomic.write(tmp_path / "metrics.json", "{}")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["metrics.json"]
    ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", "metrics/.train.json.x1y2.tmp"], cwd=ROOT)
    assert ignored.returncode == 0
