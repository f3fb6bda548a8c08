"""Pretraining: Ray Train workers running DeepSpeed ZeRO on the dynamically masked INSTANCES stream.

Entry point: ``run_pretraining(cfg, instances_uri, vocab_uri, output_root) -> export_uri``.
"""
from pipelines.pretrain.config import DeepSpeedSettings, MaskingConfig, OptimizerConfig, PhaseConfig, PretrainConfig
from pipelines.pretrain.trainer import PretrainInputError, run_pretraining

__all__ = ["PretrainConfig", "PhaseConfig", "OptimizerConfig", "DeepSpeedSettings", "MaskingConfig",
           "run_pretraining", "PretrainInputError"]
