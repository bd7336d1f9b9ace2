"""The default DVC remote: push here, pull in a fresh clone, and nothing is left to reproduce."""

from __future__ import annotations


def test_push_then_fresh_clone_pulls_and_has_nothing_to_reproduce(project):
    project.run("dvc", "repro")
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "results")
    project.run("dvc", "push")
    # The default remote is a folder beside the repository, shared by clones beside it.
    assert any((project.root.parent / "mnist-dvc-remote").iterdir())

    clone = project.root.parent / "clone"
    project.run("git", "clone", "-q", str(project.root), str(clone))
    cloned = type(project)(clone, project.env)
    # dvc.yaml: the grid was not run here, and DVC fails to check out outputs no lock names.
    cloned.run("dvc", "pull", "dvc.yaml")
    assert (clone / "models/model.pt").read_bytes() == (project.root / "models/model.pt").read_bytes()
    assert "Data and pipelines are up to date" in cloned.run("dvc", "status", "dvc.yaml").stdout
    assert "Running stage" not in cloned.run("dvc", "repro").stdout
