"""The project's tests, run with ``python -m pytest``."""

import stages  # noqa: F401  (pins torch's numerics before any test imports torch)
