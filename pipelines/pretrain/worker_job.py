"""One phase's work for every rank, as plain data: the trainer builds a ``WorkerJob`` and hands it
to Ray Train as ``train_loop_config`` (``to_loop_config``); each rank rebuilds it (``from_loop_config``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from bert_core import BertConfig
from pipelines.pretrain.config import PretrainConfig
from pipelines.pretrain.engine import model_config
from pipelines.pretrain.inputs import InstancePlan
from pipelines.pretrain.dynamic_masking import VocabInfo
from pipelines.typed_config import from_dict, to_dict


@dataclass(frozen=True)
class WorkerJob:
    """Everything one phase's workers need, as plain data for ``train_loop_config``."""

    cfg: PretrainConfig
    phase_index: int
    vocab: VocabInfo
    run_identity: str
    metrics_dir: str
    init_weights: dict[str, Any] | None = None
    """{'uri': HF-layout model.safetensors} the phase starts from when no checkpoint exists."""
    step_hook: Callable[[int, int], None] | None = None
    """Test hook (e.g. a fault): called as ``step_hook(step, rank)`` on every rank before each optimizer step."""
    plan: InstancePlan | None = None
    """The phase's instances (shards, row counts, fingerprint); set by the trainer before fitting."""
    instance_log: str | None = None
    """Test hook: a directory where every rank appends the instance_ids of each micro-batch."""
    heldout: dict[str, Any] | None = None
    """The phase's held-out rows, masked once (``heldout.prepare``: ``TRAIN_BATCH_KEYS`` arrays), scored every
    ``cfg.heldout.every`` steps; None: no held-out check."""

    def to_loop_config(self) -> dict[str, Any]:
        return {"cfg": to_dict(self.cfg), "phase_index": self.phase_index, "vocab": dataclasses.asdict(self.vocab),
                "run_identity": self.run_identity, "metrics_dir": self.metrics_dir,
                "init_weights": self.init_weights,
                "step_hook": self.step_hook,
                "plan": self.plan.to_dict() if self.plan else None, "instance_log": self.instance_log,
                "heldout": self.heldout}

    @classmethod
    def from_loop_config(cls, d: dict[str, Any]) -> "WorkerJob":
        vocab = dict(d["vocab"])
        vocab["special_token_ids"] = tuple(vocab["special_token_ids"])
        if vocab.get("continuation") is not None:
            vocab["continuation"] = tuple(vocab["continuation"])
        return cls(from_dict(PretrainConfig, d["cfg"]), d["phase_index"], VocabInfo(**vocab), d["run_identity"],
                   d["metrics_dir"], d["init_weights"], d["step_hook"],
                   InstancePlan.from_dict(d["plan"]) if d["plan"] else None, d["instance_log"], d.get("heldout"))

    @property
    def phase(self):
        return self.cfg.phases[self.phase_index]

    def bert_config(self) -> BertConfig:
        return model_config(self.cfg, self.vocab.vocab_size)
