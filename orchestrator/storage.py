"""Where a sweep keeps its state: a local directory, or a URI (s3://, gs://, file://) that every
node of a multi-node cluster can reach.

With a local ``storage_path`` everything lives in the experiment directory. With a URI, Tune
and Train write trial state and checkpoints to ``<uri>/<experiment name>`` as the sweep runs;
the experiment directory is written locally (on the node running the sweep) and copied to the
same place when the sweep ends, so ``aws s3 sync`` brings back a complete experiment.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["is_uri", "remote_exists", "storage_root", "upload"]


def is_uri(storage_path: str) -> bool:
    return "://" in storage_path


def storage_root(storage_path: str, experiment_dir: Path) -> str:
    """Where Tune and Train keep this experiment's state: the URI's folder, or the local dir."""
    if is_uri(storage_path):
        return f"{storage_path.rstrip('/')}/{experiment_dir.name}"
    return str(experiment_dir)


def remote_exists(uri: str) -> bool:
    """Whether anything is stored at ``uri`` already (pyarrow: only when a sweep uses a URI)."""
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(uri)
    return filesystem.get_file_info(path).type != fs.FileType.NotFound


def upload(experiment_dir: Path, uri: str) -> None:
    """Copy the local experiment directory's files to ``uri``, next to Tune's and Train's."""
    from pyarrow import fs

    fs.copy_files(str(experiment_dir), uri)
