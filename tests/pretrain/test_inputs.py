"""Bad inputs fail with a clear message before any worker starts (each check runs in well under a second)."""
from __future__ import annotations

import time

import pytest

from pipelines.pretrain import PretrainConfig, PretrainInputError, run_pretraining
from pipelines.typed_config import ConfigError, from_dict

BASE = {"model_preset": "tiny", "num_workers": 2,
        "phases": [{"max_seq_length": 64, "global_batch_size": 16, "micro_batch_size": 8, "num_steps": 4,
                    "warmup_steps": 1}]}


def _cfg(**overrides) -> PretrainConfig:
    return from_dict(PretrainConfig, {**BASE, **overrides})


def _fails_fast(cfg, instances, vocab, out, error, match):
    start = time.perf_counter()
    with pytest.raises(error, match=match):
        run_pretraining(cfg, instances, vocab, out)
    assert time.perf_counter() - start < 20


def test_missing_vocabulary(pretrain_corpus, tmp_path):
    instances, _, _ = pretrain_corpus
    _fails_fast(_cfg(), instances, str(tmp_path / "nope.txt"), str(tmp_path), PretrainInputError, "does not exist")


def test_missing_instances(pretrain_corpus, tmp_path):
    _, vocab, _ = pretrain_corpus
    _fails_fast(_cfg(), str(tmp_path / "none"), vocab, str(tmp_path), PretrainInputError, "does not exist")


def test_config_vocab_size_differs_from_vocabulary(pretrain_corpus, tmp_path):
    instances, vocab, _ = pretrain_corpus
    _fails_fast(_cfg(vocab_size=30522), instances, vocab, str(tmp_path), PretrainInputError,
                "vocab_size 30522 != 1000 pieces")


def test_shards_from_another_vocabulary(pretrain_corpus, minilm_dir, tmp_path):
    instances, _, _ = pretrain_corpus  # tokenised with the in-process 1000-piece vocabulary
    _fails_fast(_cfg(), instances, f"{minilm_dir}/vocab.txt", str(tmp_path), PretrainInputError,
                "tokenised with another vocabulary")


def test_instances_longer_than_the_phase(pretrain_corpus, tmp_path):
    instances, vocab, _ = pretrain_corpus
    cfg = _cfg(phases=[{**BASE["phases"][0], "max_seq_length": 32}])
    _fails_fast(cfg, instances, vocab, str(tmp_path), PretrainInputError, "more than max_seq_length 32")


def test_batch_sizes_that_do_not_divide():
    with pytest.raises(ConfigError, match="not divisible"):
        _cfg(num_workers=3)


def test_half_precision_on_cpu(pretrain_corpus, tmp_path):
    instances, vocab, _ = pretrain_corpus
    _fails_fast(_cfg(deepspeed={"precision": "bf16"}), instances, vocab, str(tmp_path), ConfigError,
                "needs use_gpu=true")


def test_gpus_requested_where_none(pretrain_corpus, ray_session, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    instances, vocab, _ = pretrain_corpus
    _fails_fast(_cfg(use_gpu=True), instances, vocab, str(tmp_path), ConfigError, r"has 0 GPU\(s\)")


def test_missing_init_checkpoint(pretrain_corpus, tmp_path):
    instances, vocab, _ = pretrain_corpus
    _fails_fast(_cfg(init_from=str(tmp_path / "no-ckpt")), instances, vocab, str(tmp_path), PretrainInputError,
                "has no config.json")


def test_incompatible_init_checkpoint(pretrain_corpus, minilm_dir, tmp_path):
    instances, vocab, _ = pretrain_corpus  # MiniLM: hidden 384, 6 layers, vocab 30522; tiny: 128, 2, 1000
    _fails_fast(_cfg(init_from=minilm_dir), instances, vocab, str(tmp_path), PretrainInputError,
                "does not fit model_preset 'tiny'.*hidden_size")


def test_one_uri_per_phase_or_one_for_all(pretrain_corpus, tmp_path):
    instances, vocab, _ = pretrain_corpus
    _fails_fast(_cfg(), [instances, instances], vocab, str(tmp_path), PretrainInputError, "2 instance URIs for 1 phases")


def _plant_checkpoint(pretrain_corpus, tmp_path, cfg, train_state: dict | None, step: int = 4) -> str:
    """Write a checkpoint directory where the run would look for one: complete (a train state and each rank's
    file list) when ``train_state`` is given, else as a write that did not finish leaves it."""
    from pipelines import storage
    from pipelines.pretrain.config import run_identity

    instances, vocab, _ = pretrain_corpus
    identity = run_identity(cfg, instances, vocab)
    ckpt = tmp_path / "pretrain" / identity / "runs" / f"pretrain-{identity}-phase0" / f"phase0-step{step:08d}"
    (ckpt / "deepspeed").mkdir(parents=True)
    (ckpt / "deepspeed" / "latest").write_text("state")
    if train_state is not None:
        storage.write_json_atomic(str(ckpt / "train_state.json"), train_state)
        for rank in range(train_state["world_size"]):
            storage.write_json_atomic(str(ckpt / f"files-rank{rank}.json"),
                                      {"files": {"deepspeed/latest": 5} if rank == 0 else {}})
    return identity


def test_incomplete_checkpoint_in_storage_is_removed_and_the_last_complete_one_checked(pretrain_corpus, tmp_path):
    """A checkpoint whose write did not finish (here: no train_state.json; a full disk leaves such) was never
    committed: it is removed before any worker starts, and the newest complete one is checked in its place.
    (Before checkpoints listed their files, an incomplete one stopped the run: a rerun could not resume.)"""
    from pipelines.pretrain.checkpointing import CheckpointError

    instances, vocab, _ = pretrain_corpus
    cfg = _cfg()
    identity = _plant_checkpoint(pretrain_corpus, tmp_path, cfg, {
        "phase": 0, "step": 4, "epoch": 0, "samples_in_epoch": 64, "world_size": 2, "zero_stage": 1,
        "run_identity": run_identity_of(cfg, pretrain_corpus), "model_config": {"hidden_size": 256, "vocab_size": 1000}})
    _plant_checkpoint(pretrain_corpus, tmp_path, cfg, None, step=8)
    run = tmp_path / "pretrain" / identity / "runs" / f"pretrain-{identity}-phase0"
    _fails_fast(cfg, instances, vocab, str(tmp_path), CheckpointError,
                "checkpoint model differs.*hidden_size")
    assert sorted(p.name for p in run.iterdir()) == ["phase0-step00000004"]


def test_checkpoint_of_another_model_in_storage(pretrain_corpus, tmp_path):
    from pipelines.pretrain.checkpointing import CheckpointError

    instances, vocab, _ = pretrain_corpus
    cfg = _cfg()
    identity = run_identity_of(cfg, pretrain_corpus)
    _plant_checkpoint(pretrain_corpus, tmp_path, cfg, {
        "phase": 0, "step": 4, "epoch": 0, "samples_in_epoch": 64, "world_size": 2, "zero_stage": 1,
        "run_identity": identity, "model_config": {"hidden_size": 256, "vocab_size": 1000}})
    _fails_fast(cfg, instances, vocab, str(tmp_path), CheckpointError, "checkpoint model differs.*hidden_size")


def run_identity_of(cfg, pretrain_corpus) -> str:
    from pipelines.pretrain.config import run_identity

    instances, vocab, _ = pretrain_corpus
    return run_identity(cfg, instances, vocab)


def _nsp_output(pretrain_corpus, root, max_seq_length: int, lowercase: bool, stage: str = "nsp_pairs") -> str:
    """The seq-64 instances committed as an nsp_pairs (or mlm_packs) stage output, recording the length and
    casing it claims to have been built with."""
    import pyarrow.parquet as pq

    from pipelines import stage_store
    from pipelines.stages.mlm_packs import PackConfig
    from pipelines.stages.nsp_pairs import NspConfig

    instances, _, _ = pretrain_corpus
    cfg = (NspConfig if stage == "nsp_pairs" else PackConfig)(max_seq_length=max_seq_length)
    writer = stage_store.StageWriter(str(root), stage, stage_store.stage_key(stage, 1, cfg, lowercase), cfg, ())
    writer.write_table(pq.read_table(instances))
    writer.stats["lowercase"] = lowercase
    return writer.commit()


def test_instances_far_shorter_than_the_phase(pretrain_corpus, tmp_path):
    """Seq-64 instances (a plain parquet directory) for a seq-128 phase: positions 64-127 would never train."""
    instances, vocab, _ = pretrain_corpus
    cfg = _cfg(phases=[{**BASE["phases"][0], "max_seq_length": 128}])
    _fails_fast(cfg, instances, vocab, str(tmp_path), PretrainInputError,
                r"are at most 64 tokens long \(first shard\), no more than half the phase's max_seq_length 128")


def test_instances_built_for_another_length(pretrain_corpus, tmp_path):
    _, vocab, _ = pretrain_corpus
    built = _nsp_output(pretrain_corpus, tmp_path / "data", 96, lowercase=True)
    _fails_fast(_cfg(), built, vocab, str(tmp_path), PretrainInputError,
                "phase 0 has max_seq_length 64 but its instances .* were built for max_seq_length 96")


def test_mlm_objective_with_nsp_pairs_named_as_its_data(pretrain_corpus, tmp_path):
    _, vocab, _ = pretrain_corpus
    built = _nsp_output(pretrain_corpus, tmp_path / "data", 64, lowercase=True)
    _fails_fast(_cfg(objective="mlm"), built, vocab, str(tmp_path), PretrainInputError,
                r"pretrain.objective: mlm trains on mlm_packs instances, but phase 0's instances .* are the nsp_pairs stage's NSP pairs")


def test_nsp_objective_with_packs_named_as_its_data(pretrain_corpus, tmp_path):
    _, vocab, _ = pretrain_corpus
    built = _nsp_output(pretrain_corpus, tmp_path / "data", 64, lowercase=True, stage="mlm_packs")
    _fails_fast(_cfg(), built, vocab, str(tmp_path), PretrainInputError,
                r"pretrain.objective: nsp trains on nsp_pairs instances, but phase 0's instances .* are the mlm_packs stage's "
                r"MLM-only packs \(no next-sentence labels\)")


def test_packs_built_for_another_length(pretrain_corpus, tmp_path):
    _, vocab, _ = pretrain_corpus
    built = _nsp_output(pretrain_corpus, tmp_path / "data", 128, lowercase=True, stage="mlm_packs")
    _fails_fast(_cfg(objective="mlm"), built, vocab, str(tmp_path), PretrainInputError,
                "phase 0 has max_seq_length 64 but its packed instances .* were built for max_seq_length 128")


def test_instances_of_another_casing(pretrain_corpus, tmp_path):
    _, vocab, _ = pretrain_corpus  # the session vocabulary lowercases (its tokenizer.json beside vocab.txt)
    built = _nsp_output(pretrain_corpus, tmp_path / "data", 64, lowercase=False)
    _fails_fast(_cfg(), built, vocab, str(tmp_path), PretrainInputError,
                "were tokenised cased, but the vocabulary given is lowercased")


def test_resume_over_rebuilt_instances_names_what_changed(pretrain_corpus, tmp_path):
    """The checkpoint's cursor counts rows of other instances (rebuilt in place): refused before any worker."""
    import dataclasses

    from pipelines.pretrain.inputs import DataCursorError, InstancePlan
    from pipelines.pretrain.engine import model_config
    from pipelines.pretrain.preflight import instance_files

    instances, vocab, _ = pretrain_corpus
    cfg = _cfg()
    then = {**InstancePlan.from_files(instance_files(instances)).summary(), "rows": 1500, "fingerprint": "f" * 32}
    _plant_checkpoint(pretrain_corpus, tmp_path, cfg, {
        "phase": 0, "step": 4, "epoch": 0, "samples_in_epoch": 64, "world_size": 2, "zero_stage": 1,
        "run_identity": run_identity_of(cfg, pretrain_corpus), "instances": then,
        "model_config": dataclasses.asdict(model_config(cfg, 1000))})
    _fails_fast(cfg, instances, vocab, str(tmp_path), DataCursorError,
                r"instances changed since the checkpoint.*'rows': \(1500, 1713\)")
