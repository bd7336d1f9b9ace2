"""Outputs are written by one rename, yet readable by whoever a plain ``open()`` would let read them."""

from __future__ import annotations

import os
import stat

import pytest

from stages.core import atomic


@pytest.fixture
def umask():
    """Sets the process's umask for one test, then puts the old one back."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("proc", ["proc", "no-proc"])
@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_an_output_gets_the_mode_a_plain_open_would_give(umask, monkeypatch, tmp_path, proc, mask, mode):
    if proc == "no-proc":  # as on macOS
        monkeypatch.setattr(atomic, "PROC_STATUS", tmp_path / "no-proc")
    umask(mask)
    atomic.write_json(tmp_path / "out" / "metrics.json", {"accuracy": 1.0})
    with open(tmp_path / "plain", "w"):
        pass
    assert stat.S_IMODE((tmp_path / "out" / "metrics.json").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "plain").stat().st_mode) == mode
    assert os.umask(mask) == mask  # reading it left it as it was
