"""Benchmarks of the training loop; run each as ``python -m benchmarks <name>`` (``benchmarks/__main__.py``)."""
