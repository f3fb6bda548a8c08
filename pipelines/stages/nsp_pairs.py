"""TOKENIZED -> INSTANCES: next-sentence-prediction pairs, following BERT's create_pretraining_data.py.

Per document (``create_instances_from_document`` in the original): with probability
``short_seq_prob`` the target length is drawn from [2, max_seq_length - 3], else it is
max_seq_length - 3; consecutive sentences fill a chunk up to the target; the chunk is split at a
random sentence boundary into A and B; B is the real continuation with probability 1/2, else a span
of a random other document (and the chunk's unused sentences go back to be used next); the pair is
truncated from the longer side, a token at a time from the front or back at random. ``dupe_factor``
passes use different seeds. The random calls are the original's, in the original's order, on
sentence *lengths*; the ids are then gathered from the tokens with numpy, never copied into order.

At scale, "a random other document" comes from the document's partition: documents are spread over
a fixed ``num_partitions`` (configuration, never derived from the corpus size) by a hash of
(seed, doc_id); each partition is a shuffled stand-in for the whole corpus. Ray Data's hash shuffle
on the partition brings each partition's documents into one block (``doc_partitions``, shared with
``mlm_packs``), where ``write_partitions`` makes its pairs and writes them as
``part-{partition:05d}-0000.parquet``. Output bytes depend only on the
input and the config. The special-token ids come from the typed ``Vocabulary`` the DAG hands over.
"""
from __future__ import annotations

import array
import dataclasses
import random
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines import schemas, stage_exec, stage_store, storage
from pipelines.stages.doc_partitions import block_partitions, seed_of, with_special_ids, write_by_partition
from pipelines.stages.token_view import TokenView

STAGE = "nsp_pairs"

# INSTANCES plus, for statistics: whether the document drew a short target length, and whether B
# had to be random because the chunk held a single sentence (no coin was tossed).
OUTPUT = pa.schema(list(schemas.INSTANCES) + [
    pa.field("short_target", pa.bool_(), nullable=False),
    pa.field("forced_random_next", pa.bool_(), nullable=False),
])


@dataclasses.dataclass(frozen=True)
class NspConfig:
    max_seq_length: int | None = None
    """Longest instance, [CLS] A [SEP] B [SEP] included; must be set to build instances. In a run config
    it is left unset: the DAG builds one output per distinct pretraining phase ``max_seq_length``."""
    short_seq_prob: float = 0.1
    """Probability that a document's target length is drawn at random (shorter sequences)."""
    dupe_factor: int = 1
    """Passes over the corpus, each with different random choices (the original uses 10)."""
    seed: int = 12345
    num_partitions: int = 16
    """Partitions of the corpus: each is the pool "random next" segments are drawn from, and one
    unit of work: a reducer maps its partition's tokens (the tokenized corpus / num_partitions) from the
    object store and adds ~4 bytes per token for its plan and the row group being written."""
    cls_id: int | None = None
    """Id of [CLS]; None: taken from the vocabulary the tokenize stage used."""
    sep_id: int | None = None
    """Id of [SEP]; None: likewise."""

    def __post_init__(self) -> None:
        if self.max_seq_length is not None and self.max_seq_length < 8:
            raise ValueError(f"nsp_pairs: max_seq_length must be at least 8, got {self.max_seq_length}")
        if not 0.0 <= self.short_seq_prob <= 1.0:
            raise ValueError(f"nsp_pairs: short_seq_prob must be in [0, 1], got {self.short_seq_prob}")
        if self.dupe_factor < 1 or self.num_partitions < 1:
            raise ValueError("nsp_pairs: dupe_factor and num_partitions must be >= 1")


def _truncate(len_a: int, len_b: int, max_num_tokens: int, rng: random.Random) -> tuple[int, int, int, int]:
    """The original truncate_seq_pair on lengths: -> tokens cut from (A front, A back, B front, B back)."""
    cut = [0, 0, 0, 0]
    while len_a + len_b > max_num_tokens:
        side = 0 if len_a > len_b else 2
        cut[side + (0 if rng.random() < 0.5 else 1)] += 1
        if side == 0:
            len_a -= 1
        else:
            len_b -= 1
    return cut[0], cut[1], cut[2], cut[3]


def instances_from_document(docs: list[list[int]], doc_index: int, cfg: NspConfig, rng: random.Random) -> list[tuple]:
    """The original create_instances_from_document on sentence lengths.

    ``docs[d]`` holds the token counts of document d's sentences. Returns, per instance,
    (a_span, b_span, cuts, is_random_next, short_target, forced) with spans as (doc, first, stop)
    sentence ranges and cuts as returned by ``_truncate``.
    """
    document = docs[doc_index]
    max_num_tokens = cfg.max_seq_length - 3
    target_seq_length = max_num_tokens
    short = rng.random() < cfg.short_seq_prob
    if short:
        target_seq_length = rng.randint(2, max_num_tokens)
    instances = []
    chunk_start, current_length, i = 0, 0, 0
    while i < len(document):
        current_length += document[i]
        if i == len(document) - 1 or current_length >= target_seq_length:
            chunk_len = i + 1 - chunk_start
            a_end = rng.randint(1, chunk_len - 1) if chunk_len >= 2 else 1
            len_a = sum(document[chunk_start:chunk_start + a_end])
            if chunk_len == 1 or rng.random() < 0.5:
                is_random_next = True
                target_b_length = target_seq_length - len_a
                for _ in range(10):
                    rand_doc = rng.randint(0, len(docs) - 1)
                    if rand_doc != doc_index:
                        break
                random_document = docs[rand_doc]
                random_start = rng.randint(0, len(random_document) - 1)
                len_b, j = 0, random_start
                while j < len(random_document):
                    len_b += random_document[j]
                    j += 1
                    if len_b >= target_b_length:
                        break
                b_span = (rand_doc, random_start, j)
                i -= chunk_len - a_end  # put the unused sentences back
            else:
                is_random_next = False
                b_span = (doc_index, chunk_start + a_end, i + 1)
                len_b = sum(document[chunk_start + a_end:i + 1])
            cuts = _truncate(len_a, len_b, max_num_tokens, rng)
            instances.append(((doc_index, chunk_start, chunk_start + a_end), b_span, cuts, is_random_next, short,
                              chunk_len == 1))
            chunk_start, current_length = i + 1, 0
        i += 1
    return instances


PLAN_FIELDS = ("a_doc", "a_first", "a_stop", "b_doc", "b_first", "b_stop", "a_cut_front", "a_cut_back",
               "b_cut_front", "b_cut_back", "is_random_next", "short_target", "forced_random_next")
"""The columns of a plan array: one row per instance, as ``instances_from_document`` returns it, flat."""


class Col:
    """A plan array's column indices, by name (``plans[:, Col.A_DOC]``)."""

    (A_DOC, A_FIRST, A_STOP, B_DOC, B_FIRST, B_STOP, A_CUT_FRONT, A_CUT_BACK, B_CUT_FRONT, B_CUT_BACK,
     IS_RANDOM_NEXT, SHORT_TARGET, FORCED_RANDOM_NEXT) = range(len(PLAN_FIELDS))


def plan_instances(docs: list[list[int]], cfg: NspConfig, rng: random.Random) -> tuple[np.ndarray, int]:
    """One pass over ``docs`` in order (the original's loop body); -> (plans, short-target documents).
    Plans are an int32 array of ``PLAN_FIELDS`` columns (52 bytes an instance, not a tuple tree)."""
    flat, num_short = array.array("i"), 0
    for k in range(len(docs)):
        found = instances_from_document(docs, k, cfg, rng)
        for a, b, cuts, is_random, short, forced in found:
            flat.extend((*a, *b, *cuts, is_random, short, forced))
        num_short += bool(found) and found[0][4]
    return np.frombuffer(flat, dtype=np.int32).reshape(-1, len(PLAN_FIELDS)), num_short  # writable: flat's buffer


def core(table: pa.Table, cfg: NspConfig, partition: int = 0) -> pa.Table:
    """TOKENIZED rows of one partition -> OUTPUT rows (pure; row order of ``table`` is irrelevant)."""
    return partition_instances(table, cfg, partition)[0]


def partition_instances(table: pa.Table, cfg: NspConfig, partition: int) -> tuple[pa.Table, dict[str, int]]:
    """``core`` plus document-level counts (documents used, short-target document passes)."""
    parts, doc_stats = partition_tables(table, cfg, partition, rows_per_table=None)
    return pa.concat_tables(list(parts)), doc_stats


ROWS_PER_TABLE = 1 << 14
"""Instances assembled at a time by the stage's writer (one parquet row group each): a partition's
pairs are never all in memory, only their plans (52 bytes an instance)."""


def partition_tables(table: pa.Table, cfg: NspConfig, partition: int,
                     rows_per_table: int | None = ROWS_PER_TABLE,
                     rows: np.ndarray | None = None,
                     view: TokenView | None = None,
                     ) -> tuple[Iterator[pa.Table], dict[str, int]]:
    """A partition's OUTPUT rows as tables of ``rows_per_table`` rows (None: one table), assembled as
    they are consumed, and its document-level counts. ``rows``: the indices of the partition's rows
    in ``table`` (ascending; None: every row), so a block of several partitions is never copied;
    ``view``: the table's ``TokenView``, when the caller has it for all its partitions.

    Documents are taken in doc_id order, through an index: the table's tokens are never copied, only
    viewed (``TokenView``) and gathered into the pairs."""
    _check_length(cfg)
    schemas.check_schema(table, schemas.TOKENIZED, "nsp_pairs")
    if rows is None:
        by_id = pc.sort_indices(table, sort_keys=[("doc_id", "ascending")]).to_numpy()
    else:  # the partition's rows in doc_id order (stable: as the rows of a filtered table would sort)
        rows = np.asarray(rows, dtype=np.int64)
        by_id = rows[pc.sort_indices(table.column("doc_id").take(rows)).to_numpy()]
    view = view or TokenView.of(table.column("sentence_ids"))
    sent_len = np.diff(view.sent_off)
    docs = [sent_len[view.doc_off[r]:view.doc_off[r + 1]].tolist() for r in by_id.tolist()]  # in doc_id order
    del sent_len
    docs_index = [d for d in range(len(docs)) if docs[d] and sum(docs[d]) > 0]
    parts, num_short = [], 0
    for dupe in range(cfg.dupe_factor):
        rng = random.Random(seed_of(cfg.seed, partition, dupe))
        order = list(docs_index)
        rng.shuffle(order)
        found, short = plan_instances([docs[d] for d in order], cfg, rng)
        num_short += short
        pool = np.asarray(order, dtype=np.int32)  # pool positions -> documents in doc_id order
        found[:, Col.A_DOC], found[:, Col.B_DOC] = pool[found[:, Col.A_DOC]], pool[found[:, Col.B_DOC]]
        parts.append(found)
    doc_stats = {"document_passes": len(docs_index) * cfg.dupe_factor, "short_target_document_passes": num_short,
                 "documents_without_tokens": len(docs) - len(docs_index)}
    del docs, docs_index
    plans = parts[0] if len(parts) == 1 else np.concatenate(parts)  # dupe_factor >= 1
    del parts
    # the permutation that shuffling the plans list itself would apply, taken a table at a time
    shuffled = shuffled_range(len(plans), random.Random(seed_of(cfg.seed, partition, "shuffle")))
    doc_first = view.doc_off[by_id]
    del by_id
    step = rows_per_table or max(len(plans), 1)

    def tables() -> Iterator[pa.Table]:
        for lo in range(0, max(len(plans), 1), step):
            yield assemble(plans[shuffled[lo:lo + step]], view, doc_first, cfg, partition, first=lo)

    return tables(), doc_stats


def shuffled_range(n: int, rng: random.Random) -> np.ndarray:
    """``rng.shuffle(x := list(range(n)))`` as an int64 array, with the same draws in the same order
    (CPython's Fisher-Yates: for i from n-1 down to 1, swap x[i] with x[randbelow(i + 1)]), in 8
    bytes an element instead of a list's 36."""
    x = array.array("q", range(n))
    randbelow = rng._randbelow  # what Random.shuffle draws with
    for i in range(n - 1, 0, -1):
        j = randbelow(i + 1)
        x[i], x[j] = x[j], x[i]
    return np.frombuffer(x, dtype=np.int64) if n else np.zeros(0, np.int64)


def _check_length(cfg: NspConfig) -> None:
    if cfg.max_seq_length is None:
        raise ValueError("nsp_pairs: max_seq_length is not set (the run's DAG sets it to each pretraining phase's)")


ASSEMBLE_CHUNK = 1 << 12
"""Instances assembled per numpy pass: bounds the gather index (8 bytes a token) to a few MB."""


def assemble(plans: np.ndarray, view: TokenView, doc_first: np.ndarray, cfg: NspConfig, partition: int,
             first: int = 0) -> pa.Table:
    """[CLS] A [SEP] B [SEP] id arrays from the plans, gathered out of the tokens (``view``).
    ``doc_first[d]`` is the index (into ``view.sent_off``) of document d's first sentence; the instances
    are numbered from ``first`` (the plans' place in the partition)."""
    sent_off = view.sent_off
    if cfg.cls_id is None or cfg.sep_id is None:
        raise ValueError("nsp_pairs: cls_id and sep_id must be set (run_nsp_pairs takes them from the vocabulary)")
    p = plans
    a0 = sent_off[doc_first[p[:, Col.A_DOC]] + p[:, Col.A_FIRST]] + p[:, Col.A_CUT_FRONT]
    la = sent_off[doc_first[p[:, Col.A_DOC]] + p[:, Col.A_STOP]] - p[:, Col.A_CUT_BACK] - a0
    b0 = sent_off[doc_first[p[:, Col.B_DOC]] + p[:, Col.B_FIRST]] + p[:, Col.B_CUT_FRONT]
    lb = sent_off[doc_first[p[:, Col.B_DOC]] + p[:, Col.B_STOP]] - p[:, Col.B_CUT_BACK] - b0
    lengths = la + lb + 3
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = np.empty(int(offsets[-1]), np.int32)
    types = np.empty(int(offsets[-1]), np.int8)
    one, zero = np.ones_like(la), np.zeros_like(la)
    for lo in range(0, len(p), ASSEMBLE_CHUNK):
        hi = min(len(p), lo + ASSEMBLE_CHUNK)
        base, stop = int(offsets[lo]), int(offsets[hi])
        seg_len = np.stack([one[lo:hi], la[lo:hi], one[lo:hi], lb[lo:hi], one[lo:hi]], 1).ravel()
        seg_src = np.stack([zero[lo:hi], a0[lo:hi], zero[lo:hi], b0[lo:hi], zero[lo:hi]], 1).ravel()
        seg_out = np.cumsum(seg_len) - seg_len
        chunk = view.gather(np.repeat(seg_src - seg_out, seg_len) + np.arange(stop - base))  # [CLS]/[SEP] read 0
        starts = offsets[lo:hi] - base
        chunk[starts] = cfg.cls_id
        chunk[starts + 1 + la[lo:hi]] = cfg.sep_id
        chunk[offsets[lo + 1:hi + 1] - base - 1] = cfg.sep_id
        values[base:stop] = chunk
        types[base:stop] = np.repeat(np.tile(np.array([0, 1], np.int8), hi - lo),
                                     np.stack([la[lo:hi] + 2, lb[lo:hi] + 1], 1).ravel())
    number = pc.utf8_lpad(pa.array(np.arange(first, first + len(p), dtype=np.int64)).cast(pa.string()), width=9,
                          padding="0")
    offsets32 = pa.array(offsets.astype(np.int32))
    return pa.table({
        "input_ids": pa.ListArray.from_arrays(offsets32, pa.array(values, pa.int32())),
        "token_type_ids": pa.ListArray.from_arrays(offsets32, pa.array(types, pa.int8())),
        "is_random_next": pa.array(p[:, Col.IS_RANDOM_NEXT].astype(bool), pa.bool_()),
        "num_tokens": pa.array(lengths.astype(np.int32), pa.int32()),
        "instance_id": pc.binary_join_element_wise(f"p{partition:05d}-", number, ""),
        "short_target": pa.array(p[:, Col.SHORT_TARGET].astype(bool), pa.bool_()),
        "forced_random_next": pa.array(p[:, Col.FORCED_RANDOM_NEXT].astype(bool), pa.bool_()),
    }, schema=OUTPUT)


def _stats(table: pa.Table) -> dict[str, int]:
    return {
        "pairs": table.num_rows,
        "random_next": pc.sum(table.column("is_random_next").cast(pa.int64())).as_py() or 0,
        "short_target_pairs": pc.sum(table.column("short_target").cast(pa.int64())).as_py() or 0,
        "forced_random_next": pc.sum(table.column("forced_random_next").cast(pa.int64())).as_py() or 0,
        "tokens": pc.sum(table.column("num_tokens")).as_py() or 0,
        "max_num_tokens": pc.max(table.column("num_tokens")).as_py() or 0,
    }


def write_partitions(block: pa.Table, cfg: NspConfig, tmp_uri: str, env: dict[str, str]) -> pa.Table:
    """Shuffle reduce side, on a block holding every row of its partitions: each partition's pairs
    -> its parquet file in the stage's temp dir; -> a row per partition (``stage_exec.WRITTEN``).
    Several partitions of a block are read through their row indices (``doc_partitions.block_partitions``)."""
    storage.apply_env(env)
    out = stage_exec.written_rows()
    tokenized, view, partitions = block_partitions(block)
    for partition, rows in partitions:
        tables, doc_stats = partition_tables(tokenized, cfg, partition, ROWS_PER_TABLE, rows=rows, view=view)
        stage_exec.write_output_tables(out, tmp_uri, f"part-{partition:05d}-0000.parquet", tables, OUTPUT, partition,
                                       0, doc_stats, _stats)
    return pa.table(out, schema=stage_exec.WRITTEN)


def run_nsp_pairs(cfg: NspConfig, tokenized_uri: str, root: str, vocabulary=None) -> str:
    """Sample NSP pairs from the TOKENIZED at ``tokenized_uri`` into ``{root}/nsp_pairs/{key}/``.
    ``vocabulary`` (a ``wordpiece.Vocabulary``, handed over by the DAG) gives [CLS]/[SEP] unless the
    config sets them, and the casing recorded for the trainer."""
    _check_length(cfg)
    key_cfg, cfg = cfg, with_special_ids(cfg, vocabulary, STAGE)

    def produce(writer: stage_store.StageWriter) -> None:
        totals = write_by_partition(tokenized_uri, cfg, writer, write_partitions)
        if totals.get("pairs", 0) == 0:
            raise ValueError(f"nsp_pairs: no pair could be made from {tokenized_uri}")
        tossed = totals["pairs"] - totals["forced_random_next"]
        writer.stats.update(
            totals, partitions=cfg.num_partitions,
            random_next_fraction=round(totals["random_next"] / totals["pairs"], 4),
            random_next_fraction_of_tosses=round((totals["random_next"] - totals["forced_random_next"]) / max(tossed, 1), 4),
            short_target_fraction=round(totals["short_target_document_passes"] / max(totals["document_passes"], 1), 4))
        if vocabulary is not None:  # read by the trainer, which refuses instances of another casing
            writer.stats["lowercase"] = vocabulary.lowercase

    inputs = (stage_store.input_identity(tokenized_uri),)
    return stage_store.run_stage(root, STAGE, key_cfg, inputs, produce, version=4)
