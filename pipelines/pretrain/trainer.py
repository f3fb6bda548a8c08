"""Driver side of pretraining: check the inputs (``preflight``), run each phase as a Ray Train
``TorchTrainer`` (``train_loop`` on every rank), export it (``export``).

    from pipelines.pretrain import PretrainConfig, run_pretraining
    export_uri = run_pretraining(cfg, "runs/x/nsp_pairs/<key>", "runs/x/vocab.txt", "runs/x")

Layout under ``{output_root}/pretrain/{run_identity}/``::

    runs/pretrain-{id}-phase{k}/...   Ray Train storage: checkpoints (last K kept), run snapshot
    phase{k}/metrics.jsonl            the phase's metric log (also TensorBoard events when local)
    phase{k}/export/                  HF layout: config.json, model.safetensors, the tokenizer (vocab.txt,
                                      tokenizer.json, tokenizer_config.json, special_tokens_map.json), manifest.json

``run_identity`` hashes the config (minus execution fields such as num_workers) and the inputs, so a
driver restarted with the same config gets the same Ray run name and Ray Train hands the workers the
latest checkpoint; a finished phase (its export has a manifest) is skipped. Phase k+1 starts from
phase k's exported weights with its own optimizer and schedule.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import tempfile
import threading
from typing import Callable, Sequence

from ray.train import UserCallback

from pipelines import console, storage
from pipelines.pretrain import heldout
from pipelines.pretrain.checkpointing import TRAIN_STATE, TrainState, check_compatible, incomplete_parts
from pipelines.pretrain.config import PretrainConfig, run_identity
from pipelines.pretrain.export import EXPORT_MANIFEST, export_phase, weights_uri
from pipelines.pretrain.inputs import InstancePlan, check_cursor
from pipelines.pretrain.preflight import PretrainInputError, check_before_work, fetch_vocab, inputs_per_phase, instance_files
from pipelines.pretrain.train_loop import train_loop_per_worker
from pipelines.pretrain.worker_job import WorkerJob
from pipelines.pretrain.dynamic_masking import VocabInfo

logger = logging.getLogger(__name__)

__all__ = ["PretrainInputError", "run_pretraining"]


def run_pretraining(cfg: PretrainConfig, instances_uri: str | Sequence[str], vocab_uri: str, output_root: str,
                    *, fault_injection: Callable[[int, int], None] | None = None, instance_log: str | None = None) -> str:
    """Pretrain BERT on INSTANCES shards and return the URI of the final HF-layout export.

    ``instances_uri``: one INSTANCES directory (stage output or any parquet directory/glob) for every
    phase, or one per phase (e.g. instances built for seq 128 and for seq 512); a phase whose instances
    were built for another length, or whose longest instance is at most half its max_seq_length, is
    refused. ``vocab_uri``: the ``vocab.txt`` or ``tokenizer.json`` (or a wordpiece output directory)
    the instances were tokenised with; it sets the model's vocabulary size and the export's casing.
    ``output_root``: local path or ``s3://``. ``fault_injection`` is a test hook, called as
    ``fault_injection(step, rank)`` on every rank before each step (e.g. one worker exits hard once);
    ``instance_log`` another (every rank logs each micro-batch's instance_ids under it).
    Re-running with the same arguments resumes where the last run stopped, at the same rows.
    """
    inputs = inputs_per_phase(cfg, instances_uri)
    with tempfile.TemporaryDirectory(prefix="pretrain-vocab-") as tmp:
        vocab_file = os.path.join(tmp, "vocab.txt")
        tokenizer = fetch_vocab(vocab_uri, vocab_file)
        vocab = VocabInfo.from_tokenizer(tokenizer, whole_word=cfg.masking.whole_word)
        check_before_work(cfg, inputs, tokenizer)
        _check_heldout_split(cfg, inputs)
        identity = run_identity(cfg, *inputs, vocab_uri)
        run_root = storage.join(output_root, "pretrain", identity)
        init = weights_uri(cfg.init_from) if cfg.init_from else None
        export_uri = ""
        for index in range(len(cfg.phases)):
            export_uri = storage.join(run_root, f"phase{index}", "export")
            if not storage.exists(storage.join(export_uri, EXPORT_MANIFEST)):
                job = WorkerJob(cfg, index, vocab, identity, _metrics_dir(run_root, index, identity),
                                {"uri": init} if init else None, fault_injection, instance_log=instance_log)
                checkpoint = _fit_phase(job, inputs[index], run_root)
                export_phase(checkpoint, job, tokenizer, export_uri, storage.join(run_root, f"phase{index}"))
            init = weights_uri(export_uri)
    return export_uri


def _metrics_dir(run_root: str, phase: int, identity: str) -> str:
    """Rank 0 writes here; a local run root is used directly, otherwise a local scratch directory
    (the log also rides along in every checkpoint and is copied next to the export)."""
    if storage.is_local(run_root):
        return os.path.abspath(storage.join(run_root.removeprefix("file://"), f"phase{phase}", "tensorboard"))
    return os.path.join(tempfile.gettempdir(), "pretrain-metrics", identity, f"phase{phase}")


# ---------------------------------------------------------------------------------------------
# One phase on Ray Train, then the export
# ---------------------------------------------------------------------------------------------
def _fit_phase(job: WorkerJob, instances_uri: str, run_root: str):
    import ray.train
    from ray.train.torch import TorchTrainer

    cfg = job.cfg
    # Each rank reads its own rows of the seeded epoch order (inputs.rank_batches), so no dataset is
    # handed to Ray Train: its streaming_split deals blocks to whichever rank asks, which a restart
    # does not repeat.
    train_files, held_rows, baselines = _split_heldout(job, instances_uri, run_root)
    job = dataclasses.replace(job, plan=InstancePlan.from_files(train_files), heldout=held_rows)
    storage_uri = cfg.storage_path or storage.join(run_root, "runs")
    run_name = f"pretrain-{job.run_identity}-phase{job.phase_index}"
    check_existing_checkpoint(storage.join(storage_uri, run_name), job)
    # Pickled to the Train controller and workers: it holds the endpoint, never credentials (storage.filesystem).
    storage_fs, storage_path = storage.filesystem(storage_uri)
    relay = console.Relay()
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=job.to_loop_config(),
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                               resources_per_worker={"CPU": cfg.cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=storage_path, storage_filesystem=storage_fs,
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
            callbacks=[_Progress(relay, job.phase.num_steps, job.phase_index)],
            worker_runtime_env={"env_vars": _worker_env(storage_uri, run_root, instances_uri)},
        ),
    )
    with relay, _sigint_restored():
        result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"phase {job.phase_index} finished without a checkpoint")
    console.result("pretrain", f"phase {job.phase_index} {_metrics_text(result.metrics or {})}".rstrip())
    if text := heldout.summary_text(result.metrics or {}, baselines):  # its own line: the stage's stays short
        console.result(f"pretrain phase {job.phase_index}", text)
    return result.checkpoint


def _check_heldout_split(cfg: PretrainConfig, inputs: list[str]) -> None:
    """Before any phase trains: every phase keeps shards to train on after its held-out ones (footers only)."""
    if not cfg.heldout.files:
        return
    for index, uri in enumerate(inputs):
        files = instance_files(uri)
        try:
            heldout.split_files(files, heldout.footer_rows(files), cfg.heldout.files)
        except ValueError as e:
            raise PretrainInputError(f"phase {index} instances {uri!r}: {e}") from e


def _split_heldout(job: WorkerJob, instances_uri: str, run_root: str) -> tuple[list[str], dict | None, dict | None]:
    """(shards trained on, held-out masked rows, their baselines); the baselines are written to
    ``{run}/phase{k}/heldout.json`` for the report."""
    try:
        train, rows, baselines = heldout.prepare(job.cfg, job.phase, instance_files(instances_uri), job.vocab)
    except ValueError as e:
        raise PretrainInputError(f"phase {job.phase_index} instances {instances_uri!r}: {e}") from e
    if baselines is not None:
        if sum(heldout.footer_rows(train)) < job.phase.global_batch_size:
            raise PretrainInputError(f"phase {job.phase_index}: the shards left to train on after holding out "
                                     f"{job.cfg.heldout.files} hold fewer rows than one global batch")
        heldout.write_baselines(storage.join(run_root, f"phase{job.phase_index}"), baselines)
    return train, rows, baselines


@contextlib.contextmanager
def _sigint_restored():
    """``TorchTrainer.fit`` installs its own Ctrl-C handler (abort the run, then exit) and leaves it there;
    the stages after pretraining get the process's own back, so Ctrl-C interrupts them too."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


def _worker_env(*uris: str) -> dict[str, str]:
    """The driver's DeepSpeed accelerator and, when a URI is remote, its object-store endpoint and
    region (``storage.capture_env``), so workers reach the same endpoint. Never credentials: workers
    take those from their own environment (the node's role, or the env a local Ray started with)."""
    env = storage.capture_env() if any(not storage.is_local(u) for u in uris) else {}
    if "DS_ACCELERATOR" in os.environ:
        env["DS_ACCELERATOR"] = os.environ["DS_ACCELERATOR"]
    return env


def check_existing_checkpoint(run_uri: str, job: WorkerJob) -> None:
    """Before starting workers: remove this phase's checkpoints newer than its newest complete one (writes
    that did not finish, e.g. on a full disk: Ray Train never committed them, and a new upload into the same
    directory would mix with their files); the newest complete one, which the restarted run resumes from,
    must belong to this run (same phase, identity and model) and its data cursor to the instances on disk."""
    if not storage.is_dir(run_uri):
        return
    names = sorted({f[len(run_uri) + 1:].split("/")[0] for f in storage.list_files(run_uri)})
    for name in reversed([n for n in names if n.startswith(f"phase{job.phase_index}-step")]):
        newest = storage.join(run_uri, name)
        problems = incomplete_parts(newest)
        if not problems:
            break
        logger.warning("removing incomplete checkpoint %s (a write that did not finish): %s", newest,
                       "; ".join(problems[:3]))
        storage.remove_tree(newest)
    else:
        return
    saved = TrainState.from_json(storage.read_bytes(storage.join(newest, TRAIN_STATE)).decode("utf-8"))
    check_compatible(saved, phase=job.phase_index, run_identity=job.run_identity,
                     model_config=dataclasses.asdict(job.bert_config()))
    check_cursor(saved.instances, job.plan, f"checkpoint {newest}")


class _Progress(UserCallback):
    """The pretrain stage's console line, fed by rank 0's reported metrics. Ray Train runs callbacks
    in its controller, another process, so the line travels through a ``console.Relay``."""

    def __init__(self, relay: console.Relay, total: int, phase: int):
        self.relay, self.total, self.phase = relay, total, phase

    def after_report(self, run_context, metrics, checkpoint):
        if metrics:
            latest = metrics[0]
            self.relay.progress("pretrain", int(latest.get("step", 0)), self.total, "steps",
                                f"phase {self.phase} {_metrics_text(latest)}".rstrip())


def _metrics_text(metrics: dict) -> str:
    if "mlm_loss" not in metrics:
        return ""
    return f"MLM loss {metrics['mlm_loss']:.3f} acc {metrics['mlm_accuracy']:.3f}"
