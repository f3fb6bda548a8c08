import os

import pyarrow as pa
import pytest

from pipelines import stage_store
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


def test_abort_removes_a_file_that_a_late_task_writes_after_it(tmp_path):
    """A cancelled task finishing its upload after the first removal: abort removes that file too."""
    import threading

    from pipelines import storage

    writer = stage_store.StageWriter(str(tmp_path), "s", "k", {}, ())
    storage.write_bytes_atomic(storage.join(writer.tmp, "part-00000-0000.parquet"), b"early")
    late = threading.Timer(0.4, storage.write_bytes_atomic, (storage.join(writer.tmp, "part-00001-0000.parquet"), b"late"))
    late.start()
    writer.abort(quiet_s=1.0)
    late.join()
    assert os.listdir(tmp_path / "s") == []


def test_commit_drops_the_half_file_of_a_writer_killed_mid_write(tmp_path):
    """A task killed with its node leaves ``NAME.tmp-<uuid>`` (``storage.open_output``'s temporary file) in the
    stage's temp dir; its retry writes NAME. The committed output holds NAME only."""
    import os

    writer = stage_store.StageWriter(str(tmp_path), "s", "k", {}, ())
    writer.write_bytes("part-00000.parquet", b"whole", 1)
    with open(os.path.join(writer.tmp, "part-00000.parquet.tmp-0123abcd"), "wb") as f:
        f.write(b"half")
    final = writer.commit()
    assert sorted(os.listdir(final)) == ["manifest.json", "part-00000.parquet", "stats.json"]
