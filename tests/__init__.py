"""The project's tests, run with ``python -m pytest`` (in parallel workers: pytest.ini)."""

import os

# Two test workers on two cores: one thread each, or their OpenMP threads spin against each other.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from stages.core import numerics  # noqa: E402

# Tests run stages' mains in this process, which numerics.pin never restarts: pinned here, before torch loads.
os.environ.update(numerics.PORTABLE_ENV)
