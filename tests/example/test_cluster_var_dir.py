"""The example cluster's directory: wiped on start only when it is the cluster's own."""

from __future__ import annotations

from pathlib import Path

import pytest

from example_project.cluster import VAR_MARKER, Cluster, ClusterError


def prepared(var: Path, *paths: str) -> Cluster:
    for path in paths:
        target = var / path
        if path.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("a file of the user's\n")
    return Cluster(var)


def test_the_empty_broker_folders_a_manage_command_makes_do_not_block_the_demo(tmp_path: Path) -> None:
    var = tmp_path / "var"
    cluster = prepared(var, "broker/out/", "broker/processed/", "broker/control/")
    cluster._fresh_var_dir()
    assert sorted(p.name for p in var.iterdir()) == sorted([VAR_MARKER, "broker"])


@pytest.mark.parametrize("path", ["notes.txt", "broker/out/message.msg", "broker/out/deeper/", "other/"])
def test_anything_else_in_the_directory_is_left_alone(tmp_path: Path, path: str) -> None:
    var = tmp_path / "var"
    cluster = prepared(var, path)
    with pytest.raises(ClusterError, match="refusing to wipe it"):
        cluster._fresh_var_dir()
    assert (var / path.rstrip("/")).exists()
