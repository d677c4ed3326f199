"""Object storage for uploads and pictures: a local directory shared by the API and the workers
(a volume in docker-compose). Only keys travel through the broker, never bytes."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


class StorageError(Exception):
    pass


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

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
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".part")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        p = self.path(prefix.rstrip("/"))
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
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
        dst.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.tmp, "wb")
        self._sha = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self._fh.write(chunk)
        self._sha.update(chunk)
        self.size += len(chunk)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

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
