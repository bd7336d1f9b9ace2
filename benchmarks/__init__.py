"""Benchmarks of the training loop against the tutorial's; run each as ``python -m benchmarks.<name>``."""
