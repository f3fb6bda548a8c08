"""Fault hooks for the pretraining tests, handed to ``run_pretraining(fault_injection=...)``: the
trainer calls the hook on every rank before each optimizer step, as ``hook(step, rank)``.

Registered to be pickled by value: Ray Train's workers run it without importing this module (the
tests' directories are not on their sys.path)."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import ray.cloudpickle

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@dataclass(frozen=True)
class FaultInjection:
    """``rank`` exits hard (os._exit) when it reaches ``step``, once (a marker file records it)."""

    step: int
    rank: int
    marker_path: str

    def __call__(self, step: int, rank: int) -> None:
        if self.step != step or self.rank != rank or os.path.exists(self.marker_path):
            return
        import ray.train

        # Die only after the controller has committed the last checkpoint, so the test knows which
        # checkpoint the restart must resume from (a real crash may also lose an uncommitted one).
        ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)
        os.makedirs(os.path.dirname(self.marker_path), exist_ok=True)
        with open(self.marker_path, "w") as f:
            f.write(f"rank {rank} exited at step {step}\n")
        os._exit(1)
