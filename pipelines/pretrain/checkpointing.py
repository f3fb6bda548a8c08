"""What a pretraining checkpoint holds and how it is written and read back.

A checkpoint directory (one per reported step, merged by Ray Train from every rank's files)::

    deepspeed/state/...        DeepSpeed's own files: module, ZeRO optimizer partitions, LR scheduler
    deepspeed/latest
    train_state.json           step, data cursor (epoch, samples into the epoch, instances fingerprint),
                               world size, model
    metrics.jsonl              the metric log up to this step (rank 0), so a restore keeps the curve
    files-rank{r}.json         every file rank r contributed, with its size in bytes

Complete means: ``train_state.json`` parses, and for each of its ``world_size`` ranks the rank's file list
parses and every file it names is there with that size. Ray Train uploads each rank's files itself, in no
fixed order, so no single file can be "written last"; a full disk or a killed upload leaves some files
missing or short, which this check names (``incomplete_parts``). Such a checkpoint was never committed
(Ray Train registers one only after every rank's upload returned): a resume removes it and goes on from
the newest complete one (``trainer.check_existing_checkpoint``).

Restore with the same world size and ZeRO stage loads the DeepSpeed state as is (optimizer moments
included). With a different world size or stage, the ZeRO partitions cannot be loaded directly, so
the **consolidated fp32 weights** are rebuilt from all ranks' partitions (DeepSpeed's zero_to_fp32)
and training continues from them with the step, LR schedule and data position restored; the Adam
moments start again from zero. The same consolidation produces the final HF export.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any

import torch

DEEPSPEED_DIR = "deepspeed"
TAG = "state"
TRAIN_STATE = "train_state.json"
METRICS_FILE = "metrics.jsonl"
RANK_FILES = "files-rank{rank}.json"


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete, or does not fit the run restoring it."""


@dataclass(frozen=True)
class TrainState:
    """Where training stands; stored next to the DeepSpeed state in every checkpoint."""

    phase: int
    step: int
    """Optimizer steps completed in this phase."""
    epoch: int
    """Pass over the instances the data position is in (also seeds the dynamic masks)."""
    samples_in_epoch: int
    """Sequences consumed from this epoch, summed over all workers: a multiple of the global batch, so the
    same position whatever the world size (see ``inputs``)."""
    world_size: int
    zero_stage: int
    run_identity: str
    model_config: dict[str, Any]
    instances: dict[str, Any] | None = None
    """``inputs.InstancePlan.summary()`` of the instances the cursor counts in (rows, shards, fingerprint,
    chunk and buffer sizes); a resume over other instances is refused before any step."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainState":
        return cls(**json.loads(text))


def read_train_state(directory: str) -> TrainState:
    path = os.path.join(directory, TRAIN_STATE)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {directory!r} has no {TRAIN_STATE}; it was not written by this trainer")
    with open(path, encoding="utf-8") as f:
        return TrainState.from_json(f.read())


def write_train_state(directory: str, state: TrainState) -> None:
    with open(os.path.join(directory, TRAIN_STATE), "w", encoding="utf-8") as f:
        f.write(state.to_json())


def write_rank_files(directory: str, rank: int, state: TrainState) -> None:
    """List every file under ``directory`` (this rank's part of the checkpoint) with its size, in the list's
    own file beside them."""
    files = {}
    for folder, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(folder, name)
            files[os.path.relpath(path, directory).replace(os.sep, "/")] = os.path.getsize(path)
    with open(os.path.join(directory, RANK_FILES.format(rank=rank)), "w", encoding="utf-8") as f:
        json.dump({"rank": rank, "world_size": state.world_size, "step": state.step, "files": files}, f,
                  indent=1, sort_keys=True)


def incomplete_parts(uri: str) -> list[str]:
    """What the checkpoint at ``uri`` (local path or s3://) lacks to be complete; empty when complete."""
    import pyarrow.fs as pafs

    from pipelines import storage

    fs, path = storage.filesystem(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    sizes = {i.path[len(path.rstrip("/")) + 1:]: i.size for i in infos if i.type == pafs.FileType.File}
    try:
        world_size = TrainState.from_json(storage.read_bytes(storage.join(uri, TRAIN_STATE)).decode()).world_size
    except (OSError, ValueError, TypeError) as e:  # absent, truncated or not ours
        return [f"{TRAIN_STATE} missing or unreadable ({type(e).__name__})"]
    problems = []
    for rank in range(world_size):
        name = RANK_FILES.format(rank=rank)
        try:
            listed = json.loads(storage.read_bytes(storage.join(uri, name)))["files"]
        except (OSError, ValueError, KeyError) as e:
            problems.append(f"{name} missing or unreadable ({type(e).__name__})")
            continue
        for rel, size in sorted(listed.items()):
            if rel not in sizes:
                problems.append(f"{rel} of rank {rank} missing")
            elif sizes[rel] != size:
                problems.append(f"{rel} of rank {rank} has {sizes[rel]} of its {size} bytes")
    return problems


def check_complete(uri: str) -> None:
    problems = incomplete_parts(uri)
    if problems:
        raise CheckpointError(f"checkpoint {uri} is incomplete (a write that did not finish, e.g. a full disk): "
                              + "; ".join(problems[:5]) + (f" and {len(problems) - 5} more" if len(problems) > 5 else ""))


def check_compatible(saved: TrainState, *, phase: int, run_identity: str, model_config: dict[str, Any]) -> None:
    """Raise CheckpointError naming the mismatch when a checkpoint does not belong to this run."""
    if saved.run_identity != run_identity:
        raise CheckpointError(f"checkpoint belongs to run {saved.run_identity}, not {run_identity}")
    if saved.phase != phase:
        raise CheckpointError(f"checkpoint is from phase {saved.phase}, this is phase {phase}")
    if saved.model_config != model_config:
        diff = {k: (saved.model_config.get(k), v) for k, v in model_config.items() if saved.model_config.get(k) != v}
        raise CheckpointError(f"checkpoint model differs from the configured one (saved, configured): {diff}")


def consolidated_state_dict(directory: str) -> dict[str, torch.Tensor]:
    """Full fp32 weights (bert_core names) from a merged checkpoint, whatever world size wrote it."""
    ds_dir = os.path.join(directory, DEEPSPEED_DIR)
    tag_dir = os.path.join(ds_dir, TAG)
    if not os.path.isdir(tag_dir):
        raise CheckpointError(f"checkpoint {directory!r} has no DeepSpeed state under {DEEPSPEED_DIR}/{TAG}")
    files = os.listdir(tag_dir)
    if any("optim_states" in f for f in files):  # ZeRO >= 1: weights live in the optimizer partitions
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(ds_dir, tag=TAG)
    else:  # ZeRO-0: the module is saved whole by rank 0
        path = os.path.join(tag_dir, "mp_rank_00_model_states.pt")
        if not os.path.isfile(path):
            raise CheckpointError(f"checkpoint {directory!r} lacks {path}")
        state = torch.load(path, map_location="cpu", weights_only=False)["module"]
    return {k.removeprefix("module."): v.float() for k, v in state.items()}


def load_consolidated(model: torch.nn.Module, directory: str) -> None:
    """Fill ``model`` from the consolidated weights; every parameter must be present and fit."""
    state = consolidated_state_dict(directory)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    mismatched = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                  if k in state and state[k].shape != v.shape]
    if missing or mismatched:
        raise CheckpointError(f"checkpoint {directory!r} does not fit the model: missing {missing[:10]}, "
                              f"mismatched {mismatched[:10]}")
    model.load_state_dict({k: state[k] for k in expected})
