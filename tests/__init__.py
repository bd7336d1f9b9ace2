"""The project's tests, run with ``python -m pytest`` (in parallel workers: pytest.ini)."""

import os

# Two test workers on two cores: one thread each, or their OpenMP threads spin against each other.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import stages  # noqa: E402, F401  (pins torch's numerics before any test imports torch)
