"""Pretraining: Ray Train workers running DeepSpeed ZeRO on the dynamically masked INSTANCES stream.

Entry point: ``run_pretraining(cfg, instances_uri, vocab_uri, output_root) -> export_uri``.
Names are imported lazily so ``pipelines.pretrain.metrics`` (FLOP count, MFU) works where only
torch is installed (the GPU benchmark).
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "PretrainConfig": "config", "PhaseConfig": "config", "OptimizerConfig": "config",
    "DeepSpeedSettings": "config", "MaskingConfig": "config", "HeldoutConfig": "config",
    "run_pretraining": "trainer", "PretrainInputError": "preflight",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pipelines.pretrain' has no attribute {name!r}")
    return getattr(importlib.import_module(f"pipelines.pretrain.{_EXPORTS[name]}"), name)
