"""DVC stages of the MNIST pipeline: each module is one stage, run as ``python -m stages.<name>``."""
