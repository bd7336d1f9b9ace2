"""Helpers that tests and benchmarks share, kept out of ``stages`` because no stage runs them:
synthetic MNIST (``synthetic``) and the tutorial's per-image loop as a bitwise reference (``tutorial``)."""
