"""The held-out check: the unigram baseline on hand-computed tiny inputs, the split of shards, fixed masks,
and a real Ray Train + DeepSpeed run (CPU, gloo) that never reads a held-out row and logs held-out scores
that the exported weights reproduce exactly."""
from __future__ import annotations

import glob
import json
import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pipelines.pretrain import heldout
from pipelines.pretrain.config import PretrainConfig
from pipelines.pretrain.dynamic_masking import VocabInfo
from pipelines.typed_config import ConfigError, from_dict

# ids 0-3 special ([PAD], [CLS], [SEP], [MASK]); 4 = "a", 5 = "b"
SPECIAL = (0, 1, 2, 3)


def _write(path, rows: list[list[int]]) -> str:
    pq.write_table(pa.table({"input_ids": pa.array(rows, pa.list_(pa.int32()))}), path)
    return str(path)


def test_unigram_baseline_hand_computed(tmp_path):
    # counted: "a" 3 times, "b" once (specials are never a target: they get no probability)
    files = [_write(tmp_path / "0.parquet", [[1, 4, 4, 2, 5, 2]]), _write(tmp_path / "1.parquet", [[1, 4, 2, 0]])]
    counts, rows = heldout.token_counts(files, vocab_size=6)
    assert counts.tolist() == [1, 2, 3, 0, 3, 1] and rows == 2
    # add-one: p(a) = 4/6, p(b) = 2/6; targets a, b, b (the -100 positions are not scored)
    labels = np.array([[4, -100, 5], [-100, 5, -100]])
    got = heldout.unigram_baseline(counts, labels, SPECIAL)
    loss = -(math.log(4 / 6) + 2 * math.log(2 / 6)) / 3  # 0.867563...
    entropy = -(4 / 6 * math.log(4 / 6) + 2 / 6 * math.log(2 / 6))  # 0.636514...
    assert got["loss"] == pytest.approx(loss, abs=1e-12) and round(got["loss"], 6) == 0.867563
    assert got["accuracy"] == pytest.approx(1 / 3)  # always "a", the most frequent piece
    assert got["entropy"] == pytest.approx(entropy, abs=1e-12) and round(got["entropy"], 6) == 0.636514
    assert got["most_frequent_id"] == 4 and got["masked_positions"] == 3


def test_a_piece_never_counted_still_has_a_finite_loss():
    got = heldout.unigram_baseline(np.array([5, 5, 5, 5, 9, 0]), np.array([5]), SPECIAL)
    assert got["loss"] == pytest.approx(-math.log(1 / 11))  # (0 + 1) / (9 + 1 + 0 + 1)
    assert got["accuracy"] == 0.0


def test_the_last_shards_with_rows_are_held_out():
    files = ["p0", "p1", "p2", "p3"]
    assert heldout.split_files(files, [5, 5, 5, 5], 1) == (["p0", "p1", "p2"], ["p3"])
    assert heldout.split_files(files, [5, 5, 5, 0], 2) == (["p0", "p3"], ["p1", "p2"])  # p3 is empty
    with pytest.raises(ValueError, match="leaves no shard to train on"):
        heldout.split_files(files, [5, 0, 0, 0], 1)


def test_heldout_every_must_ride_on_a_metrics_line():
    with pytest.raises(ConfigError, match="multiple of metrics_every"):
        from_dict(PretrainConfig, {"metrics_every": 10, "heldout": {"files": 1, "every": 25}})
    with pytest.raises(ConfigError, match="heldout.rows must be positive"):
        from_dict(PretrainConfig, {"heldout": {"rows": 0}})


def test_heldout_masks_are_fixed_by_their_own_seed(pretrain_corpus):
    instances, _, tokenizer = pretrain_corpus
    files = sorted(glob.glob(os.path.join(instances, "*.parquet")))
    vocab = VocabInfo.from_tokenizer(tokenizer)
    table = heldout.read_rows(files[-1:], 40)
    assert table.column("instance_id").to_pylist() == pq.read_table(files[-1]).column("instance_id").to_pylist()[:40]
    first, again = (heldout.masked_rows(table, vocab, 64, 10, 0.15, seed=0) for _ in range(2))
    other = heldout.masked_rows(table, vocab, 64, 10, 0.15, seed=1)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["mlm_labels"], other["mlm_labels"])
    assert ((first["mlm_labels"] != -100).sum(1) <= 10).all()


@pytest.mark.slow
def test_run_never_trains_on_heldout_rows_and_logs_reproducible_scores(pretrain_corpus, ray_session, tmp_path):
    from bert_core import load_pretrained
    from pipelines.pretrain import run_pretraining
    from pipelines.pretrain.metrics import read_metrics

    instances, vocab_file, tokenizer = pretrain_corpus
    cfg = from_dict(PretrainConfig, {
        "model_preset": "tiny", "num_workers": 2, "seed": 5, "checkpoint_every": 8, "metrics_every": 2,
        "heldout": {"files": 1, "rows": 48, "every": 4},
        "phases": [{"max_seq_length": 64, "global_batch_size": 16, "micro_batch_size": 8, "num_steps": 10,
                    "warmup_steps": 2, "learning_rate": 1e-3, "max_predictions_per_seq": 10}]})
    log = str(tmp_path / "ids")
    export = run_pretraining(cfg, instances, vocab_file, str(tmp_path / "out"), instance_log=log)

    files = sorted(glob.glob(os.path.join(instances, "*.parquet")))
    held_ids = set(pq.read_table(files[-1]).column("instance_id").to_pylist())
    trained = [i for r in (0, 1) for line in open(os.path.join(log, f"rank{r}.jsonl")) for i in json.loads(line)["ids"]]
    assert len(trained) == 10 * 16 and not held_ids & set(trained)

    phase = os.path.dirname(export)
    rows = read_metrics(os.path.join(phase, "metrics.jsonl"))
    scored = [r for r in rows if "heldout_mlm_loss" in r]
    assert [r["step"] for r in rows] == [2, 4, 6, 8, 10] and [r["step"] for r in scored] == [4, 8, 10]
    base = json.load(open(os.path.join(phase, "heldout.json")))
    assert base["files"] == [os.path.basename(files[-1])] and base["rows"] == 48
    assert base["unigram_counted_rows"] == sum(pq.ParquetFile(f).metadata.num_rows for f in files[:-1])

    # The last score is the exported weights' on the same fixed masks, recomputed here.
    vocab = VocabInfo.from_tokenizer(tokenizer)
    batch = heldout.masked_rows(heldout.read_rows(files[-1:], 48), vocab, 64, 10, 0.15, seed=0)
    assert base["masked_positions"] == int((batch["mlm_labels"] != -100).sum())
    model = load_pretrained(export, head="pretraining")
    again = [heldout.evaluate(model, batch, 8, torch.device("cpu")) for _ in range(2)]
    assert again[0] == again[1]
    assert model.training  # the mode is restored
    for key, value in again[0].items():
        assert scored[-1][key] == pytest.approx(value, rel=1e-5), key


def test_phase_console_line():
    metrics = {"heldout_mlm_loss": 6.221, "heldout_mlm_accuracy": 0.12, "heldout_nsp_accuracy": 0.609}
    base = {"unigram_loss": 6.5703, "unigram_accuracy": 0.045, "nsp_majority": 0.609375}
    assert heldout.summary_text(metrics, base) == ("held-out MLM loss 6.221 (unigram 6.570) acc 0.120 (0.045), "
                                                   "NSP acc 0.609 (chance 0.5, the commoner label 0.609)")
    assert heldout.summary_text({"mlm_loss": 6.0}, base) == "" and heldout.summary_text(metrics, None) == ""
