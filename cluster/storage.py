"""Storage settings for runs on a cluster: where the run root lives and how nodes reach it.

On a multi-node cluster every stage output, checkpoint and report must be on shared storage, so the
run root is an ``s3://bucket/prefix`` URI (``pipelines.storage`` does all I/O). Nodes get credentials
from their instance role (see ``ray_cluster.yaml``); an S3-compatible endpoint (MinIO, moto, Ceph) is
set with ``AWS_ENDPOINT_URL``, which ``cluster.jobs`` forwards to the job.
"""
from __future__ import annotations

import os
import uuid

from pipelines import storage

class StorageError(RuntimeError):
    """The run root cannot be used; the message names it and why."""


def check_run_root(root: str, multi_node: bool = False) -> None:
    """Fail early, naming the root, when it cannot be written (or is node-local on a cluster)."""
    if multi_node and storage.is_local(root):
        raise StorageError(f"run root {root!r} is a local path; on a multi-node cluster use s3://BUCKET/PREFIX")
    if storage.is_local(root):
        return
    probe = storage.join(root, f"_write_check-{uuid.uuid4().hex}")
    try:
        storage.write_bytes_atomic(probe, b"ok")
        storage.remove_tree(probe)
    except Exception as e:  # credentials, missing bucket, unreachable endpoint
        endpoint = os.environ.get("AWS_ENDPOINT_URL", "the default AWS endpoint")
        raise StorageError(f"run root {root} is not writable via {endpoint}: {type(e).__name__}: {e}") from e
