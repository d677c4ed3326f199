"""S3-compatible object storage (AWS S3, MinIO, Ceph RGW) behind the `Storage` interface.

- Uploads stream in multipart parts of `s3_part_size` bytes: the API holds one part in memory at
  most, never the whole video; an upload that is aborted (too large, client gone) aborts its
  multipart upload, and the housekeeping aborts multipart uploads nobody finished
  (`remove_stale_parts`), the counterpart of a local `*.part` file.
- Workers `fetch` a video to a private temporary file (0600, in a 0700 directory) with ranged GETs
  of one part each, and remove it when the job ends: the worker's disk keeps nothing.
- Server-side encryption (`s3_sse`: AES256 or aws:kms with `s3_sse_kms_key_id`) is asked for on
  every object written.
Keys are the layout of `worker.jobs.keys`, below an optional `s3_prefix`.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.jobs.storage import StorageError

if TYPE_CHECKING:
    from worker.settings import Settings

log = logging.getLogger("feqa.storage")


class S3Storage:
    def __init__(self, client: Any, bucket: str, *, prefix: str = "", part_size: int = 8 * 1024 * 1024,
                 sse: str | None = None, sse_kms_key_id: str | None = None) -> None:
        self.client, self.bucket = client, bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.part_size = int(part_size)
        self.sse, self.sse_kms_key_id = sse, sse_kms_key_id

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.s3_region or "us-east-1",
            aws_access_key_id=settings.s3_access_key_id, aws_secret_access_key=settings.s3_secret_access_key,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=60,
                          s3={"addressing_style": "path"} if settings.s3_endpoint_url else None),
        )
        return cls(client, str(settings.s3_bucket), prefix=settings.s3_prefix, part_size=settings.s3_part_size,
                   sse=settings.s3_sse, sse_kms_key_id=settings.s3_sse_kms_key_id)

    # --- keys -----------------------------------------------------------------------------------
    def name(self, key: str) -> str:
        parts = key.split("/")
        if key.startswith("/") or any(p in ("", ".", "..") for p in parts[:-1]) or parts[-1] in (".", ".."):
            raise StorageError("storage key escapes the storage root")
        return self.prefix + key

    def _sse_args(self) -> dict[str, str]:
        if not self.sse:
            return {}
        args = {"ServerSideEncryption": self.sse}
        if self.sse == "aws:kms" and self.sse_kms_key_id:
            args["SSEKMSKeyId"] = self.sse_kms_key_id
        return args

    def describe(self) -> dict:
        return {"backend": "s3", "bucket": self.bucket, "prefix": self.prefix, "sse": self.sse or "none"}

    # --- reads ----------------------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.name(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def size(self, key: str) -> int:
        return int(self.client.head_object(Bucket=self.bucket, Key=self.name(key))["ContentLength"])

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes start..end (inclusive), one ranged GET."""
        body = self.client.get_object(Bucket=self.bucket, Key=self.name(key), Range=f"bytes={start}-{end}")["Body"]
        try:
            return body.read()
        finally:
            body.close()

    def iter_bytes(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The object in ranged GETs of `chunk_size` bytes (bounded memory, restartable per range)."""
        total = self.size(key)
        for start in range(0, total, chunk_size):
            yield self.read_range(key, start, min(start + chunk_size, total) - 1)

    def local_path(self, key: str) -> Path | None:
        return None   # nothing is local: serve through iter_bytes

    @contextlib.contextmanager
    def fetch(self, key: str) -> Iterator[Path]:
        """The object as a private temporary file for the length of the `with` block."""
        tmp_dir = Path(tempfile.mkdtemp(prefix="feqa-fetch-"))   # 0700
        try:
            path = tmp_dir / "object"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                for chunk in self.iter_bytes(key, self.part_size):
                    fh.write(chunk)
            yield path
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)

    # --- writes ---------------------------------------------------------------------------------
    def writer(self, key: str) -> S3Writer:
        return S3Writer(self, self.name(key))

    def put_file(self, key: str, src: Path) -> None:
        with open(src, "rb") as fh:
            w = self.writer(key)
            try:
                while chunk := fh.read(self.part_size):
                    w.write(chunk)
                w.commit()
            except BaseException:
                w.abort()
                raise

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.name(key))

    def delete_prefix(self, prefix: str, *, strict: bool = False) -> None:
        """Every object below the prefix (an assessment's uploads or pictures), in batches of 1000.
        Failures always raise here (`strict` is implied): the caller's retry finds what is left."""
        name = self.name(prefix.rstrip("/"))
        listing = [name] if not prefix.endswith("/") else []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=name + "/"):
            listing.extend(o["Key"] for o in page.get("Contents", []))
        for i in range(0, len(listing), 1000):
            batch = [{"Key": k} for k in listing[i:i + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        self._abort_uploads(name + "/", max_age_s=0.0)

    def remove_stale_parts(self, max_age_s: float) -> int:
        """Abort multipart uploads started over `max_age_s` ago and never completed (an API process
        killed mid-upload); their parts are otherwise kept, and billed, by the object store."""
        return self._abort_uploads(self.prefix, max_age_s)

    def _abort_uploads(self, prefix: str, max_age_s: float) -> int:
        aborted, now = 0, time.time()
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for up in page.get("Uploads", []):
                if now - up["Initiated"].timestamp() < max_age_s:
                    continue
                try:
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"])
                    aborted += 1
                except Exception:   # finished or aborted meanwhile: nothing left to do
                    log.warning("could not abort a stale multipart upload")
        return aborted


class S3Writer:
    """Streams an upload to S3 in parts of `part_size` bytes, hashing as it goes. A video smaller than
    one part is written with a single PUT at `commit`; a larger one as a multipart upload."""

    def __init__(self, storage: S3Storage, name: str) -> None:
        self.s, self.name = storage, name
        # A private local copy for the API's probe before `commit`; removed at commit or abort.
        self._spool_dir = Path(tempfile.mkdtemp(prefix="feqa-upload-"))   # 0700
        self.local_file = self._spool_dir / "upload"
        self._spool = os.fdopen(os.open(self.local_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")
        self._buf = bytearray()
        self._sha = hashlib.sha256()
        self._upload_id: str | None = None
        self._parts: list[dict] = []
        self.size = 0

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def write(self, chunk: bytes) -> None:
        self._sha.update(chunk)
        self.size += len(chunk)
        self._spool.write(chunk)
        self._buf += chunk
        while len(self._buf) >= self.s.part_size:
            self._send_part(bytes(self._buf[:self.s.part_size]))
            del self._buf[:self.s.part_size]

    def _send_part(self, data: bytes) -> None:
        c = self.s.client
        if self._upload_id is None:
            self._upload_id = c.create_multipart_upload(Bucket=self.s.bucket, Key=self.name,
                                                        **self.s._sse_args())["UploadId"]
        n = len(self._parts) + 1
        r = c.upload_part(Bucket=self.s.bucket, Key=self.name, UploadId=self._upload_id, PartNumber=n, Body=data)
        self._parts.append({"PartNumber": n, "ETag": r["ETag"]})

    def close(self) -> None:
        if not self._spool.closed:
            self._spool.close()

    def _drop_spool(self) -> None:
        self.close()
        shutil.rmtree(self._spool_dir, ignore_errors=True)

    def commit(self) -> str:
        c = self.s.client
        if self._upload_id is None:
            c.put_object(Bucket=self.s.bucket, Key=self.name, Body=bytes(self._buf), **self.s._sse_args())
        else:
            if self._buf:
                self._send_part(bytes(self._buf))
            c.complete_multipart_upload(Bucket=self.s.bucket, Key=self.name, UploadId=self._upload_id,
                                        MultipartUpload={"Parts": self._parts})
        self._buf = bytearray()
        self._drop_spool()
        return self.name

    def abort(self) -> None:
        self._buf = bytearray()
        if self._upload_id is not None:
            try:
                self.s.client.abort_multipart_upload(Bucket=self.s.bucket, Key=self.name, UploadId=self._upload_id)
            except Exception:
                log.warning("could not abort a multipart upload (the housekeeping will)")
            self._upload_id = None
        self._drop_spool()
