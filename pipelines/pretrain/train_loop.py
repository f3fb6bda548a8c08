"""The per-worker pretraining loop that Ray Train runs on every rank:

    the rank's own Ray Data stream (``inputs.rank_batches``: its rows of the seeded epoch order, masked
    by the ``MaskInstances`` stage on CPU actors) -> DeepSpeed engine step
    -> metrics (rank 0) -> checkpoint + ray.train.report (every rank, same number of times)

Everything comes from the ``loop_config`` dict the trainer builds (``worker_job.WorkerJob``); nothing
is read from module globals. The engine and its step are in ``engine``; the rank restores from
``ray.train.get_checkpoint()`` (``restore``, ``checkpointing``) and starts
the stream at the saved cursor (epoch, samples into the epoch), so every rank gets exactly the rows an
uninterrupted run would have given it, also after a rescale (see ``inputs``).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from typing import Any, Iterator

import numpy as np
import torch

from bert_core import BertForPreTraining
from pipelines.pretrain import checkpointing as ckpt
from pipelines.pretrain.config import PretrainConfig
from pipelines.pretrain.engine import (Window, build_engine, fit_to_bin, static_predictions, summarise,
                                       train_micro_batch)
from pipelines.pretrain.heldout import evaluate
from pipelines.pretrain.inputs import Stream, rank_batches, steps_per_epoch
from pipelines.pretrain.metrics import MetricsWriter, gpu_peak
from pipelines.pretrain.restore import finish_restore, restore_metrics_log, restore_or_init
from pipelines.pretrain.worker_job import WorkerJob
from pipelines.schemas import TRAIN_BATCH_KEYS


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point (one call per rank)."""
    import ray.train

    job = WorkerJob.from_loop_config(loop_config)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = _device(job.cfg)
    torch.manual_seed(job.cfg.seed)  # identical initial weights on every rank
    model = BertForPreTraining(job.bert_config())
    model.bert.unpad = job.cfg.unpadded  # the feed-forward blocks on real tokens only (eager CPU steps)
    state, restore_dir = restore_or_init(job, model, world)
    torch.manual_seed(job.cfg.seed * 1000 + rank + 7919 * state.step)  # dropout stream per rank and resume point

    engine = build_engine(job.cfg, job.phase, model, world, device)
    finish_restore(engine, job, state, restore_dir, world)
    writer = MetricsWriter(job.metrics_dir) if rank == 0 else None
    if writer is not None:
        restore_metrics_log(restore_dir.path if restore_dir else None, writer)
    if restore_dir is not None:
        restore_dir.cleanup()
    try:
        _run_steps(engine, job, state, rank, world, device, writer)
    finally:
        if writer is not None:
            writer.close()


def _device(cfg: PretrainConfig) -> torch.device:
    if cfg.use_gpu:
        import ray.train.torch

        return ray.train.torch.get_device()
    return torch.device("cpu")


def _micro_batches(job: WorkerJob, state: ckpt.TrainState, rank: int,
                   world: int) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """(epoch, masked batch) from the saved cursor to the end of the phase."""
    phase, plan = job.phase, job.plan
    stream = Stream(plan, job.cfg.seed, phase.micro_batch_size, world, rank,
                    steps_per_epoch(plan, phase.global_batch_size) * phase.global_batch_size,
                    keep_in_memory=job.cfg.materialize_instances, bins=phase.bins)
    masker = {"vocab": job.vocab, "seed": job.cfg.seed, "max_seq_length": phase.max_seq_length,
              "mlm_probability": job.cfg.mlm_probability(phase),
              "max_predictions_per_seq": phase.max_predictions_per_seq, "whole_word": job.cfg.masking.whole_word}
    needed = (phase.num_steps - state.step) * phase.global_batch_size
    for batch in rank_batches(stream, masker, state.epoch, state.samples_in_epoch, needed):
        yield int(batch["epoch"][0]), batch  # an epoch is whole micro-batches of every rank: one epoch each


def _run_steps(engine, job: WorkerJob, state: ckpt.TrainState, rank: int, world: int, device, writer) -> None:
    cfg, phase = job.cfg, job.phase
    accumulation = cfg.gradient_accumulation_steps(phase, world)
    batches = _micro_batches(job, state, rank, world)
    nsp = cfg.objective == "nsp"
    window = Window(nsp)
    bert_config = job.bert_config()
    step, epoch, samples = state.step, state.epoch, state.samples_in_epoch
    latest: dict[str, Any] = {"step": step}
    peak = gpu_peak(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    engine.train()
    while step < phase.num_steps:
        if job.step_hook is not None:
            job.step_hook(step, rank)
        # Read from the optimizer's param groups (python floats) before the step applies it.
        window.learning_rate = float(engine.get_lr()[0])
        for micro in range(accumulation):
            waited = time.perf_counter()
            batch_epoch, batch = next(batches)
            window.input_seconds += time.perf_counter() - waited
            if batch_epoch != epoch:
                epoch, samples = batch_epoch, 0
            if job.instance_log:
                _log_instances(job.instance_log, rank, step + 1, micro, batch["instance_id"])
            arrays = fit_to_bin({k: batch[k] for k in TRAIN_BATCH_KEYS}, phase.bins)
            num_predictions = static_predictions(cfg, phase, arrays["input_ids"].shape[1])
            train_micro_batch(engine, arrays, device, num_predictions, bert_config, window)
            samples += phase.micro_batch_size * world
        step += 1
        state = dataclasses.replace(state, step=step, epoch=epoch, samples_in_epoch=samples, world_size=world,
                                    zero_stage=cfg.deepspeed.zero_stage)
        if step % cfg.metrics_every == 0 or step == phase.num_steps:
            latest = summarise(window, engine, step, epoch, world, peak)
            latest.update(_score_heldout(engine, job, step, rank, device))
            window = Window(nsp)  # after the held-out pass: the next window times training only
            if writer is not None:
                writer.write(step, latest)
        if step % cfg.checkpoint_every == 0 or step == phase.num_steps:
            # Only checkpoints go through ray.train.report: each report is a barrier with the controller.
            _save_and_report(engine, state, latest, writer, rank)


def _score_heldout(engine, job: WorkerJob, step: int, rank: int, device) -> dict:
    """The held-out scores at every ``heldout.every`` steps and the phase's last, on rank 0 (the others go on
    and wait for it at the next all-reduce); with ZeRO-3 on every rank, since its forward gathers weights
    collectively. Eval mode draws no random numbers, so training goes on exactly as without it."""
    cfg = job.cfg
    if job.heldout is None or (step % cfg.heldout.every and step != job.phase.num_steps):
        return {}
    if rank != 0 and cfg.deepspeed.zero_stage != 3:
        return {}
    static = static_predictions(cfg, job.phase) is not None  # held-out rows are masked at masking.mlm_probability
    scores = evaluate(engine, job.heldout, job.phase.micro_batch_size, device,
                      job.phase.max_predictions_per_seq if static else None)
    if cfg.objective == "mlm":
        return {k: v for k, v in scores.items() if "nsp" not in k}
    return scores


def _save_and_report(engine, state: ckpt.TrainState, metrics: dict[str, Any], writer, rank: int) -> None:
    """Every rank reports, contributing its DeepSpeed files to one checkpoint (Ray merges them)."""
    import ray.train

    with tempfile.TemporaryDirectory(prefix="pretrain-ckpt-") as tmp:
        engine.save_checkpoint(os.path.join(tmp, ckpt.DEEPSPEED_DIR), tag=ckpt.TAG)
        if writer is not None:
            ckpt.write_train_state(tmp, state)
            if os.path.exists(writer.path):
                shutil.copyfile(writer.path, os.path.join(tmp, ckpt.METRICS_FILE))
        ckpt.write_rank_files(tmp, rank, state)  # what makes the merged checkpoint complete
        name = f"phase{state.phase}-step{state.step:08d}"
        try:
            ray.train.report({**metrics, "step": state.step}, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                             checkpoint_dir_name=name)
        except OSError as e:  # the upload's own error (e.g. a full disk) names neither checkpoint nor storage
            raise OSError(e.errno, f"rank {rank} could not write checkpoint {name} to the run's storage "
                                   f"({ray.train.get_context().get_experiment_name()}): {e}") from e


def _log_instances(directory: str, rank: int, step: int, micro: int, ids: np.ndarray) -> None:
    """Test hook: one JSON line per micro-batch (a restarted rank appends again from its restored step)."""
    import json

    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f"rank{rank}.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": step, "micro": micro, "ids": [str(i) for i in ids]}) + "\n")
