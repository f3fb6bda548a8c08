"""A full disk under the run root: a small tmpfs mounted by the test (skipped where mounting is not
allowed). Filling it during a stage's writes (in Ray workers) and during a commit gives an error
naming the path and "No space left on device", commits nothing half, keeps every finished stage
byte for byte, and a rerun after space is freed completes with the same bytes as an undisturbed run."""
from __future__ import annotations

import hashlib
import os

import pytest

from pipelines import stage_store, storage
from pipelines.stages.clean import CleanConfig, run_clean
from pipelines.stages.read import ReadConfig, run_read

pytestmark = pytest.mark.slow


def _digest(root: str) -> dict[str, str]:
    return {os.path.relpath(f, root): hashlib.sha256(open(f, "rb").read()).hexdigest()
            for f in storage.list_files(root)}


def test_disk_full_in_a_stage_then_rerun(ray_session, small_disk, fill_disk, demo_files, tmp_path):
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    root = os.path.join(small_disk, "run")
    read_uri = run_read(ReadConfig(), demo_files[:1], root)
    finished = _digest(os.path.join(root, "read"))
    ballast = fill_disk(small_disk, leave=64 << 10)

    with pytest.raises(Exception) as full:
        run_clean(CleanConfig(), read_uri, root)
    message = str(full.value)
    assert "No space left on device" in message and f"cannot write {root}/clean/_tmp-" in message, message
    assert _digest(os.path.join(root, "read")) == finished  # the finished stage is intact
    assert os.listdir(os.path.join(root, "clean")) == []  # no committed, half or temporary output

    os.remove(ballast)
    clean_uri = run_clean(CleanConfig(), read_uri, root)
    reference = run_clean(CleanConfig(), run_read(ReadConfig(), demo_files[:1], str(tmp_path / "ref")), str(tmp_path / "ref"))
    rerun, undisturbed = _digest(clean_uri), _digest(reference)
    assert rerun.pop("stats.json") and undisturbed.pop("stats.json")  # holds the stage's seconds
    assert rerun == undisturbed and len(rerun) >= 2  # manifest and data shards, byte for byte
    stats = [{k: v for k, v in stage_store.read_stats(u).items() if k != "seconds"} for u in (clean_uri, reference)]
    assert stats[0] == stats[1] and stats[0]["documents"] > 100
    assert _digest(os.path.join(root, "read")) == finished


def test_disk_full_during_commit_commits_nothing(small_disk, fill_disk):
    root = os.path.join(small_disk, "run")
    filled = []

    def produce(writer: stage_store.StageWriter) -> None:
        writer.write_bytes("part-00000.bin", b"x" * 4096, num_rows=1)
        if not filled:  # another writer fills the disk between the stage's data and its commit
            filled.append(fill_disk(small_disk, leave=0))

    with pytest.raises(OSError) as full:
        stage_store.run_stage(root, "s", {"a": 1}, (), produce)
    assert full.value.errno == 28 and "No space left on device" in str(full.value)
    assert f"cannot write {root}/s/" in str(full.value)
    (entry,) = os.listdir(os.path.join(root, "s"))  # the moved, uncommitted directory: no manifest
    assert not stage_store.is_complete(os.path.join(root, "s", entry))
    assert not [n for n in os.listdir(os.path.join(root, "s", entry)) if ".tmp-" in n]  # no half file

    os.remove(filled[0])
    out = stage_store.run_stage(root, "s", {"a": 1}, (), produce)
    assert stage_store.is_complete(out) and os.path.basename(out) == entry
    assert sorted(os.listdir(out)) == ["manifest.json", "part-00000.bin", "stats.json"]
    assert stage_store.read_manifest(out)["files"] == [{"name": "part-00000.bin", "bytes": 4096, "rows": 1}]
