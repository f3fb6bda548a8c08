import os

import pyarrow as pa
import pytest

from pipelines import parquet_files, stage_exec, stage_store, storage
from pipelines.schemas import DOCUMENTS


def _table(n: int, start: int = 0) -> pa.Table:
    return pa.table({"doc_id": [f"d{i:04d}" for i in range(start, start + n)],
                     "text": [f"text {i}" for i in range(start, start + n)]}, schema=DOCUMENTS)


def _shards(root) -> list[stage_exec.Unit]:
    def produce(writer):
        table = _table(10)
        for start in range(0, 10, 4):  # shards of 4, 4, 2 rows
            writer.write_table(table.slice(start, 4), DOCUMENTS)
    return stage_store.shard_units(stage_store.run_stage(str(root), "in", {}, (), produce))


def _make_stage():
    """A reader and a worker class (nested, so Ray pickles them by value: workers cannot import tests)."""
    def read_in_pieces(unit, parts: int):
        """The shard cut into ``parts`` pieces (one may be empty), then the read's own counts."""
        table = parquet_files.read_parquet(unit.uri)
        n = -(-table.num_rows // parts)
        yield from (table.slice(k * n, n) for k in range(parts))
        yield {"units_read": 1}

    class Upper:
        def __init__(self, suffix: str):
            self.suffix = suffix

        def __call__(self, table):
            texts = [t.upper() + self.suffix for t in table.column("text").to_pylist()]
            return table.set_column(1, "text", pa.array(texts)), {"rows_in": table.num_rows,
                                                                  "max_len": max(map(len, texts))}
    class CostlyUpper(Upper):
        """``costly_setup``: counts its own builds; the first piece a build writes reports one."""
        costly_setup = True

        def __init__(self, suffix: str):
            super().__init__(suffix)
            self.pieces = 0

        def __call__(self, table):
            self.pieces += 1
            out, stats = super().__call__(table)
            return out, {**stats, "builds": int(self.pieces == 1)}
    return read_in_pieces, Upper, CostlyUpper


_read_in_pieces, _Upper, _CostlyUpper = _make_stage()


@pytest.mark.parametrize("parts", [1, 3])
def test_map_units_writes_piece_files_whatever_the_parallelism(tmp_path, ray_session, parts):
    units = _shards(tmp_path)
    outputs, manifests = [], []
    for concurrency in (1, None):
        def produce(writer):
            stats, written = stage_exec.map_units(writer, units, read=_read_in_pieces, read_args=(parts,), worker=_Upper,
                                                  worker_args=("!",),
                                                  schema=DOCUMENTS, concurrency=concurrency)
            # summed; max_ keys take the maximum (not 3 x 7); the readers' counts arrive once per unit
            assert stats == {"rows_in": 10, "max_len": 7, "units_read": 3}
            assert written == [storage.join(writer.tmp, f["name"]) for f in writer.files]
        uri = stage_store.run_stage(str(tmp_path / f"c{concurrency}"), "up", {}, (), produce)
        outputs.append([storage.read_bytes(f) for f in stage_store.data_files(uri)])
        manifests.append(stage_store.read_manifest(uri)["files"])
    assert outputs[0] == outputs[1] and manifests[0] == manifests[1]
    names = [f["name"] for f in manifests[0]]
    if parts == 1:
        assert names == ["part-00000-0000.parquet", "part-00001-0000.parquet", "part-00002-0000.parquet"]
    else:  # 4 rows cut in 3 are 2 + 2 + 0 and 2 rows 1 + 1 + 0: no file for the empty pieces
        assert names == ["part-00000-0000.parquet", "part-00000-0001.parquet", "part-00001-0000.parquet",
                         "part-00001-0001.parquet", "part-00002-0000.parquet", "part-00002-0001.parquet"]
    table = stage_store.read_table(uri)
    assert table.column("doc_id").to_pylist() == [f"d{i:04d}" for i in range(10)]
    assert table.column("text").to_pylist() == [f"TEXT {i}!" for i in range(10)]


def test_a_costly_worker_is_built_once_per_process_and_stage_attempt(tmp_path, ray_session):
    built = [stage_exec._stage_worker(_CostlyUpper, ("!",), "tmp-a") for _ in range(3)]
    assert built[0] is built[1] is built[2]
    assert stage_exec._stage_worker(_CostlyUpper, ("?",), "tmp-a") is not built[0]  # other arguments
    assert stage_exec._stage_worker(_CostlyUpper, ("!",), "tmp-b") is not built[0]  # another attempt
    assert stage_exec._stage_worker(_Upper, ("!",), "tmp-b") is not stage_exec._stage_worker(_Upper, ("!",), "tmp-b")

    units = _shards(tmp_path)  # 3 units read in 3 pieces: 2 + 2 + 0, 2 + 2 + 0, 1 + 1 + 0 rows

    def produce(writer):
        stats, written = stage_exec.map_units(writer, units, read=_read_in_pieces, read_args=(3,), worker=_CostlyUpper,
                                              worker_args=("!",),
                                              schema=DOCUMENTS)
        assert len(written) == 6 and 1 <= stats["builds"] <= 3  # a task's pieces share one build
        assert stats["rows_in"] == 10
    uri = stage_store.run_stage(str(tmp_path / "out"), "up", {}, (), produce)
    assert stage_store.read_table(uri).column("text").to_pylist() == [f"TEXT {i}!" for i in range(10)]


def test_map_units_names_the_unreadable_shard(tmp_path, ray_session):
    units = _shards(tmp_path)
    with open(units[1].uri, "wb") as f:
        f.write(b"not parquet")

    def produce(writer):
        stage_exec.map_units(writer, units, worker=stage_exec.Apply, worker_args=(lambda t: (t, {}),),
                             schema=DOCUMENTS)
    with pytest.raises(Exception, match="cannot read parquet .*part-00001.parquet"):
        stage_store.run_stage(str(tmp_path / "out"), "up", {}, (), produce)
    assert os.listdir(tmp_path / "out" / "up") == []  # the temp dir was removed


def _make_groups():
    def groups_in_block(block: pa.Table) -> pa.Table:
        keys = block.column("key").to_pylist()
        return pa.table({"key": sorted(set(keys)), "count": [keys.count(k) for k in sorted(set(keys))],
                         "block_rows": [block.num_rows] * len(set(keys))})
    return groups_in_block


def test_shuffle_groups_brings_every_row_of_a_key_into_one_block(ray_session):
    import ray.data

    rows = [{"key": f"k{(i * 7) % 13}", "value": i} for i in range(200)]
    ds = ray.data.from_items(rows, override_num_blocks=9)
    with stage_exec.stage_data_context():
        out = stage_exec.collect(stage_exec.shuffle_groups(ds, "key", 4, _make_groups())).to_pylist()
    # each key once, with every one of its rows: no key is split between blocks
    assert sorted(r["key"] for r in out) == sorted({r["key"] for r in rows})
    assert {r["key"]: r["count"] for r in out} == {k: sum(r["key"] == k for r in rows) for k in {r["key"] for r in rows}}
    assert len({r["block_rows"] for r in out}) <= 4
