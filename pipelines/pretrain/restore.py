"""Where a rank starts a phase from: the checkpoint Ray Train hands back (checked against this run and
its data), or initial weights. When the saved DeepSpeed layout (world size, ZeRO stage) differs, the
consolidated fp32 weights are loaded instead and the schedule is moved to the saved step.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile

from bert_core import BertForPreTraining
from pipelines.pretrain import checkpointing as ckpt
from pipelines.pretrain.inputs import check_cursor
from pipelines.pretrain.metrics import MetricsWriter
from pipelines.pretrain.worker_job import WorkerJob


class RestoreDir:
    """A local copy of the checkpoint being restored, kept until DeepSpeed has loaded it."""

    def __init__(self, checkpoint):
        self.path = tempfile.mkdtemp(prefix="pretrain-restore-")
        checkpoint.to_directory(self.path)

    def cleanup(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def restore_or_init(job: WorkerJob, model: BertForPreTraining, world: int):
    """Train state to start from; loads weights now when the DeepSpeed state cannot be used as is."""
    import ray.train

    model_config = dataclasses.asdict(model.config)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        if job.init_weights is not None:
            _load_hf_weights(model, job.init_weights["uri"])
        return ckpt.TrainState(job.phase_index, 0, 0, 0, world, job.cfg.deepspeed.zero_stage, job.run_identity,
                               model_config, job.plan.summary()), None
    restore = RestoreDir(checkpoint)
    ckpt.check_complete(restore.path)
    saved = ckpt.read_train_state(restore.path)
    ckpt.check_compatible(saved, phase=job.phase_index, run_identity=job.run_identity, model_config=model_config)
    check_cursor(saved.instances, job.plan, f"checkpoint at step {saved.step}")
    if not _same_layout(saved, job, world):
        ckpt.load_consolidated(model, restore.path)
    return saved, restore


def _same_layout(saved: ckpt.TrainState, job: WorkerJob, world: int) -> bool:
    return saved.world_size == world and saved.zero_stage == job.cfg.deepspeed.zero_stage


def finish_restore(engine, job: WorkerJob, state: ckpt.TrainState, restore_dir: RestoreDir | None, world: int) -> None:
    if restore_dir is None:
        return
    if _same_layout(state, job, world):
        path, _ = engine.load_checkpoint(os.path.join(restore_dir.path, ckpt.DEEPSPEED_DIR), tag=ckpt.TAG)
        if path is None:
            raise ckpt.CheckpointError(f"DeepSpeed could not load the checkpoint in {restore_dir.path}")
    elif state.step > 0 and engine.lr_scheduler is not None:
        # Weights came from the consolidated state; the schedule stands where `step` optimizer steps leave
        # it (DeepSpeed's scheduler counts one iteration per step from 0, as a state it would have loaded).
        engine.lr_scheduler.step(state.step)
    engine.global_steps = state.step


def _load_hf_weights(model: BertForPreTraining, uri: str) -> None:
    from safetensors.torch import load as load_safetensors

    from bert_core import load_hf_state_dict
    from pipelines import storage

    load_hf_state_dict(model, load_safetensors(storage.read_bytes(uri)))


def restore_metrics_log(directory: str | None, writer: MetricsWriter) -> None:
    """The log up to the restored step replaces the local one, so the curve continues, not repeats
    (a fresh start, ``directory`` None, starts an empty log)."""
    src = os.path.join(directory, ckpt.METRICS_FILE) if directory else ""
    if src and os.path.isfile(src):
        shutil.copyfile(src, writer.path)
    elif os.path.exists(writer.path):
        os.remove(writer.path)
