"""Benchmarks of the training loop; run each as ``python -m benchmarks.<name>``."""

import stages  # noqa: F401  (pins torch's numerics before any benchmark imports torch)
