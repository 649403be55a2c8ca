"""A sweep's W&B run files on disk: find them, and read a run's ``.wandb`` log back.

wandb writes every run (offline or online) as ``<dir>/wandb/[offline-]run-<time>-<id>/
run-<id>.wandb``: a LevelDB-style log of protobuf ``Record`` messages (32 KiB blocks, each
record split into chunks with a 7-byte header). wandb 0.31 no longer ships a reader, so this
module decodes it to list a sweep's runs and check what they hold, with no server.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RunFile", "RunLog", "find_run_files", "read_records", "read_run"]

_FILE_HEADER = struct.Struct("<4sHB")  # ident, magic, version
_CHUNK_HEADER = struct.Struct("<IHB")  # checksum, length, type
_BLOCK = 32 * 1024
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


@dataclass(frozen=True)
class RunFile:
    """One ``.wandb`` file: a run, or one piece of a resumed run (same id, later start)."""

    path: Path
    run_id: str
    offline: bool

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def synced(self) -> bool:
        """Whether ``wandb sync`` uploaded it (it leaves a ``.synced`` marker beside the file)."""
        return self.path.with_name(self.path.name + ".synced").exists()


def find_run_files(wandb_dir: Path) -> list[RunFile]:
    """Every run file under ``wandb_dir`` (``<experiment>/wandb``), oldest first."""
    files = []
    for path in sorted(Path(wandb_dir).glob("*run-*/run-*.wandb")):
        offline = path.parent.name.startswith("offline-run-")
        files.append(RunFile(path, path.stem.removeprefix("run-"), offline))
    return files


def read_records(path: Path) -> Iterator[Any]:
    """The ``wandb_internal_pb2.Record`` messages of a ``.wandb`` file, in order.

    A run still being written (or killed) ends in a torn record: reading stops there.
    Checksums are not verified: these are local files read back, not data off a network.
    """
    from wandb.proto import wandb_internal_pb2  # protobuf classes: only when a file is read

    data = Path(path).read_bytes()
    ident, _, _ = _FILE_HEADER.unpack_from(data) if len(data) >= 7 else (b"", 0, 0)
    if ident != b":W&B":
        raise ValueError(f"{path}: not a W&B run file")
    pos, pieces = _FILE_HEADER.size, []
    while pos + _CHUNK_HEADER.size <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _CHUNK_HEADER.size:  # too little room for a header: padding
            pos += left_in_block
            continue
        _, length, kind = _CHUNK_HEADER.unpack_from(data, pos)
        start, pos = pos + _CHUNK_HEADER.size, pos + _CHUNK_HEADER.size + length
        if kind == 0 or pos > len(data):  # zero fill or a torn tail: nothing more to read
            return
        pieces = [] if kind in (_FULL, _FIRST) else pieces
        pieces.append(data[start:pos])
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(pieces))
            yield record


def _key(item: Any) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


@dataclass
class RunLog:
    """What a run file says: identity, config, history rows, summary and exit code."""

    run_id: str = ""
    name: str = ""
    group: str = ""
    job_type: str = ""
    project: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None  # None: the run never finished (still running, or killed)


def read_run(path: Path) -> RunLog:
    """Decode a ``.wandb`` file into a RunLog (config keys are top-level, values decoded)."""
    log = RunLog()
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            log.run_id, log.name, log.group = run.run_id, run.display_name, run.run_group
            log.job_type, log.project, log.tags = run.job_type, run.project, list(run.tags)
            log.config |= {_key(i): json.loads(i.value_json) for i in run.config.update}
        elif kind == "config":
            log.config |= {_key(i): json.loads(i.value_json) for i in record.config.update}
        elif kind == "history":
            log.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            log.summary |= {_key(i): json.loads(i.value_json) for i in record.summary.update}
        elif kind == "exit":
            log.exit_code = record.exit.exit_code
    return log
