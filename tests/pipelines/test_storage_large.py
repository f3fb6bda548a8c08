"""Objects above the multipart threshold on a real S3-compatible server (moto on 127.0.0.1), through
``pipelines.storage``: a 200 MB parquet shard (pyarrow's 10 MiB parts), a 200 MB checkpoint file
uploaded the way Ray Train persists a checkpoint directory (``pyarrow.fs.copy_files`` with our
filesystem) and a 200 MB smart-open stream (64 MiB parts). Each is read back byte-identical, and its
ETag's part count shows it went up as a multipart upload. A commit's copy above CopyObject's 5 GiB
goes part by part (tested with the limits lowered: moto copies parts slowly)."""
from __future__ import annotations

import hashlib
import math

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from pipelines import parquet_files, stage_store, storage

pytestmark = pytest.mark.slow

SIZE = 200 * 10**6


def _parts(s3, bucket: str, key: str) -> int:
    etag = s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
    return int(etag.split("-")[1]) if "-" in etag else 1


def _random(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).bytes(n)  # incompressible: the parquet stays > SIZE


@pytest.fixture
def s3(s3_server):
    import boto3

    return boto3.client("s3", endpoint_url=s3_server)


def test_part_sizes_fit_aws_limits():
    assert storage.s3_part_size(0) == storage.S3_STREAM_PART_SIZE == 64 << 20
    for num_bytes in (1, 200 * 10**6, 500 * 10**9, 500 << 30, 5 << 40):
        part = storage.s3_part_size(num_bytes)
        assert storage.S3_MIN_PART_SIZE <= part <= storage.S3_MAX_PART_SIZE and part % (1 << 20) == 0
        assert math.ceil(num_bytes / part) <= storage.S3_MAX_PARTS
    assert storage.s3_part_size(5 << 40) == 525 << 20  # 5 TiB, AWS's object limit, in 10,000 parts
    with pytest.raises(ValueError, match="do not fit in one S3 object"):
        storage.s3_part_size(storage.S3_MAX_PARTS * storage.S3_MAX_PART_SIZE + 1)


def test_large_parquet_shard_round_trips(s3, s3_bucket):
    bucket = s3_bucket[len("s3://"):]
    rows = 200
    table = pa.table({"id": pa.array(range(rows), pa.int64()),
                      "blob": pa.array([_random(SIZE // rows + 1, i) for i in range(rows)], pa.binary())})
    writer = stage_store.StageWriter(f"{s3_bucket}/root", "big", "k1", {}, ())
    writer.write_table(table)
    expected = parquet_files.table_to_parquet_bytes(table)
    assert len(expected) > SIZE
    tmp_key = f"{writer.tmp}/part-00000.parquet"[len(s3_bucket) + 1:]
    assert _parts(s3, bucket, tmp_key) == math.ceil(len(expected) / storage.PYARROW_S3_PART_SIZE) == 20
    out = writer.commit()
    (shard,) = stage_store.data_files(out)
    back = storage.read_bytes(shard)
    assert len(back) == len(expected) and hashlib.sha256(back).digest() == hashlib.sha256(expected).digest()
    assert pq.read_table(pa.BufferReader(back)).equals(table)
    assert not storage.exists(writer.tmp)
    storage.remove_tree(f"{s3_bucket}/root")


def test_large_checkpoint_file_round_trips(s3, s3_bucket, tmp_path):
    """Ray Train uploads a checkpoint directory with ``pyarrow.fs.copy_files`` to its storage
    filesystem (ours) and restores it with ``Checkpoint.to_directory``; both are done here."""
    from ray.train import Checkpoint

    bucket = s3_bucket[len("s3://"):]
    local = tmp_path / "ckpt"
    (local / "deepspeed" / "step").mkdir(parents=True)
    data = _random(SIZE, 7)
    (local / "deepspeed" / "step" / "optim_states.pt").write_bytes(data)
    (local / "train_state.json").write_text("{}")
    fs, path = storage.filesystem(f"{s3_bucket}/runs/phase0-step00000004")
    pafs.copy_files(str(local), path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    key = "runs/phase0-step00000004/deepspeed/step/optim_states.pt"
    assert _parts(s3, bucket, key) == math.ceil(SIZE / storage.PYARROW_S3_PART_SIZE)

    restored = tmp_path / "restored"
    Checkpoint(path, filesystem=fs).to_directory(str(restored))
    back = (restored / "deepspeed" / "step" / "optim_states.pt").read_bytes()
    assert len(back) == SIZE and hashlib.sha256(back).digest() == hashlib.sha256(data).digest()
    storage.remove_tree(f"{s3_bucket}/runs")


def test_large_stream_round_trips(s3, s3_bucket):
    bucket = s3_bucket[len("s3://"):]
    data = _random(SIZE, 11)
    uri = f"{s3_bucket}/stream/big.bin"
    with storage.open_uri(uri, "wb") as f:
        for start in range(0, SIZE, 8 << 20):  # written in pieces, as a stream is
            f.write(data[start:start + (8 << 20)])
    assert _parts(s3, bucket, "stream/big.bin") == math.ceil(SIZE / storage.S3_STREAM_PART_SIZE) == 3
    with storage.open_uri(uri, "rb") as f:
        back = f.read()
    assert hashlib.sha256(back).digest() == hashlib.sha256(data).digest()
    storage.remove_tree(uri)


def test_commit_copies_part_by_part_above_copy_limit(s3, s3_bucket, monkeypatch):
    """On AWS one CopyObject copies at most 5 GiB, so a commit moves a larger shard part by part
    (UploadPartCopy). Both limits are lowered here so a 30 MB shard takes that path."""
    bucket = s3_bucket[len("s3://"):]
    monkeypatch.setattr(storage, "S3_MAX_COPY_SIZE", 10 * 10**6)
    monkeypatch.setattr(storage, "S3_STREAM_PART_SIZE", 8 << 20)
    writer = stage_store.StageWriter(f"{s3_bucket}/root", "copy", "k1", {}, ())
    data = _random(30 * 10**6, 3)
    writer.write_bytes("blob.bin", data)
    out = writer.commit()
    assert _parts(s3, bucket, "root/copy/k1/blob.bin") == math.ceil(len(data) / (8 << 20)) == 4
    back = storage.read_bytes(storage.join(out, "blob.bin"))
    assert hashlib.sha256(back).digest() == hashlib.sha256(data).digest()
    assert not storage.exists(writer.tmp)
    storage.remove_tree(f"{s3_bucket}/root")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_streamed_output_appears_whole_or_not_at_all(s3, s3_bucket, tmp_path, where):
    """``atomic_output``: a stream of 30 MB in 3 MB writes (an S3 multipart upload) lands whole; a
    writer that fails halfway leaves neither the file nor a temporary one."""
    root = str(tmp_path) if where == "local" else f"{s3_bucket}/streamed"
    data = _random(30 * 10**6, 3)
    with storage.atomic_output(storage.join(root, "ok.bin")) as f:
        for i in range(0, len(data), 3 * 10**6):
            f.write(data[i:i + 3 * 10**6])
    assert hashlib.sha256(storage.read_bytes(storage.join(root, "ok.bin"))).digest() == hashlib.sha256(data).digest()
    with pytest.raises(RuntimeError, match="halfway"):
        with storage.atomic_output(storage.join(root, "bad.bin")) as f:
            f.write(data[:12 * 10**6])
            raise RuntimeError("halfway")
    assert [u.rsplit("/", 1)[1] for u in storage.list_files(root)] == ["ok.bin"]
    if where == "s3":
        bucket = s3_bucket[len("s3://"):]
        assert _parts(s3, bucket, "streamed/ok.bin") == 3  # pyarrow's 10 MiB parts
        storage.remove_tree(root)
