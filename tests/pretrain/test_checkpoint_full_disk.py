"""A disk that fills while pretraining writes a checkpoint: the run root (the data stages' outputs, Ray
Train's storage, the metrics and the export) on a small tmpfs mounted by the test.

One worker; it is held after step 6, once the step-4 checkpoint has been committed; the test fills the disk to
~256 KiB free (room for metric lines, not for a checkpoint) and lets it go on. Writing the step-8 checkpoint
fails: the run stops with an error that says the disk is full, the step-4 checkpoint and the finished
stages stay byte for byte, nothing half-written is taken for a checkpoint, no export is committed. After the
ballast is removed the same call resumes from step 4 and ends as an undisturbed run: step 8, 128 rows.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time

import pytest

from pipelines.pretrain import PretrainConfig, run_pretraining
from pipelines.pretrain.checkpointing import incomplete_parts
from pipelines.pretrain.metrics import read_metrics
from faults import FaultInjection
from pipelines.typed_config import from_dict

pytestmark = pytest.mark.slow

STEPS = 8


def _cfg() -> PretrainConfig:
    return from_dict(PretrainConfig, {
        "model_preset": "tiny", "num_workers": 1, "seed": 3, "checkpoint_every": 4, "metrics_every": 1,
        "max_failures": 0, "deepspeed": {"zero_stage": 1},
        "phases": [{"max_seq_length": 64, "global_batch_size": 16, "micro_batch_size": 8, "num_steps": STEPS,
                    "warmup_steps": 2, "learning_rate": 1e-3, "max_predictions_per_seq": 10}]})


def _digest(root: str) -> dict[str, str]:
    out = {}
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _steps_in(log_dir: str, rank: int) -> list[int]:
    with open(os.path.join(log_dir, f"rank{rank}.jsonl"), encoding="utf-8") as f:
        return [line["step"] for line in map(json.loads, f) if line["micro"] == 0]  # one per step


def test_disk_full_during_a_checkpoint_then_rerun(ray_session, pretrain_corpus, mount_tmpfs, fill_disk, tmp_path):
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    instances, vocab, _ = pretrain_corpus
    disk = mount_tmpfs("48m")
    root = os.path.join(disk, "run")
    # The data stages' outputs live under the run root, as in the DAG.
    stages = os.path.join(root, "stages")
    shutil.copytree(instances, os.path.join(stages, "instances"))
    shutil.copy(vocab, os.path.join(stages, "vocab.txt"))
    finished = _digest(stages)
    marker, log = str(tmp_path / "held"), str(tmp_path / "instances-log")
    held: dict = {}

    def fill_when_held() -> None:
        deadline = time.time() + 600
        while not os.path.exists(marker) and time.time() < deadline:
            time.sleep(0.1)
        held["checkpoints"] = _checkpoints(root)
        held["ballast"] = fill_disk(disk, leave=256 << 10)
        open(marker + ".release", "w").close()

    filler = threading.Thread(target=fill_when_held, daemon=True)
    filler.start()
    args = (os.path.join(stages, "instances"), os.path.join(stages, "vocab.txt"), root)
    with pytest.raises(Exception) as full:
        run_pretraining(_cfg(), *args, instance_log=log,
                        fault_injection=FaultInjection(step=6, rank=0, marker_path=marker, hold=True))
    filler.join(timeout=5)
    message = str(full.value)
    assert "No space left on device" in message and "could not write checkpoint phase0-step00000008" in message, message
    (step4,) = held["checkpoints"]
    assert step4.endswith("phase0-step00000004") and not incomplete_parts(step4)
    after = _checkpoints(root)
    assert after.pop(step4) == held["checkpoints"][step4]  # the committed checkpoint, byte for byte
    (partial,) = after  # what the step-8 write left: not a checkpoint a resume would take
    assert partial.endswith("phase0-step00000008") and incomplete_parts(partial), after
    assert not os.path.exists(os.path.join(_export_dir(root), "manifest.json"))  # no export committed
    assert _digest(stages) == finished

    os.remove(held["ballast"])
    export = run_pretraining(_cfg(), *args, instance_log=log)
    assert export == _export_dir(root) and os.path.isfile(os.path.join(export, "manifest.json"))
    # The rerun went on from step 4, not from the partial step 8 nor from scratch.
    assert _steps_in(log, 0) == [1, 2, 3, 4, 5, 6, 7, 8, 5, 6, 7, 8]
    curve = read_metrics(os.path.join(os.path.dirname(export), "metrics.jsonl"))
    assert [m["step"] for m in curve] == list(range(1, STEPS + 1))
    final = _checkpoints(root)
    assert sorted(os.path.basename(c) for c in final) == ["phase0-step00000004", "phase0-step00000008"]
    state8 = json.loads(open(os.path.join(partial, "train_state.json")).read())
    assert (state8["step"], state8["samples_in_epoch"], state8["world_size"]) == (STEPS, STEPS * 16, 1)
    assert all(not incomplete_parts(c) for c in final)
    assert _digest(stages) == finished


def _export_dir(root: str) -> str:
    (identity,) = os.listdir(os.path.join(root, "pretrain"))
    return os.path.join(root, "pretrain", identity, "phase0", "export")


def _checkpoints(root: str) -> dict[str, dict[str, str]]:
    """Checkpoint directory -> digest of its files."""
    out = {}
    for directory, dirs, files in os.walk(root):
        if os.path.basename(directory).startswith("phase0-step"):
            out[directory] = _digest(directory)
            dirs.clear()
    return out
