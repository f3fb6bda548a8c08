"""The run config's DAG: one NSP output per phase length, each phase fed its own, and one casing from
the vocabulary to the export and fine-tuning."""
from __future__ import annotations

import dataclasses
import gzip
import json
import os

import pytest

from pipelines.bert_dag import bert_pipeline
from pipelines.presets import load_run_config
from pipelines.run_config import nsp_lengths
from pipelines.typed_config import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO_CORPUS = os.path.join(REPO, "pipelines", "demo", "corpus", "python-000.txt.gz")


@pytest.mark.parametrize("preset, lengths", [("demo", (64,)), ("base", (128, 512)), ("large", (128, 512))])
def test_one_nsp_output_per_distinct_phase_length(preset, lengths):
    cfg = load_run_config(preset)
    assert nsp_lengths(cfg) == lengths and cfg.data.nsp_pairs.max_seq_length is None


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


def _phase_curves(export: str) -> list[list[dict]]:
    run = os.path.dirname(os.path.dirname(export))
    phases = sorted(d for d in os.listdir(run) if d.startswith("phase"))
    with_lines = []
    for d in phases:
        with open(os.path.join(run, d, "metrics.jsonl"), encoding="utf-8") as f:
            with_lines.append([json.loads(line) for line in f if line.strip()])
    return with_lines


@pytest.mark.slow
def test_two_phase_cased_run_feeds_each_phase_its_length_and_keeps_case(tmp_path, small_corpus, ray_session, capsys):
    """A 64-then-128 run, cased from the vocabulary on, through the DAG up to pretraining: phase 2 reads
    the seq-128 instances (its sequences average more than 64 real tokens, per the trainer's own
    metrics), and the export's tokenizer, transformers' and fine-tuning's, keep the case."""
    import transformers

    from bert_core import WordPieceTokenizer
    from pipelines import stage_store
    from pipelines.cli import main
    from pipelines.dag import read_manifest
    from pipelines.finetune.train import load_tokenizer

    config = tmp_path / "phases.yaml"
    config.write_text(f"""
preset: demo
name: phases
root: {tmp_path / 'run'}
data:
  inputs: ["{small_corpus}"]
  wordpiece: {{vocab_size: 1000, lowercase: false}}
  tokenize: {{lowercase: false}}
pretrain:
  num_workers: 1
  checkpoint_every: 100
  metrics_every: 2
  phases:
    - {{max_seq_length: 64, global_batch_size: 8, micro_batch_size: 8, num_steps: 4, warmup_steps: 1,
       learning_rate: 0.001, max_predictions_per_seq: 10}}
    - {{max_seq_length: 128, global_batch_size: 8, micro_batch_size: 8, num_steps: 4, warmup_steps: 1,
       learning_rate: 0.001, max_predictions_per_seq: 20}}
ray: {{num_cpus: 2}}
""")
    root = str(tmp_path / "run")
    assert main(["run", str(config), "--until", "pretrain"]) == 0
    stages = read_manifest(root)["stages"]
    nsp = stages["nsp_pairs"]["outputs"]
    assert sorted(nsp) == ["seq128", "seq64"]
    assert {k: v for k, v in stages["pretrain"]["inputs"].items() if k.startswith("nsp_pairs.")} == {
        "nsp_pairs.seq64": nsp["seq64"], "nsp_pairs.seq128": nsp["seq128"]}
    longest = {k: stage_store.read_stats(uri)["max_num_tokens"] for k, uri in nsp.items()}
    assert longest["seq64"] <= 64 < longest["seq128"] <= 128
    assert all(stage_store.read_stats(uri)["lowercase"] is False for uri in nsp.values())

    export = stages["pretrain"]["outputs"]["output"]
    phase1, phase2 = _phase_curves(export)
    mean_length = [[m["real_tokens_per_s"] / m["samples_per_s"] for m in curve] for curve in (phase1, phase2)]
    assert max(mean_length[0]) <= 64 and min(mean_length[1]) > 64, mean_length

    vocab = WordPieceTokenizer.load(stages["wordpiece"]["outputs"]["output"]).vocab()
    assert "The" in vocab and any(p[0].isupper() for p in vocab if p.isalpha())
    with open(os.path.join(export, "tokenizer_config.json"), encoding="utf-8") as f:
        assert json.load(f)["do_lower_case"] is False
    ours = load_tokenizer(export)
    assert ours.lowercase is False and ours.tokenize("The")[0] == "The"
    hf = transformers.AutoTokenizer.from_pretrained(export)
    with gzip.open(DEMO_CORPUS, "rt", encoding="utf-8") as f:
        text = [line.strip() for line in f.read().split("\n\n")[400:440] if line.strip()]
    assert [hf(t)["input_ids"] for t in text] == [ours.encode(t) for t in text]

    capsys.readouterr()
    assert main(["status", root]) == 0
    assert nsp["seq128"] in capsys.readouterr().out
