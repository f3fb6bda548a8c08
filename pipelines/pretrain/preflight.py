"""The pretraining inputs, checked on the driver before any worker starts: the vocabulary (fetched with
its casing), every phase's INSTANCES (what they were built for, schema, vocabulary, length, rows), the
weights to start from and the GPUs. Each refusal is a ``PretrainInputError`` (or ``ConfigError``)
naming the input and why.
"""
from __future__ import annotations

from typing import Sequence

import pyarrow.parquet as pq

from bert_core import WordPieceTokenizer
from pipelines import storage
from pipelines.pretrain.config import PretrainConfig
from pipelines.schemas import INSTANCES, check_schema
from pipelines.typed_config import ConfigError


class PretrainInputError(ValueError):
    """Inputs that cannot train the configured model; raised before any worker starts."""


def inputs_per_phase(cfg: PretrainConfig, instances_uri: str | Sequence[str]) -> list[str]:
    if isinstance(instances_uri, str):
        return [instances_uri] * len(cfg.phases)
    uris = list(instances_uri)
    if len(uris) != len(cfg.phases):
        raise PretrainInputError(f"got {len(uris)} instance URIs for {len(cfg.phases)} phases; pass one or one per phase")
    return uris


def fetch_vocab(vocab_uri: str, local_path: str) -> WordPieceTokenizer:
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
        _check_instances(uri, index, phase.max_seq_length, phase.global_batch_size, tokenizer, cfg.objective)
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


def _check_instances(uri: str, phase: int, seq_len: int, global_batch: int, tokenizer: WordPieceTokenizer,
                     objective: str = "nsp") -> None:
    """What the instances were built for (a stage output's manifest), then schema, vocabulary and
    length on the first shard; total rows from the parquet footers."""
    _check_built_for(uri, phase, seq_len, tokenizer, objective)
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


SOURCES = {"nsp": "nsp_pairs", "mlm": "mlm_packs"}
"""The stage whose instances each ``pretrain.objective`` trains on."""


def _check_built_for(uri: str, phase: int, seq_len: int, tokenizer: WordPieceTokenizer, objective: str = "nsp") -> None:
    """An ``nsp_pairs`` or ``mlm_packs`` output records its stage (which objective it serves), the length (its
    config) and casing (its stats) it was built with."""
    from pipelines import stage_store

    if not stage_store.is_complete(uri):
        return  # a plain parquet directory: only its rows can be checked
    manifest = stage_store.read_manifest(uri)
    stage = manifest.get("stage")
    if stage in SOURCES.values() and stage != SOURCES[objective]:
        what = "NSP pairs" if stage == "nsp_pairs" else "MLM-only packs (no next-sentence labels)"
        raise PretrainInputError(f"pretrain.objective: {objective} trains on {SOURCES[objective]} instances, but phase "
                                 f"{phase}'s instances {uri!r} are the {stage} stage's {what}")
    built_for = manifest.get("config", {}).get("max_seq_length")
    if built_for is not None and built_for != seq_len:
        kind = "packed instances" if stage == "mlm_packs" else "instances"
        raise PretrainInputError(f"phase {phase} has max_seq_length {seq_len} but its {kind} {uri!r} were built for "
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
