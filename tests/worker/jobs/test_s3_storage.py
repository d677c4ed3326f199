"""The S3 backend against a real S3-speaking server (moto's standalone server, its own process)."""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from tests.s3server import moto_server
from worker.jobs.s3 import S3Storage
from worker.jobs.storage import StorageError, open_storage
from worker.settings import Settings

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with moto_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


def storage(s3, **kw) -> S3Storage:
    settings = Settings(**{k.removeprefix("FEQA_").lower(): v for k, v in s3.env(kw.pop("prefix", "feqa/")).items()},
                        s3_part_size=5 * MiB, **kw)
    st = open_storage(settings)
    assert isinstance(st, S3Storage)
    return st


def test_a_large_upload_goes_in_parts_and_reads_back_by_ranges(s3):
    st = storage(s3)
    data = os.urandom(12 * MiB + 12345)                 # three parts of 5, 5 and ~2 MiB
    w = st.writer("uploads/a1/0.video")
    for i in range(0, len(data), 64 * 1024):             # as the API streams a request body
        w.write(data[i:i + 64 * 1024])
        assert len(w._buf) < st.part_size                # never more than one part held in memory
    w.commit()
    assert w.sha256 == hashlib.sha256(data).hexdigest() and w.size == len(data)
    head = s3.client().head_object(Bucket=s3.bucket, Key="feqa/uploads/a1/0.video")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].strip('"').endswith("-3")       # completed as a three-part multipart upload
    assert st.read_range("uploads/a1/0.video", 5 * MiB - 3, 5 * MiB + 2) == data[5 * MiB - 3:5 * MiB + 3]
    assert b"".join(st.iter_bytes("uploads/a1/0.video", 4 * MiB)) == data


def test_a_small_upload_is_one_put_with_server_side_encryption(s3):
    st = storage(s3, s3_sse="AES256")
    w = st.writer("uploads/a2/0.video")
    w.write(b"small video")
    w.commit()
    head = s3.client().head_object(Bucket=s3.bucket, Key="feqa/uploads/a2/0.video")
    assert head["ServerSideEncryption"] == "AES256"
    assert "-" not in head["ETag"].strip('"')
    assert st.exists("uploads/a2/0.video") and not st.exists("uploads/a2/1.video")


def test_an_aborted_upload_leaves_no_object_and_no_parts(s3):
    st = storage(s3)
    w = st.writer("uploads/a3/0.video")
    w.write(os.urandom(6 * MiB))                         # one part already sent
    assert w._upload_id is not None
    w.abort()
    assert not st.exists("uploads/a3/0.video")
    assert s3.client().list_multipart_uploads(Bucket=s3.bucket, Prefix="feqa/uploads/a3/").get("Uploads", []) == []


def test_stale_multipart_uploads_are_aborted_by_the_housekeeping(s3):
    st = storage(s3)
    w = st.writer("uploads/a4/0.video")
    w.write(os.urandom(5 * MiB))                         # an API killed mid-upload leaves this behind
    # (moto reports a fixed 2010 initiation time for every multipart upload, so the age filter that
    # spares live uploads cannot be exercised against it; a zero age takes every unfinished upload.)
    assert st.remove_stale_parts(max_age_s=0) == 1
    assert s3.client().list_multipart_uploads(Bucket=s3.bucket, Prefix="feqa/uploads/a4/").get("Uploads", []) == []


def test_a_worker_fetches_to_a_private_temporary_file_and_removes_it(s3):
    st = storage(s3)
    data = os.urandom(7 * MiB)
    w = st.writer("uploads/a5/0.video")
    w.write(data)
    w.commit()
    with st.fetch("uploads/a5/0.video") as path:
        assert path.read_bytes() == data
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        kept = Path(path)
    assert not kept.exists() and not kept.parent.exists()


def test_deleting_a_prefix_removes_only_that_assessment(s3, tmp_path):
    st = storage(s3)
    pic = tmp_path / "overlay.png"
    pic.write_bytes(b"\x89PNG fake")
    for key in ("artifacts/b1/0/overlay.png", "artifacts/b1/1/overlay.png", "artifacts/b10/0/overlay.png",
                "uploads/b1/0.video"):
        st.put_file(key, pic)
    st.delete_prefix("artifacts/b1/")
    st.delete_prefix("uploads/b1/")
    left = s3.keys("feqa/")
    assert "feqa/artifacts/b10/0/overlay.png" in left
    assert not any(k.startswith(("feqa/artifacts/b1/", "feqa/uploads/b1/")) for k in left)


def test_keys_cannot_escape_the_prefix(s3):
    st = storage(s3)
    for bad in ("../x", "/etc/passwd", "uploads/../../x", "uploads//x"):
        with pytest.raises(StorageError):
            st.exists(bad)


def test_s3_backend_needs_a_bucket():
    with pytest.raises(ValueError, match="FEQA_S3_BUCKET"):
        Settings(storage_backend="s3")
