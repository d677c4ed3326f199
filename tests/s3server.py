"""A real S3-speaking server for the tests: moto's standalone server (`moto[server]`, a dev
dependency), started as its own process on a free loopback port.

Why moto: it installs from PyPI with pip alone (no binary to fetch, unlike MinIO), speaks the S3
REST protocol over HTTP (multipart uploads, ranged GETs, batch deletes, server-side-encryption
headers, multipart listings), so the code under test talks to it exactly as it would to AWS S3,
MinIO or Ceph through boto3. The docker-compose deployment uses MinIO.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    access_key: str = "feqa-test"
    secret_key: str = "feqa-test-secret"

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key)

    def env(self, prefix: str = "") -> dict[str, str]:
        """The settings a FEQA process needs to use this bucket."""
        return {"FEQA_STORAGE_BACKEND": "s3", "FEQA_S3_BUCKET": self.bucket, "FEQA_S3_ENDPOINT_URL": self.endpoint,
                "FEQA_S3_ACCESS_KEY_ID": self.access_key, "FEQA_S3_SECRET_ACCESS_KEY": self.secret_key,
                "FEQA_S3_REGION": "us-east-1", "FEQA_S3_PREFIX": prefix}

    def keys(self, prefix: str = "") -> list[str]:
        out: list[str] = []
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            out.extend(o["Key"] for o in page.get("Contents", []))
        return out


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_server(log_dir: Path, *, host: str = "127.0.0.1", port: int | None = None,
                netns: str | None = None) -> Iterator[S3Server]:
    """Start moto's S3 server (optionally inside network namespace `netns`) and make one bucket."""
    port = port or _free_port("127.0.0.1")
    log_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    fh = open(log_dir / "s3.log", "ab")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "feqa-test", "AWS_SECRET_ACCESS_KEY": "feqa-test-secret"}
    proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    fh.close()
    server = S3Server(f"http://{host}:{port}", f"feqa-{uuid.uuid4().hex[:10]}")
    try:
        if netns is None:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise RuntimeError((log_dir / "s3.log").read_text(errors="replace")[-2000:])
                try:
                    httpx.get(server.endpoint, timeout=1)
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise TimeoutError("moto server did not answer in 60 s") from None
                    time.sleep(0.2)
            server.client().create_bucket(Bucket=server.bucket)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait(10)
