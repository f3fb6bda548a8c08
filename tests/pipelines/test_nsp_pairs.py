"""NSP pairs: instance-for-instance agreement with the original algorithm, and its statistics on the
real demo corpus."""
import dataclasses
import random

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from oracles import original_bert
from pipelines.schemas import TOKENIZED
from pipelines.stages import doc_partitions, nsp_pairs
from pipelines.stages.token_view import TokenView

CFG = nsp_pairs.NspConfig(max_seq_length=128, cls_id=101, sep_id=102)


def _docs_as_id_lists(tokenized: pa.Table) -> list[list[list[int]]]:
    return tokenized.column("sentence_ids").to_pylist()


@pytest.mark.parametrize("max_seq_length, short_seq_prob", [(128, 0.1), (32, 0.3), (8, 0.1)])
def test_same_instances_as_the_original(demo_tokenized, max_seq_length, short_seq_prob):
    """The lengths-only planner + numpy assembly reproduce create_instances_from_document exactly
    when both draw from the same random stream."""
    cfg = nsp_pairs.NspConfig(max_seq_length=max_seq_length, short_seq_prob=short_seq_prob, cls_id=101, sep_id=102)
    table = demo_tokenized.slice(0, 400)
    docs = _docs_as_id_lists(table)
    expected = []
    rng = random.Random(7)
    for k in range(len(docs)):
        expected += original_bert.create_instances_from_document(docs, k, max_seq_length, short_seq_prob, rng,
                                                                 cls=cfg.cls_id, sep=cfg.sep_id)
    lengths = [[len(s) for s in d] for d in docs]
    plans, _ = nsp_pairs.plan_instances(lengths, cfg, random.Random(7))
    view = TokenView.of(pa.chunked_array([table.column("sentence_ids").combine_chunks()]))
    got = nsp_pairs.assemble(plans, view, view.doc_off, cfg, 0)
    assert got.num_rows == len(expected) > 300
    assert got.column("input_ids").to_pylist() == [e["tokens"] for e in expected]
    assert got.column("token_type_ids").to_pylist() == [e["segment_ids"] for e in expected]
    assert got.column("is_random_next").to_pylist() == [e["is_random_next"] for e in expected]


def test_statistics_on_the_demo_corpus(demo_tokenized):
    cfg = nsp_pairs.NspConfig(max_seq_length=128, dupe_factor=3, cls_id=101, sep_id=102)
    out, doc_stats = nsp_pairs.partition_instances(demo_tokenized, cfg, 0)
    n = out.num_rows
    random_next = np.array(out.column("is_random_next").to_pylist())
    forced = np.array(out.column("forced_random_next").to_pylist())
    tossed = random_next[~forced]
    assert n > 20_000
    assert abs(tossed.mean() - 0.5) < 0.02, tossed.mean()  # the coin for B
    # chunks of one sentence must take a random B, as in the original; so overall it is higher
    assert random_next.mean() >= tossed.mean()
    share_short = doc_stats["short_target_document_passes"] / doc_stats["document_passes"]
    assert abs(share_short - 0.1) < 0.02, share_short
    lengths = pc.list_value_length(out.column("input_ids")).to_numpy()
    assert lengths.max() <= 128 and (lengths == out.column("num_tokens").to_numpy()).all()
    for ids, types in zip(out.column("input_ids").to_pylist()[:3000], out.column("token_type_ids").to_pylist()[:3000]):
        sep = [i for i, t in enumerate(ids) if t == cfg.sep_id]
        assert ids[0] == cfg.cls_id and ids.count(cfg.cls_id) == 1 and len(sep) == 2 and sep[1] == len(ids) - 1
        assert types == [0] * (sep[0] + 1) + [1] * (len(ids) - sep[0] - 1)
        assert sep[0] >= 2 and sep[1] - sep[0] >= 2  # A and B each hold a token
    assert len(set(out.column("instance_id").to_pylist())) == n


def test_core_ignores_row_order_and_passes_differ(demo_tokenized):
    table = demo_tokenized.slice(0, 300)
    a = nsp_pairs.core(table, CFG, 3)
    assert nsp_pairs.core(table.take(np.arange(300)[::-1]), CFG, 3).equals(a)
    two = nsp_pairs.core(table, dataclasses.replace(CFG, dupe_factor=2), 3)
    assert two.num_rows > 1.8 * a.num_rows


def test_a_block_of_many_chunks_and_row_groups_give_the_same_pairs(demo_tokenized, tmp_path):
    """A shuffle hands the reducer its shards as the chunks of one table (some empty): the tokens are
    gathered from the chunks in place, and the writer's row groups hold the same rows as one table."""
    table = demo_tokenized.slice(0, 300)
    whole = nsp_pairs.core(table.combine_chunks(), CFG, 3)
    pieces = [table.slice(0, 0), table.slice(0, 41), table.slice(41, 0), table.slice(41, 200), table.slice(241)]
    chunked = pa.concat_tables(pieces)
    assert chunked.column("sentence_ids").num_chunks == 5
    assert nsp_pairs.core(chunked, CFG, 3).equals(whole)
    tables, _ = nsp_pairs.partition_tables(chunked, CFG, 3, rows_per_table=100)
    tables = list(tables)
    assert [t.num_rows for t in tables[:-1]] == [100] * (len(tables) - 1) and len(tables) > 3
    assert pa.concat_tables(tables).equals(whole)  # instance ids run on across the tables
    block = chunked.append_column("partition", pa.array(np.full(300, 3, np.int32)))
    written = nsp_pairs.write_partitions(block, CFG, str(tmp_path), {})
    assert written.column("name").to_pylist() == ["part-00003-0000.parquet"]
    assert written.column("rows").to_pylist() == [whole.num_rows]
    back = pq.read_table(tmp_path / "part-00003-0000.parquet")
    assert back.equals(whole.cast(nsp_pairs.OUTPUT))


def test_single_sentence_document_and_tiny_inputs():
    table = pa.table({"doc_id": ["a", "b", "c"], "sentence_ids": [[[10, 11, 12]], [[20, 21], [22]], [[]]]},
                     schema=TOKENIZED)
    out = nsp_pairs.core(table, nsp_pairs.NspConfig(max_seq_length=8, short_seq_prob=0.0, cls_id=2, sep_id=3), 0)
    for row in out.to_pylist():
        assert len(row["input_ids"]) <= 8 and row["input_ids"][0] == 2 and row["input_ids"][-1] == 3
    # document "a" has one sentence: its B is always random
    assert out.num_rows >= 2 and out.column("forced_random_next").to_pylist().count(True) >= 1


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="max_seq_length must be at least 8"):
        nsp_pairs.NspConfig(max_seq_length=7)
    with pytest.raises(ValueError, match="short_seq_prob"):
        nsp_pairs.NspConfig(short_seq_prob=1.5)


_POOLS: list = []


def test_a_block_of_several_partitions_is_read_in_place(demo_tokenized, tmp_path, monkeypatch):
    """Ray Data's hash of the partition key can bring several partitions into one reduce block. Each
    partition's pairs are those of its rows alone, and the block's tokens are not copied: the Arrow
    memory the reducer allocates stays far below the block (a filter per partition copied it)."""
    table = demo_tokenized.slice(0, 600).combine_chunks()
    parts = doc_partitions.partition_of(table.column("doc_id").to_pylist(), 7, 3)
    block = table.append_column("partition", pa.array(parts, pa.int32()))
    expected = {p: nsp_pairs.core(table.filter(pa.array(parts == p)), CFG, p) for p in range(3)}
    monkeypatch.setattr(nsp_pairs, "ROWS_PER_TABLE", 50)  # row groups far smaller than the block
    pool = pa.proxy_memory_pool(pa.default_memory_pool())
    _POOLS.append(pool)  # buffers made through it may outlive the test: it must outlive them
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pool)
    try:
        written = nsp_pairs.write_partitions(block, CFG, str(tmp_path), {})
    finally:
        pa.set_memory_pool(previous)
    assert written.column("name").to_pylist() == [f"part-{p:05d}-0000.parquet" for p in range(3)]
    for p in range(3):
        assert pq.read_table(tmp_path / f"part-{p:05d}-0000.parquet").equals(expected[p].cast(nsp_pairs.OUTPUT))
    tokens = table.column("sentence_ids").combine_chunks().flatten().flatten()
    assert pool.max_memory() < tokens.nbytes / 4, (pool.max_memory(), tokens.nbytes)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 1000])
def test_shuffled_range_draws_as_random_shuffle_does(n):
    x = list(range(n))
    rng = random.Random(n)
    rng.shuffle(x)
    other = random.Random(n)
    assert nsp_pairs.shuffled_range(n, other).tolist() == x
    assert other.random() == rng.random()  # the same draws were taken
