"""The run root before anything runs: checked writable, and where this command's log file goes.

On a multi-node cluster every stage output, checkpoint and report must be on shared storage, so the
run root is an ``s3://bucket/prefix`` URI (``pipelines.storage`` does all I/O); ``bert-pipeline submit``
warns when a local root goes to a non-loopback cluster (an autoscaling cluster may have one node when a
run starts, so a node count cannot tell). Nodes get credentials from their instance role (see
``ray_cluster.yaml``); an S3-compatible endpoint (MinIO, moto, Ceph) is set with ``AWS_ENDPOINT_URL``,
which ``cluster.jobs`` forwards to the job.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid

from pipelines import console, storage

LOGS_DIR = "logs"
"""Under the run root: the log files of the commands run on it (Ray's output), which may be written before
the manifest."""


class StorageError(RuntimeError):
    """The run root cannot be used; the message names it and why."""


def check_run_root(root: str) -> None:
    """Fail early, naming the root, when a remote root cannot be written (a local one is made when needed)."""
    if storage.is_local(root):
        return
    probe = storage.join(root, f"_write_check-{uuid.uuid4().hex}")
    try:
        storage.write_bytes_atomic(probe, b"ok")
        storage.remove_tree(probe)
    except Exception as e:  # credentials, missing bucket, unreachable endpoint
        endpoint = os.environ.get("AWS_ENDPOINT_URL", "the default AWS endpoint")
        raise StorageError(f"run root {root} is not writable via {endpoint}: {type(e).__name__}: {e}") from e


class RunLog:
    """This run's log file, ``{root}/logs/{command}-{UTC time}.log``: Ray's output while the run goes.
    For a remote root it is written locally and copied there when the run ends."""

    def __init__(self, root: str, command: str = "run"):
        name = f"{command}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{os.getpid()}.log"
        self.final = storage.join(root, LOGS_DIR, name)
        self.local = self.final if storage.is_local(root) else os.path.join(tempfile.gettempdir(), "bert-pipeline", name)
        self.local = self.local.removeprefix("file://")
        self.shown = self.final if self.local == self.final else f"{self.local} (copied to {self.final} at the end)"

    def capture(self):
        return console.logs_to_file(self.local)

    def publish(self) -> None:
        """The log made plain (terminal codes some of Ray's lines still carry removed), then copied to a
        remote root."""
        if os.path.exists(self.local):
            with open(self.local, encoding="utf-8", errors="replace") as f:
                text = f.read()
            if console.plain(text) != text:
                with open(self.local, "w", encoding="utf-8") as f:
                    f.write(console.plain(text))
        if self.local != self.final and os.path.exists(self.local):
            try:
                with open(self.local, "rb") as f:
                    storage.write_bytes_atomic(self.final, f.read())
            except Exception as e:  # the run's own outputs matter more than its log
                print(f"bert-pipeline: copying the log {self.local} to {self.final} failed: {e}", file=sys.stderr)
                self.final = self.local
