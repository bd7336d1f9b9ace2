"""The small importable core that the stage entry points share."""
