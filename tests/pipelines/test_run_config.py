"""The run config's DAG: one NSP output per phase length, each phase fed its own, and one casing from
the vocabulary to the export and fine-tuning (run end to end, cased, 64 then 128, by
``test_cli.py::test_whole_run_on_s3_with_driver_killed_during_pretraining``)."""
from __future__ import annotations

import dataclasses

import pytest

from pipelines.bert_dag import bert_pipeline
from pipelines.presets import load_run_config
from pipelines.run_config import nsp_lengths, pack_lengths
from pipelines.typed_config import ConfigError


@pytest.mark.parametrize("preset, lengths", [("demo", (64,)), ("base", (128, 512)), ("large", (128, 512))])
def test_one_nsp_output_per_distinct_phase_length(preset, lengths):
    cfg = load_run_config(preset)
    assert nsp_lengths(cfg) == lengths and cfg.data.nsp_pairs.max_seq_length is None
    assert pack_lengths(cfg) == ()


def test_the_mlm_only_preset_builds_packs_not_pairs():
    cfg = load_run_config("base-mlm")
    assert cfg.pretrain.objective == "mlm" and pack_lengths(cfg) == (128, 512) and nsp_lengths(cfg) == ()
    assert [p.mlm_probability for p in cfg.pretrain.phases] == [0.3, 0.3]
    assert [p.bins for p in load_run_config("base").pretrain.phases] == [(32, 64, 96, 128), (128, 256, 384, 512)]
    with pytest.raises(ConfigError, match=r"data.mlm_packs.max_seq_length 128 differs from the pretraining phases' "
                                          r"max_seq_length \[128, 512\]"):
        load_run_config("base-mlm", ["data.mlm_packs.max_seq_length=128"])
    with pytest.raises(ConfigError, match=r"phase.length_bins: bin bound 256 must lie in \(0, max_seq_length 64\]"):
        load_run_config("demo", ["pretrain.phases.0.length_bins=[32, 256]"])


def test_a_fixed_nsp_length_must_be_every_phases():
    assert load_run_config("demo", ["data.nsp_pairs.max_seq_length=64"]).data.nsp_pairs.max_seq_length == 64
    with pytest.raises(ConfigError, match=r"data.nsp_pairs.max_seq_length 128 differs from the pretraining phases' "
                                          r"max_seq_length \[128, 512\]"):
        load_run_config("base", ["data.nsp_pairs.max_seq_length=128"])


def test_tokenize_casing_is_the_vocabularys():
    with pytest.raises(ConfigError, match="data.tokenize.lowercase False contradicts data.wordpiece.lowercase True"):
        load_run_config("demo", ["data.tokenize.lowercase=false"])
    cased = load_run_config("demo", ["data.tokenize.lowercase=false", "data.wordpiece.lowercase=false"])
    assert cased.data.tokenize.lowercase is False


def test_settings_that_change_nothing_change_no_stage_hash():
    """An explicit nsp length equal to the phases', or a tokenize casing equal to the vocabulary's,
    computes the same outputs as leaving them unset; the lengths and the vocabulary's casing do not."""
    hashes = bert_pipeline().stage_hashes
    plain = hashes(load_run_config("demo"))
    assert hashes(load_run_config("demo", ["data.nsp_pairs.max_seq_length=64", "data.tokenize.lowercase=true"])) == plain
    demo = load_run_config("demo")
    phases = (dataclasses.replace(demo.pretrain.phases[0], max_seq_length=128),)
    longer = hashes(dataclasses.replace(demo, pretrain=dataclasses.replace(demo.pretrain, phases=phases)))
    assert longer["tokenize"] == plain["tokenize"] and longer["nsp_pairs"] != plain["nsp_pairs"]
    assert hashes(load_run_config("demo", ["data.wordpiece.lowercase=false"]))["tokenize"] != plain["tokenize"]
