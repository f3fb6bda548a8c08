"""The Ray system settings of every Ray the pipeline runs on: ``pipelines.cli``'s local Ray,
``cluster.local.LocalHead``, ``ray_cluster.yaml``'s head (``ray start --system-config``; the GCS gives
it to every node's raylet), the test session's Rays and clusters and the data benchmarks'.

Ray kills an idle worker process above its soft limit (one per CPU) after 1 s. Ray Data runs a hash
shuffle's map and reduce tasks in workers of their own runtime_env, so every shuffle, and the Data
stage after it, started fresh Python processes: on 1 CPU a shuffle of 350 rows took 4.5 s, and 0.8 s
with idle workers kept for 60 s (raw text to NSP instances, 50.6 MB: 44.4 -> 32.9 s; ``bench.preprocess``).
A kept worker costs only its memory, and only while it is idle.

Every node's processes also start with ``pipelines.allocator.ENV`` in their environment (pyarrow's
system pool, glibc's fixed mmap threshold), so a worker gives back the memory of a block it freed.
"""
from __future__ import annotations

import json
import os

from pipelines.allocator import ENV as NODE_ENV

_SETTINGS = (("idle_worker_killing_time_threshold_ms", 60_000),)


def system_config() -> dict:
    """The settings, as a new dict for ``_system_config``: ``ray.init`` adds its session's own keys
    (object spilling's directory) to the dict it is given, so a shared one would carry them to the next Ray."""
    return dict(_SETTINGS)


def system_config_flag() -> str:
    """The settings as ``ray start``'s flag."""
    return "--system-config=" + json.dumps(system_config(), separators=(",", ":"))


def use_node_env() -> None:
    """Put ``NODE_ENV`` in this process's environment (a value already set is kept), before it starts
    Ray nodes: raylets, and the workers they start, inherit it."""
    for key, value in NODE_ENV.items():
        os.environ.setdefault(key, value)


def node_env_prefix() -> str:
    """``NODE_ENV`` as the assignments in front of ``ray start`` (ray_cluster.yaml)."""
    return " ".join(f"{k}={v}" for k, v in sorted(NODE_ENV.items()))
