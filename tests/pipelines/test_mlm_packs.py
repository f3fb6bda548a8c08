"""MLM packs: the exact packs of a plain-Python reference (FULL-SENTENCES and DOC-SENTENCES), their
invariants on random documents, and the Ray stage's bytes, the same whatever the input's blocks."""
import dataclasses
import hashlib
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import stage_store, storage
from pipelines.schemas import INSTANCES, TOKENIZED
from pipelines.stages import doc_partitions, mlm_packs
from pipelines.stages.wordpiece import Vocabulary

CLS, SEP = 2, 3
CFG = mlm_packs.PackConfig(max_seq_length=8, seed=7, cls_id=CLS, sep_id=SEP)


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest(), "little")


def reference(table: pa.Table, cfg: mlm_packs.PackConfig, partition: int) -> list[dict]:
    """The stage's rows, one token at a time: documents by doc_id, without the empty ones, shuffled;
    a stream of their tokens (with a separator between documents, or restarting at each document)
    cut into chunks of max_seq_length - 2 that never begin with a separator; rows in a seeded order."""
    docs = sorted(zip(table.column("doc_id").to_pylist(), table.column("sentence_ids").to_pylist()))
    tokens = [[t for sentence in sentences for t in sentence] for _, sentences in docs]
    tokens = [t for t in tokens if t]
    random.Random(_seed(cfg.seed, partition, "documents")).shuffle(tokens)
    size = cfg.max_seq_length - 2
    streams = [tokens] if cfg.mode == "full_sentences" else [[doc] for doc in tokens]
    chunks = []
    for stream in streams:
        items = []
        for k, doc in enumerate(stream):
            items += ([None] if k else []) + doc  # None: the separator between two documents
        chunk = []
        for item in items:
            if not chunk and item is None:
                continue
            chunk.append(cfg.sep_id if item is None else item)
            if len(chunk) == size:
                chunks.append(chunk)
                chunk = []
        if chunk:
            chunks.append(chunk)
    order = np.random.default_rng(_seed(cfg.seed, partition, "order")).permutation(len(chunks))
    return [{"input_ids": [cfg.cls_id] + chunks[k] + [cfg.sep_id], "token_type_ids": [0] * (len(chunks[k]) + 2),
             "is_random_next": False, "num_tokens": len(chunks[k]) + 2, "instance_id": f"p{partition:05d}-{i:09d}"}
            for i, k in enumerate(order.tolist())]


# Eleven documents of 0 to 17 tokens (two without any), in an order that is not doc_id order. With 6
# tokens a chunk, "e" (6 tokens) and "g" (12) end a chunk wherever they start one.
TINY = pa.table({
    "doc_id": ["k", "b", "a", "c", "d", "e", "f", "g", "h", "i", "j"],
    "sentence_ids": [
        [[110, 111]],
        [[20, 21], [22]],
        [[10, 11, 12], [13, 14]],
        [],
        [[40, 41, 42, 43, 44, 45, 46]],
        [[50, 51, 52, 53, 54, 55]],
        [[]],
        [[70, 71, 72, 73], [74, 75, 76, 77, 78, 79, 80, 81]],
        [[90]],
        [[100, 101, 102, 103, 104], [105, 106, 107, 108, 109], [112, 113, 114, 115, 116, 117, 118]],
        [[120, 121, 122, 123, 124, 125]],
    ]}, schema=TOKENIZED)


@pytest.mark.parametrize("mode", mlm_packs.MODES)
@pytest.mark.parametrize("seed, partition", [(7, 0), (12345, 3), (1, 11)])
def test_tiny_documents_give_the_reference_packs(mode, seed, partition):
    cfg = dataclasses.replace(CFG, mode=mode, seed=seed)
    out = mlm_packs.core(TINY, cfg, partition)
    assert out.schema == INSTANCES
    assert out.to_pylist() == reference(TINY, cfg, partition)


def test_one_document_literally():
    table = pa.table({"doc_id": ["x"], "sentence_ids": [[[5, 6, 7], [8, 9, 10, 11, 12], [13, 14, 15, 16, 17, 18]]]},
                     schema=TOKENIZED)
    for mode in mlm_packs.MODES:
        out = mlm_packs.core(table, dataclasses.replace(CFG, mode=mode), 4)
        assert sorted(out.column("input_ids").to_pylist()) == [
            [CLS, 5, 6, 7, 8, 9, 10, SEP], [CLS, 11, 12, 13, 14, 15, 16, SEP], [CLS, 17, 18, SEP]]
        assert sorted(out.column("num_tokens").to_pylist()) == [4, 8, 8]
        assert out.column("instance_id").to_pylist() == ["p00004-000000000", "p00004-000000001", "p00004-000000002"]
    # two documents that fill whole chunks: no separator at all
    two = pa.table({"doc_id": ["x", "y"], "sentence_ids": [[[5, 6, 7, 8, 9, 10]], [[11, 12, 13, 14, 15, 16]]]},
                   schema=TOKENIZED)
    out = mlm_packs.core(two, CFG, 0)
    assert sorted(out.column("input_ids").to_pylist()) == [[CLS, 5, 6, 7, 8, 9, 10, SEP],
                                                           [CLS, 11, 12, 13, 14, 15, 16, SEP]]


def random_documents(num_docs: int, seed: int) -> pa.Table:
    """Documents of 0 to 12 sentences of 0 to 40 tokens; every token id is unique and a document's
    ids run up by one (so a pack's text shows which document and which place it came from)."""
    rng = np.random.default_rng(seed)
    rows, next_id = [], 1000
    for d in range(num_docs):
        sentences = []
        for n in rng.integers(0, 41, rng.integers(0, 13)).tolist():
            sentences.append(list(range(next_id, next_id + n)))
            next_id += n
        rows.append(sentences)
        next_id += 1000  # a gap between documents
    ids = [f"doc-{k:04d}" for k in rng.permutation(num_docs).tolist()]
    return pa.table({"doc_id": ids, "sentence_ids": rows}, schema=TOKENIZED)


def _runs(pack: list[int]) -> list[list[int]]:
    """A pack's text split at the document separators."""
    runs, run = [], []
    for t in pack[1:-1]:
        if t == SEP:
            runs.append(run)
            run = []
        else:
            run.append(t)
    return runs + [run]


@pytest.mark.parametrize("mode", mlm_packs.MODES)
@pytest.mark.parametrize("max_seq_length", [8, 21, 128])
def test_random_documents_pack_every_token_once_in_order(mode, max_seq_length):
    table = random_documents(150, max_seq_length)
    cfg = dataclasses.replace(CFG, max_seq_length=max_seq_length, mode=mode)
    out = mlm_packs.core(table, cfg, 2)
    rows = out.to_pylist()
    assert rows == reference(table, cfg, 2)
    packs = [r["input_ids"] for r in rows]
    lengths = [len(p) for p in packs]
    assert lengths == [r["num_tokens"] for r in rows]
    assert all(p[0] == CLS and p[-1] == SEP and CLS not in p[1:] and 0 not in p for p in packs)
    short = [n for n in lengths if n != max_seq_length]
    assert all(n < max_seq_length for n in short)
    # no [SEP] opens a chunk and none is doubled; one may close a chunk's text, before the pack's own
    assert all(all(_runs(p)[:-1]) and _runs(p)[0] for p in packs)
    runs = [run for p in packs for run in _runs(p) if run]
    # each run is a piece of one document in its order (ids up by one, never across the 1000 gap)
    assert all(run[-1] - run[0] == len(run) - 1 for run in runs)
    packed = sorted(t for run in runs for t in run)
    tokens = sorted(t for doc in table.column("sentence_ids").to_pylist() for s in doc for t in s)
    assert packed == tokens  # every token exactly once
    documents = sum(1 for doc in table.column("sentence_ids").to_pylist() if any(doc))
    if mode == "full_sentences":
        assert len(short) <= 1  # the partition's last pack
        assert sum(len(_runs(p)) - 1 for p in packs) <= documents - 1
    else:
        assert all(len(_runs(p)) == 1 for p in packs)  # never two documents in a pack
        assert len(short) <= documents
        assert len(packs) == sum(-(-sum(map(len, doc)) // (max_seq_length - 2))
                                 for doc in table.column("sentence_ids").to_pylist())


def test_output_ignores_row_order_chunks_and_table_size(monkeypatch):
    table = random_documents(200, 1)
    cfg = dataclasses.replace(CFG, max_seq_length=32)
    whole = mlm_packs.core(table, cfg, 5)
    monkeypatch.setattr(mlm_packs, "ASSEMBLE_TOKENS", 100)  # numpy passes of 3 packs
    assert mlm_packs.core(table, cfg, 5).equals(whole)
    monkeypatch.undo()
    assert mlm_packs.core(table.take(np.arange(200)[::-1]), cfg, 5).equals(whole)
    pieces = [table.slice(0, 0), table.slice(0, 41), table.slice(41, 0), table.slice(41, 100), table.slice(141)]
    chunked = pa.concat_tables(pieces)
    assert chunked.column("sentence_ids").num_chunks == 5
    assert mlm_packs.core(chunked, cfg, 5).equals(whole)
    tables, stats = mlm_packs.partition_tables(chunked, cfg, 5, rows_per_table=37)
    tables = list(tables)
    assert [t.num_rows for t in tables[:-1]] == [37] * (len(tables) - 1) and len(tables) > 3
    assert pa.concat_tables(tables).equals(whole)  # instance ids run on across the tables
    empty = sum(1 for doc in table.column("sentence_ids").to_pylist() if not any(doc))
    assert stats == {"documents": 200, "documents_without_tokens": empty} and empty > 0


def test_empty_documents_are_skipped_and_counted():
    tables, stats = mlm_packs.partition_tables(TINY, CFG, 0)
    assert stats == {"documents": 11, "documents_without_tokens": 2}
    nothing = pa.table({"doc_id": ["a", "b"], "sentence_ids": [[], [[], []]]}, schema=TOKENIZED)
    assert mlm_packs.core(nothing, CFG, 0).num_rows == 0
    assert mlm_packs.core(nothing.slice(0, 0), CFG, 0).schema == INSTANCES


def test_a_block_of_several_partitions_writes_each_as_its_core(tmp_path, monkeypatch):
    table = random_documents(120, 3)
    cfg = dataclasses.replace(CFG, max_seq_length=16, mode="full_sentences")
    parts = doc_partitions.partition_of(table.column("doc_id").to_pylist(), cfg.seed, 3)
    block = table.append_column("partition", pa.array(parts, pa.int32()))
    monkeypatch.setattr(mlm_packs, "ROWS_PER_TABLE", 20)
    written = mlm_packs.write_partitions(block, cfg, str(tmp_path), {})
    assert written.column("name").to_pylist() == [f"part-{p:05d}-0000.parquet" for p in range(3)]
    for p in range(3):
        expected = mlm_packs.core(table.filter(pa.array(parts == p)), cfg, p)
        back = pq.read_table(tmp_path / f"part-{p:05d}-0000.parquet")
        assert back.equals(expected) and pq.ParquetFile(tmp_path / f"part-{p:05d}-0000.parquet").num_row_groups > 1


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="max_seq_length must be at least 8"):
        mlm_packs.PackConfig(max_seq_length=7)
    with pytest.raises(ValueError, match="num_partitions"):
        mlm_packs.PackConfig(num_partitions=0)
    with pytest.raises(ValueError, match="mode must be one of full_sentences, doc_sentences"):
        mlm_packs.PackConfig(mode="sentences")
    with pytest.raises(ValueError, match="max_seq_length is not set"):
        mlm_packs.core(TINY, mlm_packs.PackConfig(cls_id=CLS, sep_id=SEP))
    with pytest.raises(ValueError, match="cls_id and sep_id"):
        mlm_packs.core(TINY, mlm_packs.PackConfig(max_seq_length=8))
    with pytest.raises(ValueError, match="max_seq_length is not set"):
        mlm_packs.run_mlm_packs(mlm_packs.PackConfig(), "nowhere", "nowhere")
    with pytest.raises(ValueError, match="no vocabulary given"):
        mlm_packs.run_mlm_packs(mlm_packs.PackConfig(max_seq_length=8), "nowhere", "nowhere")
    with pytest.raises(ValueError, match="missing column 'sentence_ids'"):
        mlm_packs.core(TINY.select(["doc_id"]), CFG)


def _tokenized_output(root: str, table: pa.Table, num_files: int) -> str:
    """``table`` as a completed tokenize output of ``num_files`` shards."""
    writer = stage_store.StageWriter(root, "tokenize", f"k{num_files}", {}, ())
    for piece in np.array_split(np.arange(table.num_rows), num_files):
        writer.write_table(table.take(piece), TOKENIZED)
    return writer.commit()


def _file_bytes(uri: str) -> dict[str, bytes]:
    files = stage_store.read_manifest(uri)["files"]
    return {f["name"]: storage.read_bytes(storage.join(uri, f["name"])) for f in files}


def test_stage_bytes_do_not_depend_on_the_input_blocks(ray_session, tmp_path):
    table = random_documents(300, 9)
    vocabulary = Vocabulary("vocab", True, 30522, 0, 1, CLS, SEP, 4)
    cfg = mlm_packs.PackConfig(max_seq_length=24, num_partitions=3)
    tokenized = _tokenized_output(str(tmp_path / "in"), table, 1)
    one = mlm_packs.run_mlm_packs(cfg, tokenized, str(tmp_path / "a"), vocabulary)
    five = mlm_packs.run_mlm_packs(cfg, _tokenized_output(str(tmp_path / "in"), table, 5), str(tmp_path / "b"),
                                   vocabulary)
    files = _file_bytes(one)
    assert list(files) == [f"part-{p:05d}-0000.parquet" for p in range(3)]
    assert _file_bytes(five) == files
    filled = dataclasses.replace(cfg, cls_id=CLS, sep_id=SEP)
    parts = doc_partitions.partition_of(table.column("doc_id").to_pylist(), cfg.seed, 3)
    for p in range(3):
        expected = mlm_packs.core(table.filter(pa.array(parts == p)), filled, p)
        assert pq.read_table(storage.join(one, f"part-{p:05d}-0000.parquet")).equals(expected)
    stats = stage_store.read_stats(one)
    out = stage_store.read_table(one)
    lengths = np.array(out.column("num_tokens").to_pylist())
    empty = sum(1 for doc in table.column("sentence_ids").to_pylist() if not any(doc))
    assert {k: stats[k] for k in ("instances", "max_seq_length", "mode", "lowercase", "partitions")} == {
        "instances": "mlm_packs", "max_seq_length": 24, "mode": "full_sentences", "lowercase": True, "partitions": 3}
    assert stats["packs"] == out.num_rows and stats["tokens"] == lengths.sum()
    assert stats["full_packs"] == (lengths == 24).sum() and stats["short_packs"] == (lengths != 24).sum() <= 3
    assert stats["documents"] == 300 and stats["documents_without_tokens"] == empty > 0
    assert stats["padding_fraction"] == round(1 - lengths.sum() / (24 * len(lengths)), 6)
    assert stats["max_num_tokens"] == 24 and stats["document_separators"] > 0
    assert stage_store.read_stats(five) == {**stats, "seconds": stage_store.read_stats(five)["seconds"]}
    assert mlm_packs.run_mlm_packs(cfg, tokenized, str(tmp_path / "a"), vocabulary) == one  # done: skipped

    nothing = pa.table({"doc_id": ["a", "b"], "sentence_ids": [[], [[]]]}, schema=TOKENIZED)
    empty_uri = _tokenized_output(str(tmp_path / "empty"), nothing, 1)
    with pytest.raises(ValueError, match="no pack could be made from .*empty"):
        mlm_packs.run_mlm_packs(cfg, empty_uri, str(tmp_path / "c"), vocabulary)
