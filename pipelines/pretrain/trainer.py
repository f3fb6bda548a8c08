"""Driver side of pretraining: check the inputs, run each phase as a Ray Train ``TorchTrainer``, export.

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

import dataclasses
import logging
import os
import tempfile
from typing import Sequence

import pyarrow.parquet as pq
from ray.train import UserCallback

from bert_core import WordPieceTokenizer
from pipelines import storage
from pipelines.pretrain.checkpointing import (METRICS_FILE, TRAIN_STATE, TrainState, check_compatible, incomplete_parts,
                                              load_consolidated)
from pipelines.pretrain.config import PretrainConfig, run_identity
from pipelines.pretrain.inputs import InstancePlan, check_cursor
from pipelines.pretrain.train_loop import FaultInjection, WorkerJob, train_loop_per_worker
from pipelines.schemas import INSTANCES, check_schema
from pipelines.stages.dynamic_masking import VocabInfo
from pipelines.typed_config import ConfigError

EXPORT_MANIFEST = "manifest.json"
logger = logging.getLogger(__name__)


class PretrainInputError(ValueError):
    """Inputs that cannot train the configured model; raised before any worker starts."""


def run_pretraining(cfg: PretrainConfig, instances_uri: str | Sequence[str], vocab_uri: str, output_root: str,
                    *, fault_injection: FaultInjection | None = None, instance_log: str | None = None) -> str:
    """Pretrain BERT on INSTANCES shards and return the URI of the final HF-layout export.

    ``instances_uri``: one INSTANCES directory (stage output or any parquet directory/glob) for every
    phase, or one per phase (e.g. instances built for seq 128 and for seq 512); a phase whose instances
    were built for another length, or whose longest instance is at most half its max_seq_length, is
    refused. ``vocab_uri``: the ``vocab.txt`` or ``tokenizer.json`` (or a wordpiece output directory)
    the instances were tokenised with; it sets the model's vocabulary size and the export's casing.
    ``output_root``: local path or ``s3://``. ``fault_injection`` is a test hook (one worker exits
    hard once); ``instance_log`` another (every rank logs each micro-batch's instance_ids under it).
    Re-running with the same arguments resumes where the last run stopped, at the same rows.
    """
    inputs = _inputs_per_phase(cfg, instances_uri)
    with tempfile.TemporaryDirectory(prefix="pretrain-vocab-") as tmp:
        vocab_file = os.path.join(tmp, "vocab.txt")
        tokenizer = _fetch_vocab(vocab_uri, vocab_file)
        vocab = VocabInfo.from_tokenizer(tokenizer, whole_word=cfg.masking.whole_word)
        check_before_work(cfg, inputs, tokenizer)
        identity = run_identity(cfg, *inputs, vocab_uri)
        run_root = storage.join(output_root, "pretrain", identity)
        init = _export_weights_uri(cfg.init_from) if cfg.init_from else None
        export_uri = ""
        for index in range(len(cfg.phases)):
            export_uri = storage.join(run_root, f"phase{index}", "export")
            if not storage.exists(storage.join(export_uri, EXPORT_MANIFEST)):
                job = WorkerJob(cfg, index, vocab, identity, _metrics_dir(run_root, index, identity),
                                {"uri": init} if init else None, fault_injection, instance_log=instance_log)
                checkpoint = _fit_phase(job, inputs[index], run_root)
                _export(checkpoint, job, tokenizer, export_uri, storage.join(run_root, f"phase{index}"))
            init = _export_weights_uri(export_uri)
    return export_uri


def _inputs_per_phase(cfg: PretrainConfig, instances_uri: str | Sequence[str]) -> list[str]:
    if isinstance(instances_uri, str):
        return [instances_uri] * len(cfg.phases)
    uris = list(instances_uri)
    if len(uris) != len(cfg.phases):
        raise PretrainInputError(f"got {len(uris)} instance URIs for {len(cfg.phases)} phases; pass one or one per phase")
    return uris


def _fetch_vocab(vocab_uri: str, local_path: str) -> WordPieceTokenizer:
    """The vocabulary with its casing, its ``vocab.txt`` written to ``local_path``. ``vocab_uri``: a
    ``tokenizer.json``, a ``vocab.txt`` (casing from the ``tokenizer.json`` beside it, as the wordpiece
    stage writes them, else lowercase: a bare vocab.txt says nothing), or a directory holding them."""
    folder = vocab_uri if storage.is_dir(vocab_uri) else vocab_uri.rstrip("/").rsplit("/", 1)[0]
    json_uri = vocab_uri if vocab_uri.endswith(".json") else storage.join(folder, "tokenizer.json")
    txt_uri = storage.join(folder, "vocab.txt") if storage.is_dir(vocab_uri) else vocab_uri
    if not (storage.exists(json_uri) or storage.exists(txt_uri)) or not (storage.is_dir(vocab_uri)
                                                                         or storage.exists(vocab_uri)):
        raise PretrainInputError(f"vocabulary {vocab_uri!r} does not exist")
    tokenizer = None
    if storage.exists(json_uri):
        with open(local_path + ".json", "wb") as f:
            f.write(storage.read_bytes(json_uri))
        tokenizer = WordPieceTokenizer.load(local_path + ".json")
    if txt_uri.endswith(".json") or not storage.exists(txt_uri):
        with open(local_path, "w", encoding="utf-8") as f:
            f.write("\n".join(tokenizer.vocab()) + "\n")
        return tokenizer
    with open(local_path, "wb") as f:
        f.write(storage.read_bytes(txt_uri))
    pieces = WordPieceTokenizer.from_vocab_file(local_path, tokenizer.lowercase if tokenizer else True)
    if tokenizer is not None and tokenizer.vocab() != pieces.vocab():
        raise PretrainInputError(f"vocabulary {txt_uri!r} and {json_uri!r} beside it hold different pieces")
    return tokenizer or pieces


def _export_weights_uri(directory: str) -> str:
    return storage.join(directory, "model.safetensors")


def _metrics_dir(run_root: str, phase: int, identity: str) -> str:
    """Rank 0 writes here; a local run root is used directly, otherwise a local scratch directory
    (the log also rides along in every checkpoint and is copied next to the export)."""
    if storage.is_local(run_root):
        return os.path.abspath(storage.join(run_root.removeprefix("file://"), f"phase{phase}", "tensorboard"))
    return os.path.join(tempfile.gettempdir(), "pretrain-metrics", identity, f"phase{phase}")


# ---------------------------------------------------------------------------------------------
# Checks that fail fast, before any worker is started
# ---------------------------------------------------------------------------------------------
def check_before_work(cfg: PretrainConfig, inputs: list[str], tokenizer: WordPieceTokenizer) -> None:
    """Raise PretrainInputError / ConfigError for inputs that cannot work."""
    if cfg.vocab_size is not None and cfg.vocab_size != tokenizer.vocab_size:
        raise PretrainInputError(f"config vocab_size {cfg.vocab_size} != {tokenizer.vocab_size} pieces in the vocabulary")
    if cfg.precision != "fp32" and not cfg.use_gpu:
        raise ConfigError(f"precision {cfg.precision} needs use_gpu=true; CPU training (gloo) runs fp32")
    if cfg.use_gpu:
        _check_gpus(cfg.num_workers)
    for index, (phase, uri) in enumerate(zip(cfg.phases, inputs, strict=True)):
        _check_instances(uri, index, phase.max_seq_length, phase.global_batch_size, tokenizer)
    if cfg.init_from:
        _check_init_from(cfg, tokenizer.vocab_size)


def _check_gpus(num_workers: int) -> None:
    import ray

    if not ray.is_initialized():
        ray.init()
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus < num_workers:
        raise ConfigError(f"use_gpu=true with num_workers={num_workers}, but the Ray cluster has {gpus} GPU(s)")


def instance_files(uri: str) -> list[str]:
    """The parquet shards of an INSTANCES directory (stage output manifest order, else sorted)."""
    from pipelines import stage_store

    try:
        files = stage_store.data_files(uri) if stage_store.is_complete(uri) else storage.expand(uri)
    except FileNotFoundError as e:
        raise PretrainInputError(f"instances {uri!r}: {e}") from e
    files = [f for f in files if f.endswith(".parquet")]
    if not files:
        raise PretrainInputError(f"instances {uri!r} hold no parquet shards")
    return files


def _check_instances(uri: str, phase: int, seq_len: int, global_batch: int, tokenizer: WordPieceTokenizer) -> None:
    """What the instances were built for (a stage output's manifest), then schema, vocabulary and
    length on the first shard; total rows from the parquet footers."""
    _check_built_for(uri, phase, seq_len, tokenizer)
    files = instance_files(uri)
    fs, _ = storage.filesystem(files[0])
    first = pq.read_table(storage.filesystem(files[0])[1], filesystem=fs)
    check_schema(first, INSTANCES, f"phase {phase} instances {files[0]}")
    ids = first.column("input_ids").combine_chunks()
    if len(ids):
        import pyarrow.compute as pc

        top = pc.max(pc.list_flatten(ids)).as_py()
        starts = set(pc.list_element(ids, 0).to_pylist()[:1000])
        if top >= tokenizer.vocab_size or starts != {tokenizer.cls_id}:
            raise PretrainInputError(
                f"phase {phase} instances {uri!r} were tokenised with another vocabulary: ids up to {top} and "
                f"first ids {sorted(starts)[:5]}, but the vocabulary has {tokenizer.vocab_size} pieces and [CLS]="
                f"{tokenizer.cls_id}")
        longest = pc.max(first.column("num_tokens")).as_py()
        if longest > seq_len:
            raise PretrainInputError(f"phase {phase} instances hold {longest} tokens, more than max_seq_length {seq_len}")
        # NSP instances fill up to their length (all but short_seq_prob of them), so a first shard
        # whose longest is at most half the phase's length was built for a shorter one: the
        # positions past it would never train (BERT's seq-512 phase exists to train them).
        if 2 * longest <= seq_len:
            raise PretrainInputError(
                f"phase {phase} instances {uri!r} are at most {longest} tokens long (first shard), no more than half "
                f"the phase's max_seq_length {seq_len}: positions past {longest} would never train; build instances "
                f"for {seq_len}")
    rows = sum(pq.ParquetFile(storage.filesystem(f)[1], filesystem=fs).metadata.num_rows for f in files)
    if rows < global_batch:
        raise PretrainInputError(f"phase {phase} instances {uri!r} hold {rows} rows, fewer than one global batch ({global_batch})")


def _check_built_for(uri: str, phase: int, seq_len: int, tokenizer: WordPieceTokenizer) -> None:
    """An ``nsp_pairs`` output records the length (its config) and casing (its stats) it was built with."""
    from pipelines import stage_store

    if not stage_store.is_complete(uri):
        return  # a plain parquet directory: only its rows can be checked
    built_for = stage_store.read_manifest(uri).get("config", {}).get("max_seq_length")
    if built_for is not None and built_for != seq_len:
        raise PretrainInputError(f"phase {phase} has max_seq_length {seq_len} but its instances {uri!r} were built for "
                                 f"max_seq_length {built_for}")
    lowercase = stage_store.read_stats(uri).get("lowercase")
    if lowercase is not None and lowercase != tokenizer.lowercase:
        def casing(lower: bool) -> str:
            return "lowercased" if lower else "cased"
        raise PretrainInputError(f"phase {phase} instances {uri!r} were tokenised {casing(lowercase)}, but the "
                                 f"vocabulary given is {casing(tokenizer.lowercase)} (its tokenizer.json normalizer)")


def _check_init_from(cfg: PretrainConfig, vocab_size: int) -> None:
    import json

    from bert_core import BertConfig

    for name in ("config.json", "model.safetensors"):
        if not storage.exists(storage.join(cfg.init_from, name)):
            raise PretrainInputError(f"init_from {cfg.init_from!r} has no {name}")
    saved = BertConfig.from_hf_dict(json.loads(storage.read_bytes(storage.join(cfg.init_from, "config.json"))))
    wanted = BertConfig.preset(cfg.model_preset, vocab_size=vocab_size)
    fields = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    diff = {f: (getattr(saved, f), getattr(wanted, f)) for f in fields if getattr(saved, f) != getattr(wanted, f)}
    if diff:
        raise PretrainInputError(f"init_from {cfg.init_from!r} does not fit model_preset {cfg.model_preset!r} "
                                 f"(checkpoint, configured): {diff}")


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
    job = dataclasses.replace(job, plan=InstancePlan.from_files(instance_files(instances_uri)))
    storage_uri = cfg.storage_path or storage.join(run_root, "runs")
    run_name = f"pretrain-{job.run_identity}-phase{job.phase_index}"
    check_existing_checkpoint(storage.join(storage_uri, run_name), job)
    # Pickled to the Train controller and workers: it holds the endpoint, never credentials (storage.filesystem).
    storage_fs, storage_path = storage.filesystem(storage_uri)
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
            callbacks=[_Progress(job.phase.num_steps, job.phase_index)],
            worker_runtime_env={"env_vars": _worker_env(storage_uri, run_root, instances_uri)},
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"phase {job.phase_index} finished without a checkpoint")
    return result.checkpoint


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


def _export(checkpoint, job: WorkerJob, tokenizer: WordPieceTokenizer, export_uri: str, phase_uri: str) -> None:
    """Consolidated fp32 weights of the last checkpoint -> HF layout: config.json, model.safetensors and
    the tokenizer (``bert_core.checkpoint.TOKENIZER_FILES``: vocab.txt, tokenizer.json with its casing,
    tokenizer_config.json, special_tokens_map.json), so fine-tuning and transformers read its casing."""
    from bert_core import BertForPreTraining, save_pretrained
    from bert_core.checkpoint import TOKENIZER_FILES

    files = ("config.json", "model.safetensors") + TOKENIZER_FILES
    # The longest length trained so far: positions past it hold their initial values.
    trained_length = max(p.max_seq_length for p in job.cfg.phases[:job.phase_index + 1])
    with tempfile.TemporaryDirectory(prefix="pretrain-export-") as tmp:
        ckpt_dir, out_dir = os.path.join(tmp, "checkpoint"), os.path.join(tmp, "export")
        checkpoint.to_directory(ckpt_dir)
        model = BertForPreTraining(job.bert_config())
        load_consolidated(model, ckpt_dir)
        save_pretrained(model, out_dir, tokenizer=tokenizer, model_max_length=trained_length)
        for name in files:
            with open(os.path.join(out_dir, name), "rb") as f:
                storage.write_bytes_atomic(storage.join(export_uri, name), f.read())
        metrics = os.path.join(ckpt_dir, METRICS_FILE)
        if os.path.exists(metrics):
            with open(metrics, "rb") as f:
                storage.write_bytes_atomic(storage.join(phase_uri, METRICS_FILE), f.read())
    storage.write_json_atomic(storage.join(export_uri, EXPORT_MANIFEST),
                              {"files": list(files), "phase": job.phase_index, "steps": job.phase.num_steps,
                               "run_identity": job.run_identity})


class _Progress(UserCallback):
    """Progress bar (shown on the driver through Ray's tqdm) fed by rank 0's reported metrics."""

    def __init__(self, total: int, phase: int):
        self.total, self.phase, self._bar = total, phase, None

    def after_report(self, run_context, metrics, checkpoint):
        from ray.experimental.tqdm_ray import tqdm

        if not metrics:
            return
        latest = metrics[0]
        if self._bar is None:
            self._bar = tqdm(total=self.total, desc=f"pretrain phase {self.phase}")
        step = int(latest.get("step", 0))
        self._bar.update(max(0, step - self._bar.n))
        if "mlm_loss" in latest:
            self._bar.set_description(f"pretrain phase {self.phase} mlm {latest['mlm_loss']:.3f} "
                                      f"acc {latest['mlm_accuracy']:.3f}")
