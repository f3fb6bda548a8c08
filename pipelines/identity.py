"""One identity per stage output: the stage's name, its code version, its config slice without
execution fields, and its inputs' identities.

The stage store keys its directories with it (``stage_store.stage_key``), the DAG hashes its stages
with it (``Pipeline.stage_hashes``), and pretraining names its run and checks its checkpoints with it
(``pretrain.config.run_identity``). Execution fields (how many workers, which device, where the
checkpoints go) change how fast or where a stage runs, never its output, so they are left out: a
run may move from a laptop to a cluster and keep every output.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from pipelines.typed_config import config_hash, to_dict

PRETRAIN_EXECUTION_FIELDS = ("num_workers", "use_gpu", "compile", "cpus_per_worker", "max_failures", "metrics_every",
                             "storage_path", "materialize_instances", "unpad")
"""Fields of the pretraining config that are execution only (``compile`` and ``unpad`` included: they change
kernels, not the model or the data order)."""


def without(config: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    """``config`` as a plain dict minus ``fields`` (top level)."""
    return {k: v for k, v in to_dict(config).items() if k not in fields}


def identity_data(config: Any) -> Any:
    """``config`` as plain data without its execution fields: a config dataclass names them in its
    ``EXECUTION_FIELDS`` class attribute (the pretraining config's workers and devices, a fine-tuning
    task's CPUs and GPUs), at any depth. One rule for every identity: resources are never identity."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        skip = getattr(type(config), "EXECUTION_FIELDS", ())
        return {f.name: identity_data(getattr(config, f.name)) for f in dataclasses.fields(config) if f.name not in skip}
    if isinstance(config, (list, tuple)):
        return [identity_data(v) for v in config]
    if isinstance(config, dict):
        return {k: identity_data(v) for k, v in config.items()}
    return config


def output_identity(stage: str, version: int, config: Any, *inputs: Any) -> str:
    """The identity of a stage output (a 16-hex-digit hash) from its config's ``identity_data``;
    ``inputs`` are upstream identities, URIs or other plain values."""
    return config_hash(stage, version, identity_data(config), *inputs)
