"""Models for workers on many hosts: a model store that every worker copies its models from.

FEQA_MODEL_STORE is a folder (used as it is, like FEQA_MODEL_DIR) or an S3 prefix, `s3://bucket/prefix/`
(the same endpoint and credentials as the object storage, FEQA_S3_*). From a bucket the worker copies every
`<name>.json` manifest under the prefix and its `<name>.onnx` into a private cache below FEQA_VAR_DIR, each
model file checked against the sha256 of its manifest before it takes its place (a file that does not match
is refused with ModelIntegrityError and never lands in the cache); files already there with the right
sha256 are kept, models gone from the store are removed. The Scorer then verifies the checksums again
when it loads them. Rolling out a version = new files under the prefix (or a new prefix) and restarting
the workers, one by one: /readyz and /metrics show the skew while it lasts.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from model.errors import ModelIntegrityError
from model.manifest import sha256_file
from worker.settings import Settings

log = logging.getLogger("feqa.worker")


def resolve_model_dir(settings: Settings) -> Path:
    """The folder this worker loads its models from (synchronised from the store first, if any)."""
    store = settings.model_store
    if not store:
        return settings.model_dir
    if not store.startswith("s3://"):
        return Path(store)
    bucket, _, prefix = store[len("s3://"):].partition("/")
    from worker.jobs.s3 import S3Storage

    client = S3Storage.from_settings(settings).client
    cache = settings.var_dir / "model-cache" / hashlib.sha256(store.encode()).hexdigest()[:16]
    sync_from_s3(client, bucket, prefix, cache)
    return cache


def sync_from_s3(client: Any, bucket: str, prefix: str, dest: Path) -> list[str]:
    """Copy the models under s3://bucket/prefix into `dest`; returns the model names now there."""
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    names = sorted(k[len(prefix):-5] for k in keys if k.endswith(".json") and "/" not in k[len(prefix):])
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    have = set()
    for name in names:
        if f"{prefix}{name}.onnx" not in keys:
            continue                                   # a manifest without its model: not a model
        manifest_bytes = client.get_object(Bucket=bucket, Key=f"{prefix}{name}.json")["Body"].read()
        want = json.loads(manifest_bytes).get("sha256")
        onnx = dest / f"{name}.onnx"
        if not (onnx.is_file() and sha256_file(onnx) == want):
            part = dest / f".{name}.onnx.part"
            client.download_file(bucket, f"{prefix}{name}.onnx", str(part))
            got = sha256_file(part)
            if got != want:
                part.unlink(missing_ok=True)
                raise ModelIntegrityError(
                    f"{name}.onnx in the model store: sha256 {got[:12]}... does not match its manifest "
                    f"({str(want)[:12]}...); the store holds a changed or truncated file",
                    details={"file": f"{name}.onnx"})
            os.replace(part, onnx)
            log.info("model %s copied from the model store", name)
        tmp = dest / f".{name}.json.part"
        tmp.write_bytes(manifest_bytes)
        os.replace(tmp, dest / f"{name}.json")
        have.add(name)
    for path in list(dest.glob("*.json")) + list(dest.glob("*.onnx")):
        if path.stem not in have:
            path.unlink(missing_ok=True)              # withdrawn from the store
    return sorted(have)
