"""Where a sweep keeps its state: a local directory, or a URI (s3://, gs://, file://) that every
node of a multi-node cluster can reach.

With a local ``storage_path`` everything lives in the experiment directory. With a URI the
experiment's home is ``<uri>/<experiment name>``: Tune and Train write trial state and
checkpoints under it (``tune/``, ``train/``), and every file of the experiment directory is
written there as it is written locally (``ExperimentDir`` over a ``Store``), so a stopped job or
a lost head loses at most the last write.

A ``Store`` is a folder of small files. Each write replaces one whole file atomically:
write-then-rename on a filesystem, one PUT of the whole object on an object store (an object
appears whole or not at all), so a reader never sees half a file. Appending to an object means
writing it again; the files here are small. URIs go through ``pyarrow.fs``, as Ray's own
storage does: S3 credentials come from the usual AWS chain (an instance profile or IRSA on a
cluster), and an S3-compatible endpoint from ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from orchestrator.errors import UserError

if TYPE_CHECKING:
    from pyarrow import fs as pafs

__all__ = [
    "ArrowStore",
    "LocalStore",
    "StorageError",
    "Store",
    "is_uri",
    "open_store",
    "remote_exists",
    "storage_root",
    "uri_join",
    "working_copy",
]


class StorageError(UserError):
    """A storage URI that cannot be read or written (no such bucket, no credentials, ...)."""


def is_uri(storage_path: str) -> bool:
    return "://" in str(storage_path)


def uri_join(base: str, *parts: str) -> str:
    """``base/part/...``; a query string (``?endpoint_override=...``) stays at the end."""
    path, sep, query = base.partition("?")
    joined = "/".join([path.rstrip("/"), *(p.strip("/") for p in parts)])
    return joined + sep + query


def storage_root(storage_path: str, experiment_dir: Path) -> str:
    """Where Tune and Train keep this experiment's state: the URI's folder, or the local dir."""
    if is_uri(storage_path):
        return uri_join(storage_path, experiment_dir.name)
    return str(experiment_dir)


def working_copy(uri: str) -> Path:
    """The local working copy of the experiment at ``uri`` (``resume``, ``results`` and
    ``analyze`` of a URI): ``$SCALESWEEP_CACHE/experiments/<scheme>/<bucket>/<path>``."""
    parts = urlsplit(uri)
    cache = Path(os.environ.get("SCALESWEEP_CACHE") or "~/.cache/scalesweep").expanduser()
    return cache / "experiments" / parts.scheme / parts.netloc / parts.path.strip("/")


def remote_exists(uri: str) -> bool:
    """Whether anything is stored at ``uri`` already (pyarrow: only when a sweep uses a URI)."""
    from pyarrow import fs

    filesystem, path = _filesystem(uri)
    return filesystem.get_file_info(path).type != fs.FileType.NotFound


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    from pyarrow import fs

    if urlsplit(uri).scheme == "s3" and "allow_delayed_open" not in uri:
        # Without it a write of any size is a multipart upload (3 requests); with it a small
        # file is one PutObject.
        uri += ("&" if "?" in uri else "?") + "allow_delayed_open=true"
    try:
        return fs.FileSystem.from_uri(uri)
    except (OSError, ValueError) as err:
        raise StorageError(f"{uri}: {err}") from None


class Store:
    """A folder of small files at ``location``; names are relative, '/'-separated."""

    location: str

    def write(self, name: str, data: bytes) -> None:
        """Replace ``name`` with ``data``, atomically."""
        raise NotImplementedError

    def read(self, name: str) -> bytes:
        """The content of ``name``; FileNotFoundError when there is none."""
        raise NotImplementedError

    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def delete(self, name: str) -> None:
        """Remove ``name``, if it is there."""
        raise NotImplementedError

    def names(self, keep: Callable[[str], bool] = lambda name: True) -> Iterator[str]:
        """Every file below the folder, as a relative name; a folder for which ``keep(name +
        '/')`` is false is not entered (Tune's and Train's state: many objects, not needed)."""
        raise NotImplementedError


class LocalStore(Store):
    """A local directory: each write goes to a temporary file that is then renamed."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.location = str(self.path)

    def write(self, name: str, data: bytes) -> None:
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)

    def read(self, name: str) -> bytes:
        return (self.path / name).read_bytes()

    def exists(self, name: str) -> bool:
        return (self.path / name).is_file()

    def delete(self, name: str) -> None:
        (self.path / name).unlink(missing_ok=True)

    def names(self, keep: Callable[[str], bool] = lambda name: True) -> Iterator[str]:
        def walk(folder: Path, prefix: str) -> Iterator[str]:
            for entry in sorted(folder.iterdir()):
                if entry.is_dir():
                    if keep(prefix + entry.name + "/"):
                        yield from walk(entry, prefix + entry.name + "/")
                elif keep(prefix + entry.name):
                    yield prefix + entry.name

        if self.path.is_dir():
            yield from walk(self.path, "")


class ArrowStore(Store):
    """A URI, through ``pyarrow.fs``: one PUT per write on an object store; on a local
    filesystem (file://) a temporary file renamed into place."""

    def __init__(self, uri: str) -> None:
        self.location = uri
        self._fs_and_root: tuple[pafs.FileSystem, str] | None = None

    def __getstate__(self) -> dict:
        # Pickled with the sweep's Tune callback: the filesystem is made again where it is used.
        return {"location": self.location, "_fs_and_root": None}

    @property
    def _fs(self) -> tuple[pafs.FileSystem, str]:
        if self._fs_and_root is None:
            self._fs_and_root = _filesystem(self.location)
        return self._fs_and_root

    def _path(self, name: str) -> str:
        return f"{self._fs[1].rstrip('/')}/{name}"

    def write(self, name: str, data: bytes) -> None:
        from pyarrow import fs

        filesystem, _ = self._fs
        path = self._path(name)
        if isinstance(filesystem, fs.LocalFileSystem):
            filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
            with filesystem.open_output_stream(path + ".tmp") as out:
                out.write(data)
            filesystem.move(path + ".tmp", path)
        else:
            with filesystem.open_output_stream(path) as out:
                out.write(data)

    def read(self, name: str) -> bytes:
        filesystem, _ = self._fs
        try:
            with filesystem.open_input_stream(self._path(name)) as stream:
                return stream.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"{uri_join(self.location, name)} does not exist") from None

    def exists(self, name: str) -> bool:
        from pyarrow import fs

        filesystem, _ = self._fs
        return filesystem.get_file_info(self._path(name)).type == fs.FileType.File

    def delete(self, name: str) -> None:
        filesystem, _ = self._fs
        if self.exists(name):
            filesystem.delete_file(self._path(name))

    def names(self, keep: Callable[[str], bool] = lambda name: True) -> Iterator[str]:
        from pyarrow import fs

        filesystem, root = self._fs
        root = root.rstrip("/")

        def walk(folder: str) -> Iterator[str]:
            infos = filesystem.get_file_info(fs.FileSelector(folder, allow_not_found=True))
            for info in sorted(infos, key=lambda i: i.path):
                name = info.path[len(root) + 1 :]
                if info.type == fs.FileType.Directory:
                    if keep(name + "/"):
                        yield from walk(info.path)
                elif info.type == fs.FileType.File and keep(name):
                    yield name

        yield from walk(root)


def open_store(location: str | Path) -> Store:
    """The store at a local path or a URI."""
    return ArrowStore(str(location)) if is_uri(str(location)) else LocalStore(location)
