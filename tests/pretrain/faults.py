"""Fault hooks for the pretraining tests, handed to ``run_pretraining(fault_injection=...)``: the
trainer calls the hook on every rank before each optimizer step, as ``hook(step, rank)``.

Registered to be pickled by value: Ray Train's workers run it without importing this module (the
tests' directories are not on their sys.path)."""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

import ray.cloudpickle

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@dataclass(frozen=True)
class FaultInjection:
    """``rank`` exits hard (os._exit) when it reaches ``step``, once (a marker file records it).
    With ``hold``, it writes its Ray node id to the marker and waits instead: until the test removes its node,
    or creates ``{marker_path}.release`` (then it trains on, e.g. onto a disk the test has filled)."""

    step: int
    rank: int
    marker_path: str
    hold: bool = False

    def __call__(self, step: int, rank: int) -> None:
        if self.step != step or self.rank != rank or os.path.exists(self.marker_path):
            return
        import ray.train

        # Die only after the controller has committed the last checkpoint, so the test knows which
        # checkpoint the restart must resume from (a real crash may also lose an uncommitted one).
        ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)
        os.makedirs(os.path.dirname(self.marker_path), exist_ok=True)
        with open(self.marker_path + ".tmp", "w") as f:  # renamed: a watcher never reads half a marker
            f.write(ray.get_runtime_context().get_node_id() if self.hold else f"rank {rank} exited at step {step}\n")
        os.replace(self.marker_path + ".tmp", self.marker_path)
        if not self.hold:
            os._exit(1)
        while not os.path.exists(self.marker_path + ".release"):
            time.sleep(0.2)
