"""Object storage for uploads and pictures. Only keys travel through the broker, never bytes.

Two backends behind one interface (`Storage`), chosen by settings (`open_storage`):
- `LocalStorage`: a directory (the single-machine default; a shared volume when API and workers
  run on one host);
- `worker.jobs.s3.S3Storage`: an S3-compatible bucket (AWS S3, MinIO, Ceph) for API and workers
  on different hosts: uploads stream to it in parts, workers fetch a video to a private temporary
  file for the length of one job, and pictures are uploaded from the worker's own temp directory.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from worker.settings import Settings


class StorageError(Exception):
    pass


FILE_MODE = 0o600        # patient videos and pictures: readable by the service's own user only
DIR_MODE = 0o700
PRIVATE_UMASK = 0o077    # set by the API and worker processes (service.api.main, worker.runtime)


def make_dirs(path: Path, stop: Path | None = None) -> None:
    """mkdir -p with mode 0700 for every directory created (Path.mkdir gives parents the default mode)."""
    missing = []
    p = Path(path)
    while not p.exists() and p != stop and p.parent != p:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(d, DIR_MODE)    # not narrowed by a umask, not widened either


class Writer(Protocol):
    """An upload being written: chunks in, hashed; `local_file` is a private local copy the API
    probes before `commit` stores it for good (`abort` drops it)."""
    size: int

    @property
    def local_file(self) -> Path: ...

    @property
    def sha256(self) -> str: ...

    def write(self, chunk: bytes) -> None: ...

    def close(self) -> None: ...

    def commit(self) -> object: ...

    def abort(self) -> None: ...


class Storage(Protocol):
    """What the API, the workers and the housekeeping need of a storage backend."""

    def exists(self, key: str) -> bool: ...

    def writer(self, key: str) -> Writer: ...

    def put_file(self, key: str, src: Path) -> None: ...

    def fetch(self, key: str) -> contextlib.AbstractContextManager[Path]: ...

    def local_path(self, key: str) -> Path | None: ...

    def iter_bytes(self, key: str, chunk_size: int = ...) -> Iterator[bytes]: ...

    def delete(self, key: str) -> None: ...

    def delete_prefix(self, prefix: str, *, strict: bool = False) -> None: ...

    def remove_stale_parts(self, max_age_s: float) -> int: ...

    def describe(self) -> dict: ...


def open_storage(settings: Settings) -> Storage:
    """The storage backend the settings name (`FEQA_STORAGE_BACKEND`: local or s3)."""
    if settings.storage_backend == "s3":
        from worker.jobs.s3 import S3Storage

        return S3Storage.from_settings(settings)
    return LocalStorage(settings.storage_root)


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        make_dirs(self.root)

    def path(self, key: str) -> Path:
        p = (self.root / key).resolve()
        if self.root.resolve() not in p.parents:
            raise StorageError("storage key escapes the storage root")
        return p

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def writer(self, key: str) -> ChunkWriter:
        return ChunkWriter(self.path(key))

    def put_file(self, key: str, src: Path) -> None:
        dst = self.path(key)
        make_dirs(dst.parent, self.root)
        tmp = dst.with_name(dst.name + ".part")
        shutil.copyfile(src, tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, dst)

    @contextlib.contextmanager
    def fetch(self, key: str) -> Iterator[Path]:
        """The file itself: nothing to copy when the directory is local."""
        path = self.path(key)
        if not path.is_file():
            raise StorageError("no object stored under that key")
        yield path

    def local_path(self, key: str) -> Path | None:
        path = self.path(key)
        return path if path.is_file() else None

    def iter_bytes(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        with open(self.path(key), "rb") as fh:
            while chunk := fh.read(chunk_size):
                yield chunk

    def describe(self) -> dict:
        return {"backend": "local"}

    def delete(self, key: str) -> None:
        """Remove the file, and its directory when that is left empty (uploads/<id>/ after scoring)."""
        p = self.path(key)
        p.unlink(missing_ok=True)
        parent = p.parent
        if parent != self.root.resolve() and parent.is_dir():
            try:
                parent.rmdir()
            except OSError:     # not empty: other videos of the assessment still wait
                pass

    def delete_prefix(self, prefix: str, *, strict: bool = False) -> None:
        """Remove everything under `prefix`; `strict` raises when something could not be removed."""
        p = self.path(prefix.rstrip("/"))
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=not strict)
        else:
            p.unlink(missing_ok=True)

    def remove_stale_parts(self, max_age_s: float) -> int:
        """Delete partial uploads (`*.part`) nobody has written for `max_age_s`: left by an API process
        that was killed mid-upload. A live upload touches its file with every chunk, so it is spared."""
        import time

        now, removed = time.time(), 0
        for part in list(self.root.rglob("*.part")):   # listed first: emptied directories are removed below
            try:
                if now - part.stat().st_mtime > max_age_s:
                    part.unlink()
                    removed += 1
                    if part.parent != self.root and not any(part.parent.iterdir()):
                        part.parent.rmdir()
            except OSError:   # gone already, or a concurrent upload just wrote to the directory
                continue
        return removed


class ChunkWriter:
    """Writes an upload chunk by chunk to `<key>.part`, hashing as it goes; `commit` renames it
    into place, `abort` removes it. Nothing holds the whole file in memory."""

    def __init__(self, dst: Path) -> None:
        self.dst = dst
        self.tmp = dst.with_name(dst.name + ".part")
        make_dirs(dst.parent)
        self._fh = os.fdopen(os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE), "wb")
        self._sha = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self._fh.write(chunk)
        self._sha.update(chunk)
        self.size += len(chunk)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    @property
    def local_file(self) -> Path:
        return self.tmp if self.tmp.exists() else self.dst

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def commit(self) -> Path:
        self.close()
        os.replace(self.tmp, self.dst)
        return self.dst

    def abort(self) -> None:
        self.close()
        self.tmp.unlink(missing_ok=True)
        self.dst.unlink(missing_ok=True)
