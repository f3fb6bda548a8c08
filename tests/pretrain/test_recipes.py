"""Both new recipes through the real trainer (Ray Train + DeepSpeed on CPU, tiny BERT, seq 64): length-binned
NSP batches and the MLM-only objective on full-length packs. A worker killed mid-run (``os._exit`` after the
step-4 checkpoint) is restarted by Ray Train from that checkpoint and reads exactly the rows of the
uninterrupted run; the metrics count real tokens, and the MLM-only run has no NSP figures."""
from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import corpus_documents, split_sentences, write_instances
from faults import FaultInjection
from pipelines.pretrain import PretrainConfig, run_pretraining
from pipelines.schemas import INSTANCES, TOKENIZED
from pipelines.typed_config import from_dict

pytestmark = pytest.mark.slow

STEPS = 8


@pytest.fixture(scope="module")
def recipes(pretrain_corpus, tmp_path_factory):
    """{recipe: (config overrides, instances dir)}: the NSP rows cut to seeded lengths (so bins differ) and
    ``mlm_packs``' full-sentence packs of the same text."""
    from pipelines.stages.mlm_packs import PackConfig, core

    instances, _, tokenizer = pretrain_corpus
    root = tmp_path_factory.mktemp("recipes")
    rows = pq.read_table(instances).to_pylist()
    g = np.random.default_rng(0)
    for row in rows:
        n = int(g.integers(8, 65))
        row.update(input_ids=row["input_ids"][:n - 1] + [tokenizer.sep_id], token_type_ids=row["token_type_ids"][:n],
                   num_tokens=n)
    binned = write_instances(pa.Table.from_pylist(rows, schema=INSTANCES), str(root / "binned"))
    docs = corpus_documents()
    tokenized = pa.table({"doc_id": [f"doc{i:05d}" for i in range(len(docs))],
                          "sentence_ids": [tokenizer.encode_batch(split_sentences(d)) for d in docs]}, schema=TOKENIZED)
    packs = core(tokenized, PackConfig(max_seq_length=64, cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id))
    packed = write_instances(packs.select(INSTANCES.names).cast(INSTANCES), str(root / "packed"))
    return {"binned": ({"phases": [{**PHASE, "length_bins": [16, 32, 48]}]}, binned),
            "packed": ({"objective": "mlm", "phases": [{**PHASE, "mlm_probability": 0.3}]}, packed)}


PHASE = {"max_seq_length": 64, "global_batch_size": 16, "micro_batch_size": 8, "num_steps": STEPS,
         "warmup_steps": 2, "learning_rate": 1e-3, "max_predictions_per_seq": 20}


def _cfg(overrides: dict, **more) -> PretrainConfig:
    # No dropout: a restarted rank draws another dropout stream, so only then must the losses match the run's
    data = {"model_preset": "tiny", "num_workers": 2, "seed": 3, "checkpoint_every": 4, "metrics_every": 1,
            "dropout": 0.0, "deepspeed": {"zero_stage": 1}, **overrides, **more}
    return from_dict(PretrainConfig, data)


def _log(directory: str) -> dict[tuple[int, int, int], list[str]]:
    out = {}
    for rank in (0, 1):
        with open(os.path.join(directory, f"rank{rank}.jsonl"), encoding="utf-8") as f:
            for line in map(json.loads, f):
                out[(rank, line["step"], line["micro"])] = line["ids"]  # a restarted rank logs its steps again
    return out


def _metrics(export: str) -> list[dict]:
    with open(os.path.join(os.path.dirname(export), "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.parametrize("recipe", ["binned", "packed"])
def test_worker_killed_mid_run_resumes_row_exact(recipes, pretrain_corpus, tmp_path, ray_session, recipe):
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    overrides, instances = recipes[recipe]
    _, vocab, _ = pretrain_corpus
    reference_log, killed_log = str(tmp_path / "reference"), str(tmp_path / "killed")
    export = run_pretraining(_cfg(overrides), instances, vocab, str(tmp_path / "a"), instance_log=reference_log)
    marker = str(tmp_path / "marker")
    killed = run_pretraining(_cfg(overrides, max_failures=1), instances, vocab, str(tmp_path / "b"),
                             instance_log=killed_log, fault_injection=FaultInjection(step=6, rank=1, marker_path=marker))
    assert os.path.exists(marker)  # rank 1 died at step 6; Ray Train restarted the group from step 4
    reference, resumed = _log(reference_log), _log(killed_log)
    assert sorted(reference) == [(r, s, 0) for r in (0, 1) for s in range(1, STEPS + 1)]
    assert resumed == reference
    curve, again = _metrics(export), _metrics(killed)
    assert [m["step"] for m in again] == list(range(1, STEPS + 1))
    for a, b in zip(curve, again, strict=True):
        assert a["mlm_loss"] == pytest.approx(b["mlm_loss"], rel=1e-3), (a, b)
    shares = [m["real_token_share"] for m in curve]
    if recipe == "packed":  # full-length packs: every position a real token; no NSP anywhere
        assert shares == [1.0] * STEPS and not [k for m in curve for k in m if "nsp" in k]
    else:  # rows of 8..64 tokens, padded to 64 they would be ~56% real; binned micro-batches are far fuller
        assert min(shares) > 0.7 and curve[0]["nsp_loss"] > 0
    for m in curve:
        assert m["tokens_per_s"] == pytest.approx(m["real_token_share"] * (m["tokens_per_s"] + m["padded_tokens_per_s"]))
