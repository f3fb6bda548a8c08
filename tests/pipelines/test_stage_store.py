import os

import pyarrow as pa
import pytest

from pipelines import stage_store, storage
from pipelines.schemas import DOCUMENTS


def _table(n: int, start: int = 0) -> pa.Table:
    return pa.table({"doc_id": [f"d{i:04d}" for i in range(start, start + n)],
                     "text": [f"text {i}" for i in range(start, start + n)]}, schema=DOCUMENTS)


def _produce_in(batches):
    def produce(writer):
        table = pa.concat_tables(batches)
        for start in range(0, table.num_rows, 4):
            writer.write_table(table.slice(start, 4), DOCUMENTS)
        writer.stats["documents"] = table.num_rows
    return produce


def test_commit_writes_manifest_last_and_rerun_skips(tmp_path):
    root = str(tmp_path)
    uri = stage_store.run_stage(root, "demo", {"a": 1}, ("in",), _produce_in([_table(10)]))
    assert stage_store.is_complete(uri)
    m = stage_store.read_manifest(uri)
    assert [f["name"] for f in m["files"]] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert [f["rows"] for f in m["files"]] == [4, 4, 2] and m["num_rows"] == 10
    assert stage_store.read_stats(uri)["documents"] == 10
    assert stage_store.read_table(uri).equals(_table(10))
    assert os.listdir(os.path.join(root, "demo")) == [os.path.basename(uri)]  # no temp dir left

    def fail(writer):
        raise AssertionError("a complete stage must not run again")
    assert stage_store.run_stage(root, "demo", {"a": 1}, ("in",), fail) == uri


def _make_upper_and_split():
    """A map_shards function (nested, so Ray pickles it by value: workers cannot import tests)."""
    def upper_and_split(table: pa.Table, parts: int):
        """Upper-cased text, the shard cut in ``parts`` tables (one may be empty)."""
        out = table.set_column(1, "text", pa.array([t.upper() for t in table.column("text").to_pylist()]))
        n = -(-out.num_rows // parts)
        stats = {"rows_in": table.num_rows, "max_len": max(len(t) for t in table.column("text").to_pylist())}
        return ([out.slice(k * n, n) for k in range(parts)] if parts > 1 else out), stats
    return upper_and_split


_upper_and_split = _make_upper_and_split()


def _shards(root) -> list[str]:
    uri = stage_store.run_stage(str(root), "in", {}, (), _produce_in([_table(10)]))  # shards of 4, 4, 2 rows
    return stage_store.data_files(uri)


@pytest.mark.parametrize("parts", [1, 3])
def test_map_shards_writes_shard_i_from_input_i_whatever_the_parallelism(tmp_path, ray_session, parts):
    shards = _shards(tmp_path)
    outputs, manifests = [], []
    for concurrency in (1, None):
        def produce(writer):
            stats, written = stage_store.map_shards(writer, shards, _upper_and_split, (parts,), schema=DOCUMENTS,
                                                    concurrency=concurrency)
            assert stats == {"rows_in": 10, "max_len": 6}  # summed; max_ keys take the maximum (not 3 x 6)
            assert written == [storage.join(writer.tmp, f["name"]) for f in writer.files]
            writer.stats.update(stats)
        uri = stage_store.run_stage(str(tmp_path / f"c{concurrency}"), "up", {}, (), produce)
        outputs.append([storage.read_bytes(f) for f in stage_store.data_files(uri)])
        manifests.append(stage_store.read_manifest(uri)["files"])
    assert outputs[0] == outputs[1] and manifests[0] == manifests[1]
    names = [f["name"] for f in manifests[0]]
    if parts == 1:
        assert names == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    else:  # 4 rows cut in 3 are 2 + 2 + 0 and 2 rows 1 + 1 + 0: no file for the empty tables
        assert names == ["part-00000-0000.parquet", "part-00000-0001.parquet", "part-00001-0000.parquet",
                         "part-00001-0001.parquet", "part-00002-0000.parquet", "part-00002-0001.parquet"]
    table = stage_store.read_table(uri)
    assert table.column("doc_id").to_pylist() == [f"d{i:04d}" for i in range(10)]
    assert table.column("text").to_pylist() == [f"TEXT {i}" for i in range(10)]


def test_map_shards_names_the_unreadable_shard(tmp_path, ray_session):
    shards = _shards(tmp_path)
    with open(shards[1], "wb") as f:
        f.write(b"not parquet")

    def produce(writer):
        stage_store.map_shards(writer, shards, _upper_and_split, (1,), schema=DOCUMENTS)
    with pytest.raises(Exception, match="cannot read parquet .*part-00001.parquet"):
        stage_store.run_stage(str(tmp_path / "out"), "up", {}, (), produce)
    assert os.listdir(tmp_path / "out" / "up") == []  # the temp dir was removed


def test_killed_stage_leaves_no_manifest_and_is_redone(tmp_path):
    root = str(tmp_path)

    def crash(writer):
        writer.write_table(_table(3), DOCUMENTS)
        raise KeyboardInterrupt  # killed half-way
    with pytest.raises(KeyboardInterrupt):
        stage_store.run_stage(root, "s", {"k": 2}, (), crash)
    key = stage_store.stage_key("s", 1, {"k": 2})
    final = stage_store.output_uri(root, "s", key)
    assert not stage_store.is_complete(final)
    # a kill -9 leaves its temp dir and even a moved-but-unmanifested final dir behind
    os.makedirs(os.path.join(root, "s", f"_tmp-{key}-deadbeef"))
    os.makedirs(final)
    open(os.path.join(final, "part-00000.parquet"), "wb").write(b"half-written")
    uri = stage_store.run_stage(root, "s", {"k": 2}, (), _produce_in([_table(5)]))
    assert uri == final and stage_store.read_table(uri).equals(_table(5))
    assert sorted(os.listdir(os.path.join(root, "s"))) == [key]


def test_key_changes_with_config_inputs_and_version():
    k = stage_store.stage_key("s", 1, {"a": 1}, "x")
    assert k == stage_store.stage_key("s", 1, {"a": 1}, "x")
    assert len({k, stage_store.stage_key("s", 1, {"a": 2}, "x"), stage_store.stage_key("s", 1, {"a": 1}, "y"),
                stage_store.stage_key("s", 2, {"a": 1}, "x")}) == 4


def test_incomplete_output_is_not_readable(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a completed stage output"):
        stage_store.read_manifest(str(tmp_path))


def _make_shuffle_fns():
    """hash_shuffle's two sides (nested, so Ray pickles them by value: workers cannot import tests)."""
    def by_parity(numbers: list[int], num_partitions: int):
        return tuple(pa.table({"n": pa.array([n for n in numbers if n % num_partitions == p], pa.int64())})
                     for p in range(num_partitions))

    def gather(label: str, partition: int, *tables: pa.Table):
        return label, partition, len(tables), sorted(pa.concat_tables(tables).column("n").to_pylist())
    return by_parity, gather


@pytest.mark.parametrize("num_partitions", [1, 3])
def test_hash_shuffle_meets_every_partition_from_every_input(ray_session, num_partitions):
    by_parity, gather = _make_shuffle_fns()
    inputs = [[0, 1, 2, 3], [4, 5], [6, 7, 8]]
    out = stage_store.hash_shuffle(inputs, by_parity, (num_partitions,), gather, ("x",), num_partitions)
    assert out == [("x", p, 3, [n for n in range(9) if n % num_partitions == p]) for p in range(num_partitions)]
