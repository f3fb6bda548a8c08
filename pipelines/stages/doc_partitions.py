"""TOKENIZED documents spread over a fixed number of partitions and each partition brought together in one
block: the plumbing of the two stages that build pretraining instances (``nsp_pairs``, ``mlm_packs``).

A document's partition is a hash of (seed, doc_id) modulo ``num_partitions`` (configuration, never derived
from the corpus size), so it depends on nothing but the document; Ray Data's hash shuffle on it brings
each partition's documents into one block, where the stage's ``write_partitions`` writes that partition's
``part-{partition:05d}-0000.parquet``.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from pipelines import schemas, stage_exec, stage_store, storage
from pipelines.stages.token_view import TokenView


def seed_of(*parts: Any) -> int:
    """A 64-bit seed from any values (blake2b of their ``str``, joined by ':')."""
    return int.from_bytes(hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest(), "little")


def partition_of(doc_ids: list[str], seed: int, num_partitions: int) -> np.ndarray:
    return np.array([seed_of(seed, d) % num_partitions for d in doc_ids], dtype=np.int32)


def add_partition(block: pa.Table, seed: int, num_partitions: int) -> pa.Table:
    """Shuffle map side: each TOKENIZED row's partition, from a hash of (seed, doc_id)."""
    parts = partition_of(block.column("doc_id").to_pylist(), seed, num_partitions)
    return block.select(["doc_id", "sentence_ids"]).append_column("partition", pa.array(parts, pa.int32()))


def with_special_ids(cfg: Any, vocabulary: Any, stage: str) -> Any:
    """``cfg`` (a config with ``cls_id``/``sep_id``) with the ids it leaves unset taken from ``vocabulary``
    (a ``wordpiece.Vocabulary``, handed over by the DAG)."""
    if cfg.cls_id is not None and cfg.sep_id is not None:
        return cfg
    if vocabulary is None:
        raise ValueError(f"{stage}: no vocabulary given; pass the wordpiece stage's Vocabulary or set cls_id and sep_id")
    return dataclasses.replace(cfg, cls_id=cfg.cls_id if cfg.cls_id is not None else vocabulary.cls_id,
                               sep_id=cfg.sep_id if cfg.sep_id is not None else vocabulary.sep_id)


def write_by_partition(tokenized_uri: str, cfg: Any, writer: stage_store.StageWriter,
                       write_partitions: Callable[..., pa.Table]) -> dict[str, int]:
    """The TOKENIZED at ``tokenized_uri`` hashed into ``cfg.num_partitions`` partitions (``cfg.seed``), each
    written by ``write_partitions(block, cfg, tmp_uri, env)`` into the writer's temp dir; -> the summed
    counts of what was written (``stage_exec.record_written``)."""
    tokenized = stage_store.read_dataset(tokenized_uri, columns=["doc_id", "sentence_ids"])
    keyed = tokenized.map_batches(add_partition, fn_args=(cfg.seed, cfg.num_partitions), batch_size=None,
                                  batch_format="pyarrow")
    written = stage_exec.shuffle_groups(keyed, "partition", cfg.num_partitions, write_partitions,
                                        (cfg, writer.tmp, storage.capture_env()))
    return stage_exec.record_written(writer, stage_exec.collect(written))


def block_partitions(block: pa.Table) -> tuple[pa.Table, TokenView, list[tuple[int, np.ndarray | None]]]:
    """Shuffle reduce side, on a block holding every row of its partitions: its TOKENIZED rows, their
    ``TokenView`` (once for the block, whatever its partitions), and each partition with its row indices,
    ascending (None when the block is one partition). The shuffle's hash of the key may bring several
    partitions into one block; each is read through its row indices, so the block (in the object store,
    mapped) is never copied into the worker."""
    parts = block.column("partition").to_numpy()
    tokenized = block.select(["doc_id", "sentence_ids"]).cast(schemas.TOKENIZED)
    order = np.argsort(parts, kind="stable")  # rows grouped by partition, ascending within each
    partitions, starts = np.unique(parts[order], return_index=True)
    bounds = np.append(starts, len(order))
    rows = [(int(p), None if len(partitions) == 1 else order[bounds[k]:bounds[k + 1]])
            for k, p in enumerate(partitions.tolist())]
    return tokenized, TokenView.of(tokenized.column("sentence_ids")), rows
