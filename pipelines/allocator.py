"""How the processes that run data stages allocate memory: so a worker gives back what a block took.

A stage worker allocates and frees arrays of a few MB to a few hundred MB, block after block. Two
defaults kept that memory in the process after it was freed, where it counted in the worker's heap
until the process ended:

- pyarrow's default pool (mimalloc) keeps freed pages for reuse;
- glibc raises its mmap threshold to the size of every large block freed (up to 32 MB), so later
  arrays of that size come from the heap, which is returned only from its top.

On one nsp_pairs partition of 26M tokens (a ``/tmp``-only probe, the block memory-mapped as the
object store maps it), the process's anonymous memory rose 173 MB with the defaults and stayed 100 MB
up after the partition was written. With ``ENV`` it rose ~100 MB and stayed 24-36 MB up.
``bench.preprocess`` measured no change in throughput beyond its noise.

The fix is pyarrow's system pool and a fixed 4 MB threshold (``ENV``). Both are set in the
environment of every Ray node the pipeline starts (``ENV``, applied by
``cluster.ray_settings.use_node_env`` and on ``ray_cluster.yaml``'s ``ray start`` lines), so every
worker process starts with them: pyarrow's C++ code (the parquet writer, casts) takes its pool from
``ARROW_DEFAULT_MEMORY_POOL`` when the process starts and cannot be switched later. On a Ray started
without them, ``configure()`` (run when ``pipelines.stage_exec`` is imported, i.e. in every process
that runs a stage) sets what can still be set: the pool of pyarrow's Python calls, and glibc's
threshold. It leaves alone a choice made in the environment.
"""
from __future__ import annotations

import ctypes
import os

MMAP_THRESHOLD = 4 << 20
"""Allocations of at least this many bytes get pages of their own, returned to the system on free."""

ENV = {"ARROW_DEFAULT_MEMORY_POOL": "system", "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)}
"""The same settings as environment variables, for the processes of a Ray node (read when a process starts)."""

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


def configure() -> dict[str, str]:
    """Set the pool and the threshold (idempotent); -> what is in effect (for tests and logs)."""
    import pyarrow as pa  # here, so that ``ENV`` is read (cluster.ray_settings) without loading pyarrow

    if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
        pa.set_memory_pool(pa.system_memory_pool())
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ and _glibc():
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)  # fixing it ends the dynamic raise
    return {"arrow_pool": pa.default_memory_pool().backend_name}


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # not Linux, or another libc
        return False
