"""The per-worker pretraining loop that Ray Train runs on every rank:

    the rank's own Ray Data stream (``inputs.rank_batches``: its rows of the seeded epoch order, masked
    by the ``MaskInstances`` stage on CPU actors) -> DeepSpeed engine step
    -> metrics (rank 0) -> checkpoint + ray.train.report (every rank, same number of times)

Everything comes from the ``loop_config`` dict the trainer builds (``WorkerJob``); nothing is read
from module globals. Restores from ``ray.train.get_checkpoint()`` (see ``checkpointing``) and starts
the stream at the saved cursor (epoch, samples into the epoch), so every rank gets exactly the rows an
uninterrupted run would have given it, also after a rescale (see ``inputs``).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch

from bert_core import IGNORE_INDEX, BertConfig, BertForPreTraining
from bert_core.model import check_id_ranges
from pipelines.devices import to_device
from pipelines.pretrain import checkpointing as ckpt
from pipelines.pretrain.config import PhaseConfig, PretrainConfig
from pipelines.pretrain.deepspeed_config import build_deepspeed_config, uses_client_optimizer, weight_decay_groups
from pipelines.pretrain.metrics import GpuPeak, MetricsWriter, flops_per_step, gpu_peak, mfu_metrics
from pipelines.pretrain.inputs import InstancePlan, Stream, check_cursor, rank_batches, steps_per_epoch
from pipelines.schemas import TRAIN_BATCH_KEYS
from pipelines.stages.dynamic_masking import VocabInfo
from pipelines.typed_config import from_dict, to_dict


@dataclass(frozen=True)
class FaultInjection:
    """Test hook: ``rank`` exits hard (os._exit) when it reaches ``step``, once (a marker file records it).
    With ``hold``, it writes its Ray node id to the marker and waits instead: until the test removes its node,
    or creates ``{marker_path}.release`` (then it trains on, e.g. onto a disk the test has filled)."""

    step: int
    rank: int
    marker_path: str
    hold: bool = False


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
    fault: FaultInjection | None = None
    plan: InstancePlan | None = None
    """The phase's instances (shards, row counts, fingerprint); set by the trainer before fitting."""
    instance_log: str | None = None
    """Test hook: a directory where every rank appends the instance_ids of each micro-batch."""

    def to_loop_config(self) -> dict[str, Any]:
        return {"cfg": to_dict(self.cfg), "phase_index": self.phase_index, "vocab": dataclasses.asdict(self.vocab),
                "run_identity": self.run_identity, "metrics_dir": self.metrics_dir,
                "init_weights": self.init_weights,
                "fault": dataclasses.asdict(self.fault) if self.fault else None,
                "plan": self.plan.to_dict() if self.plan else None, "instance_log": self.instance_log}

    @classmethod
    def from_loop_config(cls, d: dict[str, Any]) -> "WorkerJob":
        vocab = dict(d["vocab"])
        vocab["special_token_ids"] = tuple(vocab["special_token_ids"])
        if vocab.get("continuation") is not None:
            vocab["continuation"] = tuple(vocab["continuation"])
        return cls(from_dict(PretrainConfig, d["cfg"]), d["phase_index"], VocabInfo(**vocab), d["run_identity"],
                   d["metrics_dir"], d["init_weights"], FaultInjection(**d["fault"]) if d["fault"] else None,
                   InstancePlan.from_dict(d["plan"]) if d["plan"] else None, d["instance_log"])

    @property
    def phase(self):
        return self.cfg.phases[self.phase_index]

    def bert_config(self) -> BertConfig:
        return model_config(self.cfg, self.vocab.vocab_size)


def model_config(cfg: PretrainConfig, vocab_size: int) -> BertConfig:
    """The model every phase of ``cfg`` trains (positions for the longest phase, at least BERT's 512)."""
    return BertConfig.preset(cfg.model_preset, vocab_size=vocab_size, hidden_dropout_prob=cfg.dropout,
                             attention_probs_dropout_prob=cfg.dropout,
                             max_position_embeddings=max(512, max(p.max_seq_length for p in cfg.phases)))


def static_predictions(cfg: PretrainConfig, phase: PhaseConfig) -> int | None:
    """MLM slots decoded per sequence: a fixed number on GPU and whenever compiled (no host sync per step,
    one graph without data-dependent shapes); None (exactly the masked positions) otherwise."""
    return phase.max_predictions_per_seq if cfg.use_gpu or cfg.compiled else None


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point (one call per rank)."""
    import ray.train

    job = WorkerJob.from_loop_config(loop_config)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = _device(job.cfg)
    torch.manual_seed(job.cfg.seed)  # identical initial weights on every rank
    model = BertForPreTraining(job.bert_config())
    state, restore_dir = _restore_or_init(job, model, world)
    torch.manual_seed(job.cfg.seed * 1000 + rank + 7919 * state.step)  # dropout stream per rank and resume point

    engine = build_engine(job.cfg, job.phase, model, world, device)
    _finish_restore(engine, job, state, restore_dir, world)
    writer = MetricsWriter(job.metrics_dir) if rank == 0 else None
    if writer is not None:
        _restore_metrics_log(restore_dir.path if restore_dir else None, writer)
    if restore_dir is not None:
        restore_dir.cleanup()
    try:
        _run_steps(engine, job, state, rank, world, device, writer)
    finally:
        if writer is not None:
            writer.close()


def build_engine(cfg: PretrainConfig, phase: PhaseConfig, model: BertForPreTraining, world: int, device: torch.device):
    """The DeepSpeed engine every rank trains with (the process group must already exist); compiled when
    ``cfg.compiled``. ``bench.pretrain_engine`` builds the same engine on one GPU."""
    import deepspeed

    groups = weight_decay_groups(model, cfg.optimizer.weight_decay)
    client_opt = None
    if uses_client_optimizer(cfg):
        from pipelines.pretrain.lamb import Lamb

        opt = cfg.optimizer
        client_opt = Lamb(groups, lr=phase.learning_rate, betas=(opt.beta1, opt.beta2), eps=opt.eps)
    engine, _, _, _ = deepspeed.initialize(model=model.to(device), model_parameters=groups if client_opt is None else None,
                                           optimizer=client_opt, config=build_deepspeed_config(cfg, phase, world),
                                           dist_init_required=False)
    skip_single_rank_allreduce(engine, cfg, world)
    if engine.lr_scheduler is not None:
        # DeepSpeed's WarmupDecayLR starts at iteration -1 and applies lr 0 for two steps, a step behind the
        # configured schedule; at iteration 0 optimizer step s (from 1) applies warmup/decay at s - 1 (as HF's
        # linear schedule), and a checkpoint after s steps holds iteration s.
        engine.lr_scheduler.step(0)
    if cfg.compiled:
        engine.compile(compile_kwargs={"dynamic": False})  # in place: state-dict names are unchanged
    return engine


def skip_single_rank_allreduce(engine, cfg: PretrainConfig, world: int) -> bool:
    """On one rank with ZeRO-0 in fp32, turn off DeepSpeed's gradient all-reduce; True when it did.

    DeepSpeed would still flatten every gradient, "all-reduce" it with itself and copy it back
    (~5% of a CPU step of ``small``). ZeRO >= 1 and the bf16/fp16 optimizers move gradients inside
    that call, so they keep it.
    """
    if world == 1 and cfg.deepspeed.zero_stage == 0 and cfg.precision == "fp32":
        engine.enable_backward_allreduce = False
        return True
    return False


def _device(cfg: PretrainConfig) -> torch.device:
    if cfg.use_gpu:
        import ray.train.torch

        return ray.train.torch.get_device()
    return torch.device("cpu")


class _RestoreDir:
    """A local copy of the checkpoint being restored, kept until DeepSpeed has loaded it."""

    def __init__(self, checkpoint):
        self.path = tempfile.mkdtemp(prefix="pretrain-restore-")
        checkpoint.to_directory(self.path)

    def cleanup(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _restore_or_init(job: WorkerJob, model: BertForPreTraining, world: int):
    """Train state to start from; loads weights now when the DeepSpeed state cannot be used as is."""
    import ray.train

    model_config = dataclasses.asdict(model.config)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        if job.init_weights is not None:
            _load_hf_weights(model, job.init_weights["uri"])
        return ckpt.TrainState(job.phase_index, 0, 0, 0, world, job.cfg.deepspeed.zero_stage, job.run_identity,
                               model_config, job.plan.summary()), None
    restore = _RestoreDir(checkpoint)
    ckpt.check_complete(restore.path)
    saved = ckpt.read_train_state(restore.path)
    ckpt.check_compatible(saved, phase=job.phase_index, run_identity=job.run_identity, model_config=model_config)
    check_cursor(saved.instances, job.plan, f"checkpoint at step {saved.step}")
    if not _same_layout(saved, job, world):
        ckpt.load_consolidated(model, restore.path)
    return saved, restore


def _same_layout(saved: ckpt.TrainState, job: WorkerJob, world: int) -> bool:
    return saved.world_size == world and saved.zero_stage == job.cfg.deepspeed.zero_stage


def _finish_restore(engine, job: WorkerJob, state: ckpt.TrainState, restore_dir: _RestoreDir | None, world: int) -> None:
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


def _restore_metrics_log(directory: str | None, writer: MetricsWriter) -> None:
    """The log up to the restored step replaces the local one, so the curve continues, not repeats
    (a fresh start, ``directory`` None, starts an empty log)."""
    src = os.path.join(directory, ckpt.METRICS_FILE) if directory else ""
    if src and os.path.isfile(src):
        shutil.copyfile(src, writer.path)
    elif os.path.exists(writer.path):
        os.remove(writer.path)


def _micro_batches(job: WorkerJob, state: ckpt.TrainState, rank: int,
                   world: int) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """(epoch, masked batch) from the saved cursor to the end of the phase."""
    phase, plan = job.phase, job.plan
    stream = Stream(plan, job.cfg.seed, phase.micro_batch_size, world, rank,
                    steps_per_epoch(plan, phase.global_batch_size) * phase.global_batch_size,
                    keep_in_memory=job.cfg.materialize_instances)
    masker = {"vocab": job.vocab, "seed": job.cfg.seed, "max_seq_length": phase.max_seq_length,
              "mlm_probability": job.cfg.masking.mlm_probability,
              "max_predictions_per_seq": phase.max_predictions_per_seq, "whole_word": job.cfg.masking.whole_word}
    needed = (phase.num_steps - state.step) * phase.global_batch_size
    for batch in rank_batches(stream, masker, state.epoch, state.samples_in_epoch, needed):
        yield int(batch["epoch"][0]), batch  # an epoch is whole micro-batches of every rank: one epoch each


class Window:
    """Sums over the steps since the last metrics line, kept on the device (no host sync per step)."""

    def __init__(self):
        self.sums: torch.Tensor | None = None  # see add() for the 9 entries
        self.start = time.perf_counter()
        self.cpu_start = time.process_time()  # CPU time of this process, all threads
        self.flops = 0.0
        self.input_seconds = 0.0  # waiting for the stream (read + masking run ahead on CPU actors), on this rank
        self.learning_rate: float | None = None  # the engine's rate applied by the window's last step

    @torch.no_grad()
    def add(self, out, batch: dict[str, torch.Tensor]) -> None:
        valid = out.mlm_labels != IGNORE_INDEX  # the static (GPU) head also decodes filler slots
        n_mlm = valid.sum().double()
        # torch.full, not torch.tensor: a host-to-device copy of a Python number waits for the GPU's queue
        n_seq = torch.full((), float(batch["nsp_labels"].numel()), dtype=torch.float64, device=n_mlm.device)
        row = torch.stack([
            out.mlm_loss.detach().double() * n_mlm, ((out.mlm_logits.argmax(-1) == out.mlm_labels) & valid).sum().double(),
            n_mlm, out.nsp_loss.detach().double() * n_seq, (out.nsp_logits.argmax(-1) == batch["nsp_labels"]).sum().double(),
            n_seq, n_seq * batch["input_ids"].shape[1], batch["attention_mask"].sum().double(), torch.ones_like(n_seq)])
        self.sums = row if self.sums is None else self.sums + row


def train_micro_batch(engine, arrays: dict[str, np.ndarray], device: torch.device, num_predictions: int | None,
                      bert_config: BertConfig, window: Window) -> None:
    """One micro-batch as every rank runs it: to the device, forward, backward, ``engine.step()`` (DeepSpeed
    applies the optimizer at the accumulation boundary), and the window's sums. ``bench.pretrain_engine``
    times this same function on a GPU."""
    if device.type != "cpu":  # the model checks ids on CPU tensors only; on a GPU check the host arrays
        check_id_ranges(bert_config, arrays["input_ids"], arrays["token_type_ids"])
    batch = {k: to_device(torch.from_numpy(v), device) for k, v in arrays.items()}
    out = engine(**batch, num_predictions=num_predictions)
    engine.backward(out.loss)
    engine.step()
    window.flops += flops_per_step(bert_config, *batch["input_ids"].shape, out.mlm_labels.numel())
    window.add(out, batch)


def _run_steps(engine, job: WorkerJob, state: ckpt.TrainState, rank: int, world: int, device, writer) -> None:
    cfg, phase = job.cfg, job.phase
    accumulation = cfg.gradient_accumulation_steps(phase, world)
    batches = _micro_batches(job, state, rank, world)
    window = Window()
    bert_config = job.bert_config()
    step, epoch, samples = state.step, state.epoch, state.samples_in_epoch
    latest: dict[str, Any] = {"step": step}
    num_predictions = static_predictions(cfg, phase)
    peak = gpu_peak(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    engine.train()
    while step < phase.num_steps:
        _maybe_inject_fault(job.fault, step, rank)
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
            arrays = {k: batch[k] for k in TRAIN_BATCH_KEYS}
            train_micro_batch(engine, arrays, device, num_predictions, bert_config, window)
            samples += phase.micro_batch_size * world
        step += 1
        state = dataclasses.replace(state, step=step, epoch=epoch, samples_in_epoch=samples, world_size=world,
                                    zero_stage=cfg.deepspeed.zero_stage)
        if step % cfg.metrics_every == 0 or step == phase.num_steps:
            latest = summarise(window, engine, step, epoch, world, peak)
            window = Window()
            if writer is not None:
                writer.write(step, latest)
        if step % cfg.checkpoint_every == 0 or step == phase.num_steps:
            # Only checkpoints go through ray.train.report: each report is a barrier with the controller.
            _save_and_report(engine, state, latest, writer, rank)


def summarise(window: Window, engine, step: int, epoch: int, world: int, peak: GpuPeak | None) -> dict[str, Any]:
    """All-reduce the window's sums so the line describes every rank's batches."""
    import torch.distributed as dist

    sums = torch.cat([window.sums, torch.tensor([window.flops], dtype=torch.float64, device=window.sums.device)])
    if dist.is_initialized():
        dist.all_reduce(sums)
    # tolist() waits for the device, so the window's time includes the steps still queued on a GPU.
    mlm_loss, mlm_ok, n_mlm, nsp_loss, nsp_ok, n_seq, positions, real_tokens, _, flops = sums.tolist()
    seconds = time.perf_counter() - window.start
    out = {"step": step, "epoch": epoch, "mlm_loss": mlm_loss / max(n_mlm, 1), "mlm_accuracy": mlm_ok / max(n_mlm, 1),
           "nsp_loss": nsp_loss / max(n_seq, 1), "nsp_accuracy": nsp_ok / max(n_seq, 1),
           "learning_rate": float(engine.get_lr()[0]) if window.learning_rate is None else window.learning_rate,
           "tokens_per_s": positions / seconds,
           "real_tokens_per_s": real_tokens / seconds, "samples_per_s": n_seq / seconds}
    out["input_wait_fraction"] = window.input_seconds / seconds  # rank 0's share of time spent waiting for data
    # Tokens per CPU-second of rank 0's process: comparable across runs on a machine shared with other load.
    out["tokens_per_cpu_s"] = positions / world / max(time.process_time() - window.cpu_start, 1e-9)
    out.update(mfu_metrics(flops / world, seconds, peak))  # per GPU: datasheet peak, measured matmul beside
    return out


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


def _maybe_inject_fault(fault: FaultInjection | None, step: int, rank: int) -> None:
    if fault is None or fault.step != step or fault.rank != rank or os.path.exists(fault.marker_path):
        return
    import ray.train

    # Die only after the controller has committed the last checkpoint, so the test knows which
    # checkpoint the restart must resume from (a real crash may also lose an uncommitted one).
    ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)
    os.makedirs(os.path.dirname(fault.marker_path), exist_ok=True)
    with open(fault.marker_path + ".tmp", "w") as f:  # renamed: a watcher never reads half a marker
        f.write(ray.get_runtime_context().get_node_id() if fault.hold else f"rank {rank} exited at step {step}\n")
    os.replace(fault.marker_path + ".tmp", fault.marker_path)
    if not fault.hold:
        os._exit(1)
    while not os.path.exists(fault.marker_path + ".release"):
        time.sleep(0.2)


def _log_instances(directory: str, rank: int, step: int, micro: int, ids: np.ndarray) -> None:
    """Test hook: one JSON line per micro-batch (a restarted rank appends again from its restored step)."""
    import json

    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f"rank{rank}.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": step, "micro": micro, "ids": [str(i) for i in ids]}) + "\n")
