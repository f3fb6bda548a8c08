"""When a checkpoint is complete: its train state and every rank's file list, each file there at its size."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from pipelines.pretrain.checkpointing import (CheckpointError, TrainState, check_complete, incomplete_parts,
                                              write_rank_files, write_train_state)


def _rank_part(directory: str, rank: int, state: TrainState, payload: bytes) -> None:
    """What one rank uploads: its DeepSpeed file (rank 0 also the train state), then its file list."""
    os.makedirs(os.path.join(directory, "deepspeed", "state"), exist_ok=True)
    with open(os.path.join(directory, "deepspeed", "state", f"zero_pp_rank_{rank}_optim_states.pt"), "wb") as f:
        f.write(payload)
    if rank == 0:
        write_train_state(directory, state)
    write_rank_files(directory, rank, state)


@pytest.fixture
def merged(tmp_path) -> str:
    """Two ranks' parts merged into one directory, as Ray Train uploads them."""
    state = TrainState(0, 8, 0, 128, 2, 1, "run", {"hidden_size": 8})
    parts = [tmp_path / "rank0", tmp_path / "rank1"]
    _rank_part(str(parts[0]), 0, state, b"a" * 100)
    _rank_part(str(parts[1]), 1, state, b"b" * 300)
    out = tmp_path / "checkpoint"
    for part in parts:
        shutil.copytree(part, out, dirs_exist_ok=True)
    return str(out)


def test_a_merged_checkpoint_of_every_rank_is_complete(merged):
    with open(os.path.join(merged, "files-rank1.json")) as f:
        assert json.load(f) == {"rank": 1, "world_size": 2, "step": 8,
                                "files": {"deepspeed/state/zero_pp_rank_1_optim_states.pt": 300}}
    assert incomplete_parts(merged) == []
    check_complete(merged)


def test_a_short_file_a_missing_rank_or_an_empty_train_state_is_named(merged):
    shard = os.path.join(merged, "deepspeed", "state", "zero_pp_rank_1_optim_states.pt")
    with open(shard, "r+b") as f:
        f.truncate(120)  # the disk filled during the upload
    assert incomplete_parts(merged) == ["deepspeed/state/zero_pp_rank_1_optim_states.pt of rank 1 has 120 of its 300 bytes"]
    os.remove(os.path.join(merged, "files-rank1.json"))
    assert incomplete_parts(merged) == ["files-rank1.json missing or unreadable (FileNotFoundError)"]
    open(os.path.join(merged, "train_state.json"), "w").close()
    with pytest.raises(CheckpointError, match=r"checkpoint .* is incomplete .*full disk.*train_state.json missing "
                                              r"or unreadable \(JSONDecodeError\)"):
        check_complete(merged)
