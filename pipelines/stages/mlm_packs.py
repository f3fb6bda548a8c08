"""TOKENIZED -> INSTANCES: packed MLM-only instances, RoBERTa's FULL-SENTENCES and DOC-SENTENCES inputs.

Every instance is ``[CLS] chunk [SEP]`` with ``chunk`` exactly ``max_seq_length - 2`` tokens of running
text, so nothing is spent on padding (RoBERTa, Liu et al. 2019, section 4.2; at token level this is
what Hugging Face's run_mlm ``group_texts`` does). Sentences are cut where the length falls.

- ``full_sentences``: the partition's documents, one after another, with one [SEP] between two
  consecutive documents, cut into chunks; only the partition's last pack is shorter. A chunk never
  begins with that separator: a document that ends exactly at a chunk's end has no [SEP] after it.
- ``doc_sentences``: the same, but every document restarts the stream, so a pack never holds two
  documents and each document's last pack is shorter.

Documents are spread over ``num_partitions`` partitions by the hash of (seed, doc_id) that
``nsp_pairs`` uses (``doc_partitions``) and brought together by Ray Data's hash shuffle.
Within a partition they are taken in doc_id order, then shuffled by ``random.Random(seed_of(seed,
partition, "documents"))``, so a pack that crosses a boundary joins two random documents,
deterministically. Packs are written in the order of ``np.random.default_rng(seed_of(seed, partition,
"order")).permutation(num_packs)`` (neighbouring rows are not neighbouring text), row ``i`` with the id
``p{partition:05d}-{i:09d}``, to ``part-{partition:05d}-0000.parquet``. Only a few integers per document
and one per pack are planned in memory; the ids are gathered from the tokens in place (``TokenView``)
a table of ``ROWS_PER_TABLE`` packs at a time. Output bytes depend only on the input and the config.

``token_type_ids`` are all 0 and ``is_random_next`` all False: the trainer uses the MLM loss alone
(``stats.json`` says ``"instances": "mlm_packs"`` and the ``max_seq_length``, which the trainer checks).
"""
from __future__ import annotations

import dataclasses
import functools
import random
from typing import Iterator, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines import schemas, stage_exec, stage_store, storage
from pipelines.stages.doc_partitions import block_partitions, seed_of, with_special_ids, write_by_partition
from pipelines.stages.token_view import TokenView

STAGE = "mlm_packs"
MODES = ("full_sentences", "doc_sentences")
OUTPUT = schemas.INSTANCES


@dataclasses.dataclass(frozen=True)
class PackConfig:
    max_seq_length: int | None = None
    """Tokens of a pack, [CLS] and [SEP] included (every pack but the last of a stream has exactly this
    many); must be set to build packs. In a run config it is left unset: the DAG builds one output per
    distinct pretraining phase ``max_seq_length``."""
    mode: Literal["full_sentences", "doc_sentences"] = "full_sentences"
    """``full_sentences``: packs run across documents ([SEP] between them); ``doc_sentences``: a pack
    holds one document only."""
    seed: int = 12345
    num_partitions: int = 16
    """Partitions of the corpus: the documents a pack may join across, and one unit of work (a
    reducer maps its partition's tokens from the object store)."""
    cls_id: int | None = None
    """Id of [CLS]; None: taken from the vocabulary the tokenize stage used."""
    sep_id: int | None = None
    """Id of [SEP]; None: likewise."""

    def __post_init__(self) -> None:
        if self.max_seq_length is not None and self.max_seq_length < 8:
            raise ValueError(f"mlm_packs: max_seq_length must be at least 8, got {self.max_seq_length}")
        if self.num_partitions < 1:
            raise ValueError(f"mlm_packs: num_partitions must be >= 1, got {self.num_partitions}")
        if self.mode not in MODES:
            raise ValueError(f"mlm_packs: mode must be one of {', '.join(MODES)}, got {self.mode!r}")


def _check_length(cfg: PackConfig) -> None:
    if cfg.max_seq_length is None:
        raise ValueError("mlm_packs: max_seq_length is not set (the run's DAG sets it to each pretraining phase's)")


@dataclasses.dataclass(frozen=True)
class PackPlan:
    """Where a partition's packs lie in its token stream: a few integers per document, none per pack.

    Documents (in stream order) sit at stream positions ``[stream_start, stream_start + length)``;
    the stream position after a document is its [SEP] when the next document's start leaves a gap
    (``full_sentences``), unused otherwise. Pack ``k`` is the stream ``[k * chunk, k * chunk +
    pack_lengths(k))``."""

    chunk: int
    """Text tokens of a full pack: ``max_seq_length - 2``."""
    token_start: np.ndarray
    """Each document's first token, a global index into the ``TokenView`` (int64)."""
    length: np.ndarray
    """Each document's tokens (int64)."""
    stream_start: np.ndarray
    """Each document's first stream position (int64, ascending)."""
    stream_length: int
    """Stream positions in all: the last pack ends there."""
    num_packs: int
    per_document: bool
    """``doc_sentences``: each document's stream starts a pack and its last pack ends with it."""

    def pack_lengths(self, packs: np.ndarray) -> np.ndarray:
        """The text tokens of packs ``packs`` (int64)."""
        start = packs * self.chunk
        if not self.per_document:
            return np.minimum(self.chunk, self.stream_length - start)
        doc = np.searchsorted(self.stream_start, start, side="right") - 1
        return np.minimum(self.chunk, self.stream_start[doc] + self.length[doc] - start)


def plan_packs(token_start: np.ndarray, length: np.ndarray, cfg: PackConfig) -> PackPlan:
    """The stream of documents (``token_start``, ``length``: nonempty, in stream order) cut into packs."""
    chunk = cfg.max_seq_length - 2
    length = np.asarray(length, np.int64)
    if cfg.mode == "doc_sentences":
        packs = -(-length // chunk)
        stream_start = (np.cumsum(packs) - packs) * chunk  # each document from a pack's start
        num_packs = int(packs.sum())
        return PackPlan(chunk, token_start, length, stream_start, num_packs * chunk, num_packs, per_document=True)
    # A [SEP] follows a document unless the document ends a chunk (a chunk never starts with [SEP]):
    # the test of that depends on every [SEP] before it, so this is a loop, over documents, on integers.
    stream_start = np.empty(len(length), np.int64)
    position = 0
    for j, n in enumerate(length.tolist()):
        if position % chunk:
            position += 1  # the [SEP] after the previous document
        stream_start[j] = position
        position += n
    return PackPlan(chunk, token_start, length, stream_start, position, -(-position // chunk), per_document=False)


ROWS_PER_TABLE = 1 << 14
"""Packs assembled at a time by the stage's writer (one parquet row group each): a partition's packs
are never all in memory, only their order (8 bytes a pack)."""

ASSEMBLE_TOKENS = 1 << 19
"""Tokens assembled per numpy pass: bounds the gather's index arrays (8 bytes a token each) to a few MB."""


def assemble(packs: np.ndarray, plan: PackPlan, view: TokenView, cfg: PackConfig, partition: int,
             first: int = 0) -> pa.Table:
    """``[CLS] chunk [SEP]`` id arrays of the packs ``packs`` (in that order), gathered out of the tokens
    (``view``); the rows are numbered from ``first`` (their place in the partition's output)."""
    if cfg.cls_id is None or cfg.sep_id is None:
        raise ValueError("mlm_packs: cls_id and sep_id must be set (run_mlm_packs takes them from the vocabulary)")
    packs = np.asarray(packs, np.int64)
    text = plan.pack_lengths(packs)
    lengths = text + 2
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = np.empty(int(offsets[-1]), np.int32)
    step = max(1, ASSEMBLE_TOKENS // (plan.chunk + 2))
    for lo in range(0, len(packs), step):
        hi = min(len(packs), lo + step)
        base, stop = int(offsets[lo]), int(offsets[hi])
        starts = offsets[lo:hi] - base
        # output position -> stream position (a pack's [CLS] and closing [SEP] are overwritten below)
        stream = np.repeat(packs[lo:hi] * plan.chunk - starts - 1, lengths[lo:hi]) + np.arange(stop - base)
        np.clip(stream, 0, None, out=stream)
        doc = np.searchsorted(plan.stream_start, stream, side="right") - 1
        offset = stream - plan.stream_start[doc]
        is_text = offset < plan.length[doc]
        chunk = view.gather(plan.token_start[doc] + np.where(is_text, offset, 0))
        chunk[~is_text] = cfg.sep_id  # the separator after a document
        chunk[starts] = cfg.cls_id
        chunk[starts + lengths[lo:hi] - 1] = cfg.sep_id
        values[base:stop] = chunk
    number = pc.utf8_lpad(pa.array(np.arange(first, first + len(packs), dtype=np.int64)).cast(pa.string()), width=9,
                          padding="0")
    offsets32 = pa.array(offsets.astype(np.int32))
    return pa.table({
        "input_ids": pa.ListArray.from_arrays(offsets32, pa.array(values, pa.int32())),
        "token_type_ids": pa.ListArray.from_arrays(offsets32, pa.array(np.zeros(len(values), np.int8), pa.int8())),
        "is_random_next": pa.array(np.zeros(len(packs), bool), pa.bool_()),
        "num_tokens": pa.array(lengths.astype(np.int32), pa.int32()),
        "instance_id": pc.binary_join_element_wise(f"p{partition:05d}-", number, ""),
    }, schema=OUTPUT)


def core(table: pa.Table, cfg: PackConfig, partition: int = 0) -> pa.Table:
    """TOKENIZED rows of one partition -> OUTPUT rows (pure; row order of ``table`` is irrelevant)."""
    tables, _ = partition_tables(table, cfg, partition, rows_per_table=None)
    return pa.concat_tables([OUTPUT.empty_table(), *tables])


def partition_tables(table: pa.Table, cfg: PackConfig, partition: int,
                     rows_per_table: int | None = ROWS_PER_TABLE,
                     rows: np.ndarray | None = None,
                     view: TokenView | None = None,
                     ) -> tuple[Iterator[pa.Table], dict[str, int]]:
    """A partition's OUTPUT rows as tables of ``rows_per_table`` rows (None: one table), assembled as
    they are consumed, and its document counts. ``rows``: the indices of the partition's rows in
    ``table`` (None: every row), so a block of several partitions is never copied; ``view``: the
    table's ``TokenView``, when the caller has it for all its partitions."""
    _check_length(cfg)
    schemas.check_schema(table, schemas.TOKENIZED, STAGE)
    if rows is None:
        by_id = pc.sort_indices(table, sort_keys=[("doc_id", "ascending")]).to_numpy()
    else:  # the partition's rows in doc_id order (stable: as the rows of a filtered table would sort)
        rows = np.asarray(rows, dtype=np.int64)
        by_id = rows[pc.sort_indices(table.column("doc_id").take(rows)).to_numpy()]
    view = view or TokenView.of(table.column("sentence_ids"))
    token_start = view.sent_off[view.doc_off[by_id]]
    length = view.sent_off[view.doc_off[by_id + 1]] - token_start
    used = np.flatnonzero(length > 0)
    order = used.tolist()
    random.Random(seed_of(cfg.seed, partition, "documents")).shuffle(order)
    order = np.asarray(order, np.int64)
    plan = plan_packs(token_start[order], length[order], cfg)
    doc_stats = {"documents": len(by_id), "documents_without_tokens": len(by_id) - len(used)}
    del by_id, token_start, length, used, order
    shuffled = np.random.default_rng(seed_of(cfg.seed, partition, "order")).permutation(plan.num_packs)
    step = rows_per_table or max(plan.num_packs, 1)

    def tables() -> Iterator[pa.Table]:
        for lo in range(0, plan.num_packs, step):
            yield assemble(shuffled[lo:lo + step], plan, view, cfg, partition, first=lo)

    return tables(), doc_stats


def _stats(table: pa.Table, max_seq_length: int, sep_id: int) -> dict[str, int]:
    num_tokens = table.column("num_tokens")
    ids = table.column("input_ids").combine_chunks().flatten()
    full = pc.sum(pc.equal(num_tokens, max_seq_length).cast(pa.int64())).as_py() or 0
    return {
        "packs": table.num_rows,
        "tokens": pc.sum(num_tokens).as_py() or 0,
        "full_packs": full,
        "short_packs": table.num_rows - full,
        "document_separators": (pc.sum(pc.equal(ids, sep_id).cast(pa.int64())).as_py() or 0) - table.num_rows,
        "max_num_tokens": pc.max(num_tokens).as_py() or 0,
    }


def write_partitions(block: pa.Table, cfg: PackConfig, tmp_uri: str, env: dict[str, str]) -> pa.Table:
    """Shuffle reduce side, on a block holding every row of its partitions: each partition's packs
    -> its parquet file in the stage's temp dir; -> a row per partition (``stage_exec.WRITTEN``).
    Several partitions of a block are read through their row indices (``doc_partitions.block_partitions``)."""
    storage.apply_env(env)
    out = stage_exec.written_rows()
    tokenized, view, partitions = block_partitions(block)
    table_stats = functools.partial(_stats, max_seq_length=cfg.max_seq_length, sep_id=cfg.sep_id)
    for partition, rows in partitions:
        tables, doc_stats = partition_tables(tokenized, cfg, partition, ROWS_PER_TABLE, rows=rows, view=view)
        stage_exec.write_output_tables(out, tmp_uri, f"part-{partition:05d}-0000.parquet", tables, OUTPUT, partition,
                                       0, doc_stats, table_stats)
    return pa.table(out, schema=stage_exec.WRITTEN)


def run_mlm_packs(cfg: PackConfig, tokenized_uri: str, root: str, vocabulary=None) -> str:
    """Pack the TOKENIZED at ``tokenized_uri`` into ``{root}/mlm_packs/{key}/``. ``vocabulary`` (a
    ``wordpiece.Vocabulary``, handed over by the DAG) gives [CLS]/[SEP] unless the config sets them,
    and the casing recorded for the trainer."""
    _check_length(cfg)
    key_cfg, cfg = cfg, with_special_ids(cfg, vocabulary, STAGE)

    def produce(writer: stage_store.StageWriter) -> None:
        totals = write_by_partition(tokenized_uri, cfg, writer, write_partitions)
        if totals.get("packs", 0) == 0:
            raise ValueError(f"mlm_packs: no pack could be made from {tokenized_uri} (no document has a token)")
        writer.stats.update(
            totals, instances=STAGE, mode=cfg.mode, max_seq_length=cfg.max_seq_length,
            partitions=cfg.num_partitions,
            padding_fraction=round(1 - totals["tokens"] / (totals["packs"] * cfg.max_seq_length), 6))
        if vocabulary is not None:  # read by the trainer, which refuses instances of another casing
            writer.stats["lowercase"] = vocabulary.lowercase

    inputs = (stage_store.input_identity(tokenized_uri),)
    return stage_store.run_stage(root, STAGE, key_cfg, inputs, produce, version=1)
